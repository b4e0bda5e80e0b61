/* A version's model card (GET /v1/models/{name}/versions/{v}/card, JSON) drawn as plain DOM: every value is
   text (Dom.h), never HTML, so class and dataset names cannot inject markup under the strict CSP. */
"use strict";
(function () {
  const { h, table } = window.Dom;
  const pct = (v) => (v === undefined || v === null ? "n/a" : (100 * v).toFixed(1) + "%");
  const num = (v, d) => (v === undefined || v === null ? "n/a" : Number(v).toFixed(d ?? 3));
  const flat = (v) => (v === null || v === undefined ? "n/a" : Array.isArray(v) ? v.map(flat).join(", ")
    : typeof v === "object" ? Object.entries(v).map(([k, x]) => `${k}=${flat(x)}`).join(", ") : String(v));

  function section(id, title, ...children) {
    return h("section", { class: "card model-card-section", id }, h("h3", {}, title), ...children);
  }

  function data(d) {
    const splits = Object.keys(d.counts || {});
    const name = d.dataset_name || (d.dataset_id ? `dataset ${d.dataset_id.slice(0, 8)}` : null);
    return section("card-data", "Data",
      h("p", {}, name ? "Dataset " : "Dataset not recorded.",
        name && d.dataset_id ? h("a", { href: `#/datasets/${d.dataset_id}` }, name) : name,
        d.dataset_id ? h("span", { class: "muted" }, ` ${d.dataset_id}`) : null,
        ` · ${d.classes.length} classes`,
        Object.keys(d.totals || {}).length ? " · " + Object.entries(d.totals).map(([s, n]) => `${s} ${n}`).join(", ") : ""),
      table({ id: "card-counts" }, ["class", ...splits],
        d.classes.map((c) => h("tr", {}, h("td", {}, c), splits.map((s) => h("td", {}, (d.counts[s] || {})[c] ?? 0)))),
        "No per-class counts stored."),
      d.duplicates ? h("p", {}, `Duplicates found: ${d.duplicates.exact_groups} exact and ${d.duplicates.near_groups} near groups `
        + `(${d.duplicates.files} files).`) : null,
      d.split_reason ? h("p", { class: "muted" }, `Split: ${d.split_reason}`) : null,
      h("h4", {}, "Lineage"),
      h("ul", {}, Object.entries(d.lineage || {}).filter(([, v]) => v !== null && v !== undefined)
        .map(([k, v]) => h("li", {}, `${k}: ${flat(v)}`))));
  }

  function training(t) {
    return section("card-training", "Training",
      t.chosen_stage ? h("p", {}, "Chosen stage ", h("strong", {}, t.chosen_stage),
        t.best_epoch !== null && t.best_epoch !== undefined ? ` (epoch ${t.best_epoch})` : "", `: ${t.chosen_reason || ""}`) : null,
      table({ id: "card-stages" }, ["stage", "epochs", "best epoch", "best val acc", "kept", "reason"],
        t.stages.map((s) => h("tr", {}, h("td", {}, s.stage), h("td", {}, s.epochs), h("td", {}, s.best_epoch ?? "n/a"),
          h("td", {}, pct(s.best_val_accuracy)), h("td", {}, s.kept ? "yes" : "no"), h("td", {}, s.reason))),
        "No training stages recorded (not trained here)."),
      t.epochs_run || t.wall_s ? h("p", {}, [t.epochs_run ? `${t.epochs_run} epochs` : null,
        t.wall_s !== null && t.wall_s !== undefined ? `${num(t.wall_s, 1)} s` : null,
        t.train_images ? `${t.train_images} training images` : null].filter(Boolean).join(", ")) : null,
      t.spec ? h("details", {}, h("summary", {}, "resolved spec"),
        h("table", {}, Object.entries(t.spec).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, flat(v)))))) : null);
  }

  function evaluation(e) {
    const conf = e.confusion, cal = e.calibration, rc = e.risk_coverage, ood = e.ood;
    return section("card-evaluation", "Evaluation",
      table({ id: "card-accuracy" }, ["split", "images", "accuracy", `${Math.round(100 * e.confidence_level)}% interval`, "macro F1"],
        Object.entries(e.splits).map(([s, v]) => h("tr", {}, h("td", {}, s), h("td", {}, v.images), h("td", {}, pct(v.accuracy)),
          h("td", {}, `${pct(v.accuracy_ci95[0])} to ${pct(v.accuracy_ci95[1])}`), h("td", {}, num(v.macro_f1)))),
        "No held-out evaluation is stored for this version."),
      e.per_class ? h("h4", {}, `per class (${e.held_out})`) : null,
      e.per_class ? table({ id: "card-per-class" }, ["class", "precision", "recall", "F1", "photos"],
        Object.entries(e.per_class).map(([c, v]) => h("tr", {}, h("td", {}, c), h("td", {}, num(v.precision)),
          h("td", {}, num(v.recall)), h("td", {}, num(v.f1)), h("td", {}, v.support))), "") : null,
      conf ? h("h4", {}, `confusion (${conf.split}; rows: true class)`) : null,
      conf ? h("table", { class: "cm", id: "card-confusion" }, h("tr", {}, h("th", {}, ""), conf.labels.map((l) => h("th", {}, l))),
        conf.matrix.map((row, i) => h("tr", {}, h("th", {}, conf.labels[i]), row.map((v) => h("td", {}, v))))) : null,
      cal ? h("p", { id: "card-calibration" }, `Calibration: temperature ${num(cal.temperature, 2)}; expected calibration error on `
        + `${cal.split} ${num(cal.ece_before)} before, ${num(cal.ece_after)} after. ${cal.reason || ""}`) : null,
      rc ? h("h4", {}, `risk-coverage (${rc.split})`) : null,
      rc ? table({ id: "card-risk-coverage" }, ["answered", "accuracy", "confidence at least"],
        rc.points.map((p) => h("tr", {}, h("td", {}, pct(p.coverage)), h("td", {}, pct(p.accuracy)), h("td", {}, num(p.min_confidence)))),
        "") : null,
      ood ? h("h4", {}, "none of these (out-of-distribution)") : null,
      ood ? h("table", { id: "card-ood" }, ["method", "threshold", "target_recall", "val_recall", "test_recall", "fitted_on"]
        .filter((k) => ood[k] !== null && ood[k] !== undefined)
        .map((k) => h("tr", {}, h("td", {}, k), h("td", {}, typeof ood[k] === "number" ? num(ood[k], 4) : String(ood[k]))))) : null);
  }

  function render(card) {
    const m = card.model;
    return h("div", { id: "model-card" },
      h("h2", {}, `Model card: ${m.name} version ${m.version}`),
      h("p", {}, `${m.status || ""} · backbone ${m.backbone} · ${m.labels} classes · created `
        + (m.created_at || "").slice(0, 19).replace("T", " ")),
      data(card.data), training(card.training), evaluation(card.evaluation),
      section("card-limitations", "Limitations",
        card.limitations.length ? h("ul", {}, card.limitations.map((l) => h("li", { "data-kind": l.kind }, l.text)))
          : h("p", { class: "muted empty" }, "None found in the numbers.")));
  }

  window.CardView = { render };
})();
