/* The drift panel of a model's page (GET /v1/models/{name}/drift): per version the totals (predictions, the unknown
   share, reviews and the live accuracy on reviewed photos), and for one version, hour by hour, the predictions
   per class, the confidence histogram, the unknown share and the live accuracy, drawn with charts.js. */
"use strict";
(function () {
  const { h, fill } = window.Dom;
  const C = window.Console;
  const { api, pct } = C;
  const TOP_CLASSES = 5;  // the rest is drawn as one line, "other"

  function panel(model) {
    const box = h("div", { class: "card", id: "drift" }, h("h3", {}, "Drift"), h("p", { class: "muted" }, "loading…"));
    api(`/v1/models/${encodeURIComponent(model)}/drift`).then((d) => render(box, d))
      .catch((e) => fill(box, h("h3", {}, "Drift"), h("p", { class: "muted", id: "drift-error" }, e.message)));
    return box;
  }

  function render(box, d) {
    const days = Math.round((Date.now() / 1000 - d.since) / 86400);
    const title = h("h3", {}, `Drift over the last ${days} days, by version`);
    if (!d.versions.length) {
      return fill(box, title, h("p", { class: "muted empty", id: "drift-empty" }, `No predictions in the last ${days} days.`));
    }
    const cell = (field, value) => h("td", { "data-field": field }, value);
    const rows = d.versions.map((v) => {
      const t = v.totals;
      return h("tr", { "data-version": v.version }, h("td", {}, v.version), cell("predictions", t.predictions),
        cell("unknown", `${t.unknown} (${pct(t.unknown_share)})`), cell("reviewed", t.reviewed),
        cell("reviewed_correct", t.reviewed_correct), cell("none_of_these", t.none_of_these),
        cell("live_accuracy", t.live_accuracy === null ? "no reviews yet" : pct(t.live_accuracy)));
    });
    const charts = h("div", { class: "row", id: "drift-charts" });
    const last = d.versions[d.versions.length - 1].version;
    const pick = h("select", { id: "drift-version", onchange: () => draw(charts, d, Number(pick.value)) },
      d.versions.map((v) => h("option", { value: v.version, selected: v.version === last }, `version ${v.version}`)));
    fill(box, title,
      h("table", { id: "drift-totals" }, h("tr", {}, ["version", "predictions", "unknown (share)", "reviewed",
        "labelled as answered", "none of these", "live accuracy"].map((t) => h("th", {}, t))), rows),
      h("p", {}, "hour by hour for ", pick, h("span", { class: "muted" }, " (0: this hour)")), charts);
    draw(charts, d, last);
  }

  function draw(charts, d, version) {
    const v = d.versions.find((x) => x.version === version);
    const now = Math.floor(Date.now() / 1000 / d.bucket_seconds);
    const x = (b) => Math.floor(b.start / d.bucket_seconds) - now;  // hours from now: ..., -2, -1, 0
    const ranked = Object.entries(v.totals.by_class).sort((a, b) => b[1] - a[1]).map(([c]) => c);
    const shown = ranked.slice(0, TOP_CLASSES);
    const classes = shown.map((c) => ({ name: c, points: v.buckets.map((b) => [x(b), b.by_class[c] || 0]) }));
    if (ranked.length > TOP_CLASSES) {
      classes.push({ name: `other (${ranked.length - TOP_CLASSES} classes)`, dashed: true, points: v.buckets.map((b) =>
        [x(b), b.predictions - shown.reduce((s, c) => s + (b.by_class[c] || 0), 0)]) });
    }
    const opts = { xlabel: "hour (0: this hour)", integerX: true };
    const bins = d.confidence_bins;
    const rates = [{ name: "unknown share", points: v.buckets.map((b) => [x(b), b.unknown_share]).filter((p) => p[1] !== null), colour: "#e53935" },
      { name: "live accuracy (reviewed)", points: v.buckets.map((b) => [x(b), b.live_accuracy]).filter((p) => p[1] !== null), colour: "#43a047" }];
    fill(charts,
      h("div", { id: "drift-classes" }, Charts.lines(classes, Object.assign({ title: "predictions per class" }, opts))),
      h("div", { id: "drift-confidence" }, Charts.bars(v.totals.confidence.map((n, i) => ({
        label: `${bins[i].toFixed(1)}–${bins[i + 1].toFixed(1)}`, value: n })), { title: "top probability (all hours)" })),
      h("div", { id: "drift-rates" }, Charts.lines(rates, Object.assign({ title: "unknown share, live accuracy", yrange: [0, 1] }, opts))));
  }

  C.drift = { panel };
})();
