/* tuneserve console: one page per resource (hash routes), plain DOM, data from the HTTP API only. */
"use strict";
(function () {
  const KEY = "tuneserve-api-key";
  const main = document.getElementById("main");
  let cleanup = [];

  // ------------------------------------------------------------------ helpers
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return node;
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    const key = sessionStorage.getItem(KEY);
    if (key) headers.Authorization = "Bearer " + key;
    return headers;
  }

  function showError(message) {
    const box = document.getElementById("error");
    box.textContent = message;
    box.hidden = false;
    setTimeout(() => { box.hidden = true; }, 8000);
  }

  async function api(path, opts) {
    const o = Object.assign({}, opts || {});
    o.headers = authHeaders(o.headers);
    o.credentials = "same-origin";
    const resp = await fetch(path, o);
    if (!resp.ok) {
      let detail = resp.status + " " + resp.statusText;
      try { detail = (await resp.json()).detail || detail; } catch (e) { /* not JSON */ }
      const err = new Error(detail);
      err.status = resp.status;
      throw err;
    }
    const type = resp.headers.get("content-type") || "";
    return type.includes("json") ? resp.json() : resp;
  }

  function postJSON(path, body) {
    return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  }

  /* Images through fetch, so an API key reaches them too (an <img src> cannot send headers). */
  function authImg(url, attrs) {
    const img = h("img", Object.assign({ alt: "" }, attrs || {}));
    api(url).then((resp) => resp.blob()).then((blob) => { img.src = URL.createObjectURL(blob); })
      .catch((e) => { img.alt = "unavailable: " + e.message; });
    return img;
  }

  async function download(url, name) {
    const blob = await (await api(url)).blob();
    const a = h("a", { href: URL.createObjectURL(blob), download: name });
    document.body.appendChild(a);
    a.click();
    a.remove();
  }

  const pct = (v) => (v === undefined || v === null ? "–" : (100 * v).toFixed(1) + "%");
  const num = (v, d) => (v === undefined || v === null ? "–" : Number(v).toFixed(d ?? 3));
  const seconds = (s) => (s === null || s === undefined ? "–" : s < 90 ? `${Math.round(s)} s` : `${(s / 60).toFixed(1)} min`);

  /* Server-sent events over fetch (EventSource cannot send an Authorization header). */
  function streamEvents(path, onEvent) {
    const ctrl = new AbortController();
    (async () => {
      const resp = await fetch(path, { headers: authHeaders({ Accept: "text/event-stream" }), signal: ctrl.signal });
      if (!resp.ok) throw new Error(`${path}: ${resp.status}`);
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let name = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (data) onEvent(name, JSON.parse(data));
        }
      }
    })().catch((e) => { if (e.name !== "AbortError") showError(e.message); });
    return () => ctrl.abort();
  }

  function applyDelta(state, delta) {
    const out = Object.assign({}, state);
    for (const [k, v] of Object.entries(delta)) {
      if (k === "metrics_append") out.metrics = (out.metrics || []).concat(v);
      else out[k] = v;
    }
    return out;
  }

  // ------------------------------------------------------------------ Models
  async function modelsPage() {
    const models = await api("/v1/models");
    main.replaceChildren(h("h2", {}, "Models"),
      models.length ? null : h("p", { class: "muted" }, "No models yet: run `tuneserve bootstrap` or train one."));
    for (const m of models) main.appendChild(await modelCard(m.name));
  }

  async function modelCard(name) {
    const m = await api(`/v1/models/${name}`);
    const rows = m.versions.slice().reverse().map((v) => h("tr", { "data-version": v.version },
      h("td", {}, v.version), h("td", {}, v.status + (v.version === m.serving_version ? " (serving)" : "")),
      h("td", {}, (v.created_at || "").slice(0, 19).replace("T", " ")),
      h("td", {}, pct(v.metrics.val_accuracy)), h("td", {}, pct(v.metrics.test_accuracy)),
      h("td", {}, v.source.kind === "pretrained" ? "pretrained" :
        [v.source.base && v.source.base.name ? `from ${v.source.base.name}` : "",
         v.source.dataset_id ? ` on ${v.source.dataset_id}` : "",
         v.source.job_id ? " " : ""].join(""),
        v.source.job_id ? h("a", { href: `#/jobs/${v.source.job_id}` }, "job") : null),
      h("td", {},
        v.version === m.active_version ? null : h("button", { class: "activate", onclick: () => activate(name, v.version) },
          v.version < (m.active_version || 0) ? "Roll back" : "Activate"),
        v.version === m.active_version ? null : h("button", { class: "delete-version", onclick: () => remove(
          `version ${v.version} of ${name}`, `/v1/models/${name}/versions/${v.version}`) }, "Delete"),
        " ", h("button", { onclick: () => download(`${v.files_url}/model.onnx`, `${name}-v${v.version}.onnx`) },
          "Download"),
        v.files.includes("report.json") && v.source.job_id ?
          h("a", { href: `#/jobs/${v.source.job_id}` }, " report") : null)));
    return h("div", { class: "card model", "data-model": name },
      h("h3", {}, name, " ", h("button", { class: "delete-model", onclick: () => remove(`model ${name} and all its versions`,
        `/v1/models/${name}` + (m.versions.some((v) => v.source.kind === "pretrained") ? "?force_bootstrapped=true" : "")) },
        "Delete model")),
      h("p", {}, `active version ${m.active_version ?? "none"}, serving ${m.serving_version ?? "none"}`,
        m.provider ? ` on ${m.provider} (${m.variant})` : "", ` · ${m.labels.length} labels`),
      m.load_error ? h("p", { class: "error-inline" }, `load error (v${m.load_error.version}): ${m.load_error.error}`) : null,
      h("table", {}, h("tr", {}, ["version", "status", "created", "val acc", "test acc", "lineage", ""].map((t) => h("th", {}, t))),
        rows));
  }

  /* Deletes ask first; the server refuses (409, shown) what a job or the serving version still needs. */
  async function remove(what, path, then) {
    if (!window.confirm(`Delete ${what}? This cannot be undone.`)) return;
    try { await api(path, { method: "DELETE" }); } catch (e) { showError(e.message); }
    if (then) then(); else route();
  }

  async function activate(name, version) {
    if (!window.confirm(`Make version ${version} of ${name} the serving version?`)) return;
    try {
      const out = await api(`/v1/models/${name}/versions/${version}/activate`, { method: "POST" });
      showError(out.swap.detail);
    } catch (e) { showError(e.message); }
    route();
  }

  // ------------------------------------------------------------------ Datasets
  async function datasetsPage(id) {
    if (id) return datasetPage(id);
    const list = await api("/v1/datasets");
    const bar = h("progress", { max: 100, value: 0, hidden: true, id: "upload-progress" });
    const status = h("span", { id: "upload-status" });
    const file = h("input", { type: "file", id: "upload-file", accept: ".zip,.tar,.tgz,.tar.gz" });
    const form = h("form", { class: "card", id: "upload-form", onsubmit: (ev) => {
      ev.preventDefault();
      if (!file.files.length) return showError("choose an archive (.zip, .tar, .tar.gz) first");
      upload(file.files[0], bar, status);
    } }, h("h3", {}, "Upload a labelled archive"), file, " ", h("button", { type: "submit" }, "Upload"), " ", bar, " ", status);
    const rows = list.slice().reverse().map((d) => h("tr", {},
      h("td", {}, h("a", { href: `#/datasets/${d.id}` }, d.name)), h("td", {}, d.id), h("td", {}, d.classes.length),
      h("td", {}, d.num_files), h("td", {}, d.problems), h("td", {}, (d.created_at || "").slice(0, 19).replace("T", " "))));
    main.replaceChildren(h("h2", {}, "Datasets"), form,
      h("table", {}, h("tr", {}, ["name", "id", "classes", "files", "problems", "created"].map((t) => h("th", {}, t))), rows));
  }

  function upload(fileObj, bar, status) {
    const xhr = new XMLHttpRequest();  // fetch has no upload progress
    const data = new FormData();
    data.append("file", fileObj);
    xhr.open("POST", "/v1/datasets");
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    bar.hidden = false;
    xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) bar.value = 100 * ev.loaded / ev.total; };
    xhr.upload.onload = () => { status.textContent = "checking every file…"; };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status >= 400) { status.textContent = ""; return showError(body.detail || xhr.statusText); }
      location.hash = `#/datasets/${body.id}`;
    };
    xhr.onerror = () => showError("upload failed: network error");
    xhr.send(data);
  }

  async function datasetPage(id) {
    const d = await api(`/v1/datasets/${id}`);
    const thumb = (path) => h("figure", {}, authImg(`/v1/datasets/${id}/images/${encodeURIComponent(path)}?size=128`),
      h("figcaption", {}, path));
    const totals = d.classes.map((c) => ({ label: c, value: Object.values(d.counts).reduce((s, split) => s + (split[c] || 0), 0) }));
    main.replaceChildren(
      h("h2", {}, `Dataset ${d.name}`),
      h("p", {}, `${d.id} · ${d.num_files} files · layout ${d.layout} · split ${d.split_source}`,
        " ", h("a", { href: `#/jobs?dataset=${id}` }, "train on it")),
      h("div", { class: "row" },
        h("div", { class: "card", id: "class-counts" }, Charts.bars(totals, { title: "images per class" })),
        h("div", { class: "card" }, h("h3", {}, "splits"),
          h("table", {}, h("tr", {}, h("th", {}, "class"), Object.keys(d.counts).map((s) => h("th", {}, s))),
            d.classes.map((c) => h("tr", {}, h("td", {}, c), Object.values(d.counts).map((s) => h("td", {}, s[c] || 0))))))),
      d.warnings.length ? h("div", { class: "card" }, h("h3", {}, "warnings"), h("ul", {}, d.warnings.map((w) => h("li", {}, w)))) : null,
      h("div", { class: "card", id: "problems" }, h("h3", {}, `problems (${d.problems.length})`),
        d.problems.length ? h("table", {}, d.problems.map((p) => h("tr", {}, h("td", {}, p.path), h("td", {}, p.problem))))
          : h("p", { class: "muted" }, "every file is usable")),
      h("div", { class: "card", id: "duplicates" }, h("h3", {}, `duplicate groups (${d.duplicates.length})`),
        d.duplicates.map((g) => h("div", {}, h("p", {}, `${g.kind}, similarity ${num(g.similarity, 3)}`),
          h("div", { class: "thumbs" }, g.paths.map(thumb))))),
      h("button", { id: "delete-dataset", onclick: async () => {
        if (!window.confirm(`Delete dataset ${d.name} (${id})?`)) return;
        try { await api(`/v1/datasets/${id}`, { method: "DELETE" }); location.hash = "#/datasets"; }
        catch (e) { showError(e.message); }
      } }, "Delete dataset"));
  }

  // ------------------------------------------------------------------ Jobs
  async function jobsPage(id) {
    if (id) return jobPage(id);
    const [jobs, datasets, schema] = await Promise.all([api("/v1/jobs"), api("/v1/datasets"), api("/v1/jobs/schema")]);
    const wanted = new URLSearchParams(location.hash.split("?")[1] || "").get("dataset");
    main.replaceChildren(h("h2", {}, "Jobs"), jobForm(datasets, schema, wanted),
      h("table", { id: "job-list" }, h("tr", {}, ["job", "model", "kind", "state", "progress", "created"].map((t) => h("th", {}, t))),
        jobs.map((j) => h("tr", {}, h("td", {}, h("a", { href: `#/jobs/${j.id}` }, j.id.slice(0, 8))), h("td", {}, j.model),
          h("td", {}, j.kind), h("td", { class: `state-${j.state}` }, j.state), h("td", {}, pct(j.progress.fraction)),
          h("td", {}, (j.created_at || "").slice(0, 19).replace("T", " "))))));
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
      h("label", {}, "dataset ", select("dataset_id", datasets.map((d) => d.id), wanted || (datasets.at(-1) || {}).id)),
      h("label", {}, "model name ", h("input", { name: "model", required: true, pattern: htmlPattern(schema.request.properties.model.pattern), value: "" })),
      h("label", {}, "mode ", select("mode", choices(train.mode), train.mode.default)),
      h("label", {}, "augment ", select("augment", choices(train.augment), train.augment.default)),
      h("label", {}, "epochs ", number("max_epochs", train.max_epochs, train.max_epochs.default)),
      h("label", {}, "LR ", h("input", { name: "lr", type: "number", step: "any", min: lrNumber.exclusiveMinimum, max: lrNumber.maximum,
        placeholder: "auto", value: "" }), h("span", { class: "muted" }, " (empty: auto, the LR range test)")),
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
    main.replaceChildren(h("h2", {}, `Job ${id.slice(0, 8)}`), head, charts, trials, report);
    const render = () => {
      const p = job.progress || {};
      head.replaceChildren(h("div", { class: "card" },
        h("p", {}, "state ", h("strong", { id: "job-state", class: `state-${job.state}` }, job.state),
          ` · model ${job.model} · ${job.kind} · dataset `, h("a", { href: `#/datasets/${job.dataset_id}` }, job.dataset_id)),
        h("p", { id: "job-progress" }, `epoch ${p.epoch ?? 0} of ${p.epochs ?? "?"} · ${pct(p.fraction)} · ETA `,
          h("span", { id: "job-eta" }, p.stalled_s != null ? `none: no live worker for ${seconds(p.stalled_s)}`
            : seconds(p.eta_s) + (p.eta_max_s != null ? ` (at most ${seconds(p.eta_max_s)})` : "")),
          p.stage ? ` · ${p.stage}` : ""),
        job.error ? h("p", { class: "error-inline" }, job.error) : null,
        job.result ? h("p", { id: "job-result" }, `version ${job.result.version}: ${job.result.reason || ""}`,
          " ", h("a", { href: "#/models" }, "models")) : null,
        job.state === "queued" || job.state === "running" ? h("button", { id: "cancel-job", onclick: async () => {
          if (!window.confirm("Cancel this job?")) return;
          try { await api(`/v1/jobs/${id}/cancel`, { method: "POST" }); } catch (e) { showError(e.message); }
        } }, job.cancel_requested ? "Cancelling…" : "Cancel") : h("button", { id: "delete-job", onclick: () => remove(
          `job ${id.slice(0, 8)}`, `/v1/jobs/${id}`, () => { location.hash = "#/jobs"; }) }, "Delete")));
      const m = job.metrics || [];
      const pts = (key) => m.map((x, i) => [i + 1, x[key]]).filter((q) => typeof q[1] === "number");
      charts.replaceChildren(
        h("div", { class: "card", id: "loss-chart", "data-points": m.length }, Charts.lines(
          [{ name: "train loss", points: pts("train_loss") }, { name: "val loss", points: pts("val_loss"), dashed: true }],
          { title: "loss", xlabel: "epoch" })),
        h("div", { class: "card", id: "accuracy-chart", "data-points": m.length }, Charts.lines(
          [{ name: "val accuracy", points: pts("val_accuracy"), colour: "#43a047" }], { title: "validation accuracy", xlabel: "epoch" })));
      if (job.kind === "search" && job.trials) renderTrials(trials, job);
    };
    const stop = streamEvents(`/v1/jobs/${id}/events`, (name, data) => {
      job = name === "delta" ? applyDelta(job, data) : data;
      render();
      if (name === "end" && job.links && job.links.report) loadReport(report, job);
    });
    cleanup.push(stop);
  }

  function renderTrials(box, job) {
    const params = [...new Set(job.trials.flatMap((t) => Object.keys(t.params || {})))];
    const numeric = params.filter((k) => job.trials.some((t) => typeof (t.params || {})[k] === "number"));
    const chosen = box.dataset.param && numeric.includes(box.dataset.param) ? box.dataset.param : numeric[0];
    const picker = h("select", { id: "trial-param", onchange: (ev) => { box.dataset.param = ev.target.value; renderTrials(box, job); } },
      numeric.map((k) => h("option", { value: k, selected: k === chosen }, k)));
    const done = job.trials.filter((t) => typeof t.best_val_accuracy === "number" && chosen && typeof t.params[chosen] === "number");
    box.replaceChildren(h("div", { class: "card" }, h("h3", {}, `trials (${job.trials.length})`),
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
    try { r = await api(job.links.report); } catch (e) { box.replaceChildren(h("p", { class: "muted" }, e.message)); return; }
    const split = r.splits.test && r.splits.test.images ? "test" : "val";
    const s = r.splits[split];
    const cm = s.confusion_matrix, top = Math.max(1, ...cm.flat());
    const cell = (v, i, j) => { const td = h("td", {}, v); td.style.background = `rgba(${i === j ? "67,160,71" : "229,57,53"},${(v / top).toFixed(2)})`; return td; };
    const rel = (data) => data.reliability.filter((b) => b.count).map((b) => [b.confidence, b.accuracy]);
    box.replaceChildren(
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
        h("div", { class: "thumbs" }, s.misclassified.slice(0, 48).map((m) => h("figure", {},
          m.thumbnail_url ? authImg(m.thumbnail_url) : null,
          h("figcaption", {}, `${m.label} → ${m.predicted} (${pct(m.confidence)})`))))),
      h("p", {}, Object.entries(r.files).map(([name, url]) => h("button", { onclick: () => download(url, name) }, name))));
  }

  // ------------------------------------------------------------------ Try it
  async function tryPage() {
    const models = await api("/v1/models");
    const pick = h("select", { id: "try-model" }, models.map((m) => h("option", { value: m.name }, m.name)));
    const input = h("input", { type: "file", id: "try-file", accept: "image/*" });
    const drop = h("div", { class: "drop", id: "drop" }, "Drop or paste a photo here, or ", input);
    const out = h("div", { class: "row", id: "try-result" });
    const run = (file) => predict(pick.value, file, out);
    input.addEventListener("change", () => input.files.length && run(input.files[0]));
    drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); if (ev.dataTransfer.files.length) run(ev.dataTransfer.files[0]); });
    const paste = (ev) => { const f = [...(ev.clipboardData || {}).files || []].find((x) => x.type.startsWith("image/")); if (f) run(f); };
    document.addEventListener("paste", paste);
    cleanup.push(() => document.removeEventListener("paste", paste));
    main.replaceChildren(h("h2", {}, "Try it"), h("p", {}, "model ", pick), drop, out);
  }

  async function predict(model, file, out) {
    const form = new FormData();
    form.append("file", file);
    let body, note = null;
    try { body = await api(`/v1/models/${model}/predict?explain=true&top_k=5`, { method: "POST", body: form }); }
    catch (e) {
      if (e.status !== 409) return showError(e.message);
      note = e.message;  // a version exported before heatmaps: predict without one
      body = await api(`/v1/models/${model}/predict?top_k=5`, { method: "POST", body: form });
    }
    const result = body.results[0];
    const photo = h("div", { class: "photo" }, h("img", { class: "base", id: "try-photo", src: URL.createObjectURL(file), alt: file.name }));
    const why = result.explanation;
    const toggle = h("label", {}, h("input", { type: "checkbox", id: "heat-toggle", checked: true, disabled: !why }), " heatmap");
    if (why) {
      const heat = h("img", { class: "heat", id: "heatmap", src: why.heatmap, alt: `where the model saw ${why.label}` });
      const base = photo.firstChild;
      const place = () => {  // the heatmap covers the model's crop, scaled like the photo on screen
        const k = base.clientWidth / base.naturalWidth;
        const [l, t, r, b] = why.crop_box;
        Object.assign(heat.style, { left: `${l * k}px`, top: `${t * k}px`, width: `${(r - l) * k}px`, height: `${(b - t) * k}px` });
      };
      base.addEventListener("load", place);
      photo.appendChild(heat);
      toggle.firstChild.addEventListener("change", (ev) => { heat.hidden = !ev.target.checked; });
    }
    out.replaceChildren(h("div", {}, photo, toggle, note ? h("p", { class: "muted" }, note) : null),
      h("div", { class: "card bars", id: "top5" }, h("h3", {}, `${body.model} v${body.version}`),
        Charts.bars(result.predictions.map((p) => ({ label: p.label, value: p.probability, text: pct(p.probability) })), { title: "top 5" })));
  }

  // ------------------------------------------------------------------ routing
  const PAGES = { models: modelsPage, datasets: datasetsPage, jobs: jobsPage, try: tryPage };

  async function route() {
    cleanup.forEach((f) => f());
    cleanup = [];
    const [page, id] = location.hash.replace(/^#\/?/, "").split("?")[0].split("/");
    const name = PAGES[page] ? page : "models";
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === name);
    try { await PAGES[name](id); } catch (e) { main.replaceChildren(h("p", { class: "error-inline" }, e.message)); showError(e.message); }
  }

  const keyInput = document.getElementById("api-key");
  keyInput.value = sessionStorage.getItem(KEY) || "";
  keyInput.addEventListener("change", () => {
    if (keyInput.value) sessionStorage.setItem(KEY, keyInput.value); else sessionStorage.removeItem(KEY);
    route();
  });
  window.addEventListener("hashchange", route);
  route();
})();
