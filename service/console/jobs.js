/* Jobs: the list (named by model and kind, datasets by name), the form (its fields from GET /v1/jobs/schema),
   and a job's page: its state and curves as the event stream tells them, a search's trials, the evaluation. */
"use strict";
(function () {
  const { h, fill } = window.Dom;
  const C = window.Console;
  const { api, postJSON, showError, authImg, streamEvents, pct, num, seconds, main, datasetNames, datasetLink } = C;
  const jobName = (j) => `${j.model} ${j.kind}`;
  const datasetLabel = (d) => `${d.name} · ${d.classes.length} classes · ${d.num_files} files · ${d.id.slice(0, 8)}`;

  function applyDelta(state, delta) {
    const out = Object.assign({}, state);
    for (const [k, v] of Object.entries(delta)) {
      if (k === "metrics_append") out.metrics = (out.metrics || []).concat(v);
      else out[k] = v;
    }
    return out;
  }

  async function jobsPage(id) {
    if (id) return jobPage(id);
    const [jobs, datasets, schema] = await Promise.all([api("/v1/jobs"), api("/v1/datasets"), api("/v1/jobs/schema")]);
    const wanted = new URLSearchParams(location.hash.split("?")[1] || "").get("dataset");
    const names = datasetNames(datasets);
    fill(main, h("h2", {}, "Jobs"), jobForm(datasets, schema, wanted),
      Dom.table({ id: "job-list" }, ["job (model, kind)", "dataset", "state", "progress", "created"],
        jobs.map((j) => h("tr", {}, h("td", {}, h("a", { href: `#/jobs/${j.id}` }, jobName(j)),
          h("span", { class: "muted" }, ` ${j.id.slice(0, 8)}`)),
          h("td", {}, datasetLink(j.dataset_id, names)),
          h("td", { class: `state-${j.state}` }, j.state), h("td", {}, pct((j.progress || {}).fraction)),
          h("td", {}, C.when(j.created_at)))),
        "No jobs yet: start one with the form above."));
  }

  /* A Python regex as an HTML pattern (compiled with the /v flag, where a bare "-" ends a class badly). */
  const htmlPattern = (re) => re && re.replace(/^\^/, "").replace(/\$$/, "").replace(/([^\\])-\]/g, "$1\\-]");

  /* The form's fields and their choices come from the typed spec (GET /v1/jobs/schema). */
  function jobForm(datasets, schema, wanted) {
    const train = schema.train.properties, search = schema.search.properties;
    const choices = (prop) => (prop.enum || (prop.anyOf || []).flatMap((a) => a.enum || [])).filter((v) => v !== null);
    const select = (name, values, value) => h("select", { name }, values.map((v) => h("option", { value: v, selected: v === value }, v)));
    const number = (name, prop, value) => h("input", { name, type: "number", value, min: prop.minimum ?? prop.exclusiveMinimum,
      max: prop.maximum, step: prop.type === "integer" ? 1 : "any" });
    const lrNumber = (train.lr.anyOf || []).find((a) => a.type === "number") || {};
    const f = h("form", { class: "card job", id: "job-form" },
      h("h3", {}, "Start a job"),
      datasets.length ? h("label", {}, "dataset ", h("select", { name: "dataset_id" }, datasets.map((d) => h("option",
        { value: d.id, selected: d.id === (wanted || datasets.at(-1).id) }, datasetLabel(d)))))
        : h("p", { class: "muted empty" }, "No datasets yet: ", h("a", { href: "#/datasets" }, "upload one"), " to train on."),
      h("label", {}, "model name ", h("input", { name: "model", required: true, pattern: htmlPattern(schema.request.properties.model.pattern), value: "" })),
      h("label", {}, "mode ", select("mode", choices(train.mode), train.mode.default)),
      h("label", {}, "augment ", select("augment", choices(train.augment), train.augment.default)),
      h("label", {}, "epochs ", number("max_epochs", train.max_epochs, train.max_epochs.default)),
      h("label", {}, "LR ", h("input", { name: "lr", type: "number", step: "any", min: lrNumber.exclusiveMinimum, max: lrNumber.maximum,
        placeholder: "auto", value: typeof train.lr.default === "number" ? train.lr.default : "" }),
        h("span", { class: "muted" }, " (the API's default; empty: auto, the LR range test)")),
      h("label", {}, "search ", select("method", ["none", ...choices(search.method)], "none")),
      h("label", {}, "trials ", number("trials", search.trials, search.trials.default)),
      h("button", { type: "submit" }, "Start"));
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const v = Object.fromEntries(new FormData(f).entries());
      const hp = { augment: v.augment, max_epochs: Number(v.max_epochs), lr: v.lr === "" ? "auto" : Number(v.lr) };
      const body = { dataset_id: v.dataset_id, model: v.model, mode: v.mode, hyperparameters: hp };
      if (v.method !== "none") body.search = { method: v.method, trials: Number(v.trials), max_epochs: Number(v.max_epochs) };
      try { const job = await postJSON("/v1/jobs", body); location.hash = `#/jobs/${job.id}`; }
      catch (e) { showError(e.message); }
    });
    return f;
  }

  function jobPage(id) {
    let job = null;
    const head = h("div", { id: "job-head" }), charts = h("div", { class: "row", id: "job-charts" });
    const trials = h("div", { id: "trials" }), report = h("div", { id: "report" });
    const title = h("h2", {}, "Job");
    fill(main, title, head, charts, trials, report);
    let names = {};
    api("/v1/datasets").then((ds) => { names = datasetNames(ds); if (job) render(); }).catch((e) => showError(e.message));
    const render = () => {
      const p = job.progress || {};
      const m = job.metrics || [];
      fill(title, `Job: ${jobName(job)} `, h("span", { class: "muted" }, id.slice(0, 8)));
      fill(head, h("div", { class: "card" },
        h("p", {}, "state ", h("strong", { id: "job-state", class: `state-${job.state}` }, job.state),
          " · model ", h("a", { href: "#/models" }, job.model), ` · ${job.kind} · dataset `, datasetLink(job.dataset_id, names)),
        h("p", { id: "job-progress" }, epochsText(job, p, m), ` · ${pct(p.fraction)} · ETA `,
          h("span", { id: "job-eta" }, p.stalled_s != null ? `none: no live worker for ${seconds(p.stalled_s)}`
            : seconds(p.eta_s) + (p.eta_max_s != null ? ` (at most ${seconds(p.eta_max_s)})` : "")),
          p.stage ? ` · ${p.stage}` : ""),
        job.error ? h("p", { class: "error-inline" }, job.error) : null,
        job.result ? h("p", { id: "job-result" }, `version ${job.result.version}: ${job.result.reason || ""}`,
          " ", h("a", { href: "#/models" }, "models")) : null,
        job.state === "queued" || job.state === "running" ? h("button", { id: "cancel-job", onclick: async () => {
          if (!window.confirm("Cancel this job?")) return;
          try { await api(`/v1/jobs/${id}/cancel`, { method: "POST" }); } catch (e) { showError(e.message); }
        } }, job.cancel_requested ? "Cancelling…" : "Cancel") : h("button", { id: "delete-job", onclick: () => C.remove(
          `job ${id.slice(0, 8)}`, `/v1/jobs/${id}`, () => { location.hash = "#/jobs"; }) }, "Delete")));
      const pts = (key) => m.map((x, i) => [i + 1, x[key]]).filter((q) => typeof q[1] === "number");
      // where a stage starts (probe -> fine-tuning): the chart counts epochs across stages, like the header
      const marks = m.map((x, i) => (i && x.stage !== m[i - 1].stage ? { x: i + 0.5, label: x.stage } : null)).filter(Boolean);
      const opts = { xlabel: "epoch (all stages)", integerX: true, marks };
      fill(charts,
        h("div", { class: "card", id: "loss-chart", "data-points": m.length }, Charts.lines(
          [{ name: "train loss", points: pts("train_loss") }, { name: "val loss", points: pts("val_loss"), dashed: true }],
          Object.assign({ title: "loss" }, opts))),
        h("div", { class: "card", id: "accuracy-chart", "data-points": m.length }, Charts.lines(
          [{ name: "val accuracy", points: pts("val_accuracy"), colour: "#43a047" }], Object.assign({ title: "validation accuracy" }, opts))));
      if (job.kind === "search" && job.trials) renderTrials(trials, job);
    };
    const stop = streamEvents(`/v1/jobs/${id}/events`, (name, data) => {
      job = name === "delta" ? applyDelta(job, data) : data;
      render();
      if (name === "end" && job.links && job.links.report) loadReport(report, job);
    });
    C.onLeave(stop);
  }

  /* Epochs as the chart counts them (across stages), then where the current stage is. */
  function epochsText(job, p, m) {
    if (job.kind === "search" || !m.length) return `epoch ${p.epoch ?? 0} of ${p.epochs ?? "?"}`;
    const per = {};
    for (const x of m) per[x.stage || "training"] = (per[x.stage || "training"] || 0) + 1;
    const stages = Object.keys(per).length > 1 ? ` (${Object.entries(per).map(([k, v]) => `${k} ${v}`).join(", ")})` : "";
    const now = job.state === "running" && p.epochs_stage && p.epochs ? ` · ${p.epochs_stage} epoch ${p.epoch ?? 0} of ${p.epochs}` : "";
    return `${m.length} epoch${m.length === 1 ? "" : "s"} run${stages}${now}`;
  }

  function renderTrials(box, job) {
    const params = [...new Set(job.trials.flatMap((t) => Object.keys(t.params || {})))];
    const numeric = params.filter((k) => job.trials.some((t) => typeof (t.params || {})[k] === "number"));
    const chosen = box.dataset.param && numeric.includes(box.dataset.param) ? box.dataset.param : numeric[0];
    const picker = h("select", { id: "trial-param", onchange: (ev) => { box.dataset.param = ev.target.value; renderTrials(box, job); } },
      numeric.map((k) => h("option", { value: k, selected: k === chosen }, k)));
    const done = job.trials.filter((t) => typeof t.best_val_accuracy === "number" && chosen && typeof t.params[chosen] === "number");
    fill(box, h("div", { class: "card" }, h("h3", {}, `trials (${job.trials.length})`),
      h("table", { id: "trial-table" }, h("tr", {}, ["#", "state", "epochs", "best val acc", ...params].map((t) => h("th", {}, t))),
        job.trials.map((t) => h("tr", { class: t.state === "pruned" ? "muted" : "" }, h("td", {}, t.number), h("td", {}, t.state),
          h("td", {}, t.epochs), h("td", {}, pct(t.best_val_accuracy)),
          params.map((k) => h("td", {}, typeof t.params[k] === "number" ? Number(t.params[k]).toPrecision(3) : String(t.params[k] ?? "")))))),
      chosen ? h("div", { id: "trial-scatter" }, h("p", {}, "accuracy against ", picker, " (grey: pruned)"),
        Charts.scatter(done.map((t) => ({ x: t.params[chosen], y: t.best_val_accuracy, grey: t.state === "pruned",
          title: `trial ${t.number}: ${t.state}` })), { xlabel: chosen, ylabel: "best val accuracy", logx: chosen === "lr" || chosen === "weight_decay" }))
        : null));
  }

  async function loadReport(box, job) {
    let r;
    try { r = await api(job.links.report); } catch (e) { fill(box, h("p", { class: "muted" }, e.message)); return; }
    const split = r.splits.test && r.splits.test.images ? "test" : "val";
    const s = r.splits[split];
    const cm = s.confusion_matrix, top = Math.max(1, ...cm.flat());
    const cell = (v, i, j) => { const td = h("td", {}, v); td.style.background = `rgba(${i === j ? "67,160,71" : "229,57,53"},${(v / top).toFixed(2)})`; return td; };
    const rel = (data) => data.reliability.filter((b) => b.count).map((b) => [b.confidence, b.accuracy]);
    fill(box,
      h("h3", {}, `evaluation (${split} split): accuracy ${pct(s.accuracy)}, macro F1 ${num(s.macro_f1)}`),
      h("div", { class: "row" },
        h("div", { class: "card", id: "confusion" }, h("h3", {}, "confusion matrix (rows: true)"),
          h("table", { class: "cm" }, h("tr", {}, h("th", {}, ""), r.labels.map((l) => h("th", {}, l))),
            cm.map((row, i) => h("tr", {}, h("th", {}, r.labels[i]), row.map((v, j) => cell(v, i, j)))))),
        h("div", { class: "card", id: "reliability" }, Charts.lines([
          { name: "perfect", points: [[0, 0], [1, 1]], colour: "#999", dashed: true },
          { name: `before, ECE ${num(r.val_uncalibrated.ece)}`, points: rel(r.val_uncalibrated) },
          { name: `after (T=${num(r.temperature, 2)}), ECE ${num(r.splits.val.ece)}`, points: rel(r.splits.val) }],
          { title: "reliability (val)", xlabel: "confidence", ylabel: "accuracy", xrange: [0, 1], yrange: [0, 1] })),
        h("div", { class: "card" }, h("h3", {}, "per class"), h("table", {}, h("tr", {}, ["class", "precision", "recall", "F1", "n"].map((t) => h("th", {}, t))),
          Object.entries(s.per_class).map(([c, v]) => h("tr", {}, h("td", {}, c), h("td", {}, num(v.precision)), h("td", {}, num(v.recall)),
            h("td", {}, num(v.f1)), h("td", {}, v.support)))))),
      h("div", { class: "card", id: "misclassified" }, h("h3", {}, `misclassified (${s.misclassified_count})`),
        s.misclassified.length ? null : h("p", { class: "muted empty" }, `every ${split} photo was classified right`),
        h("div", { class: "thumbs" }, s.misclassified.slice(0, 48).map((m) => h("figure", {},
          m.thumbnail_url ? authImg(m.thumbnail_url) : null,
          h("figcaption", {}, `${m.label} → ${m.predicted} (${pct(m.confidence)})`))))),
      h("p", {}, h("a", { id: "job-card", href: `#/models/${job.result.model}/card/${job.result.version}` }, "model card"))
    );
    // Every file of the version (the model itself and its variants too), from the version's listing.
    const files = h("p", { id: "downloads" });
    box.appendChild(files);
    api(`/v1/models/${job.result.model}/versions/${job.result.version}/files`).then((listing) => fill(files,
      listing.files.map((f) => h("button", { "data-file": f.name, onclick: () => C.download(f.url, f.name) }, f.name))))
      .catch((e) => fill(files, h("span", { class: "muted" }, e.message)));
  }

  C.pages.jobs = jobsPage;
})();
