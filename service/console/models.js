/* Models: the list (a card per model: versions, lineage by dataset name, activate, delete, downloads), a model's
   own page (that card, its review queue's link and the drift panel of drift.js), and a version's model card. */
"use strict";
(function () {
  const { h, fill } = window.Dom;
  const C = window.Console;
  const { api, pct } = C;

  async function modelsPage(name, rest) {
    if (name && rest[0] === "card") return cardPage(name, rest[1]);
    if (name) return modelPage(name);
    const [models, datasets] = await Promise.all([api("/v1/models"), api("/v1/datasets")]);
    const names = C.datasetNames(datasets);
    fill(C.main, h("h2", {}, "Models"),
      models.length ? null : h("p", { class: "muted empty" }, "No models yet: run `tuneserve bootstrap` or train one."));
    for (const m of models) C.main.appendChild(await modelCard(m.name, names));
  }

  /* One model: its card, the way to its review queue, and how its traffic drifts. */
  async function modelPage(name) {
    const names = C.datasetNames(await api("/v1/datasets"));
    const card = await modelCard(name, names);
    fill(C.main, h("p", {}, h("a", { href: "#/models" }, "← models"), " · ",
      h("a", { id: "review-link", href: `#/review/${encodeURIComponent(name)}` }, "review its captured photos")),
    card, C.drift.panel(name));
  }

  function lineage(v, names) {
    if (v.source.kind === "pretrained") return "pretrained";
    const base = v.source.base && v.source.base.name ? `from ${v.source.base.name}` : "";
    const id = v.source.dataset_id;
    const dataset = id ? (v.source.dataset_name || names[id] || `dataset ${id.slice(0, 8)} (deleted)`) : null;
    return [base, dataset ? (base ? " on " : "on ") : "",
      dataset ? (names[id] ? h("a", { href: `#/datasets/${id}` }, dataset) : dataset) : null,
      v.source.job_id ? " · " : "", v.source.job_id ? h("a", { href: `#/jobs/${v.source.job_id}` }, "its job") : null];
  }

  async function modelCard(name, names) {
    const m = await api(`/v1/models/${name}`);
    const rows = m.versions.slice().reverse().map((v) => h("tr", { "data-version": v.version },
      h("td", {}, v.version), h("td", {}, v.status + (v.version === m.serving_version ? " (serving)" : "")),
      h("td", {}, C.when(v.created_at)),
      h("td", {}, pct(v.metrics.val_accuracy)), h("td", {}, pct(v.metrics.test_accuracy)),
      h("td", {}, lineage(v, names)),
      h("td", {},
        v.version === m.active_version ? null : h("button", { class: "activate", onclick: () => activate(name, v.version) },
          v.version < (m.active_version || 0) ? "Roll back" : "Activate"),
        v.version === m.active_version ? null : h("button", { class: "delete-version", onclick: () => C.remove(
          `version ${v.version} of ${name}`, `/v1/models/${name}/versions/${v.version}`) }, "Delete"),
        " ", h("button", { onclick: () => C.download(`${v.files_url}/model.onnx`, `${name}-v${v.version}.onnx`) },
          "Download model.onnx"),
        " ", h("a", { class: "card-link", href: `#/models/${name}/card/${v.version}` }, "card"))));
    return h("div", { class: "card model", "data-model": name },
      h("h3", {}, h("a", { class: "model-link", href: `#/models/${encodeURIComponent(name)}` }, name), " ",
        h("button", { class: "delete-model", onclick: () => C.remove(`model ${name} and all its versions`,
          `/v1/models/${name}` + (m.versions.some((v) => v.source.kind === "pretrained") ? "?force_bootstrapped=true" : "")) },
        "Delete model")),
      h("p", {}, `active version ${m.active_version ?? "none"}, serving ${m.serving_version ?? "none"}`,
        m.provider ? ` on ${m.provider} (${m.variant})` : "", ` · ${m.labels.length} labels`),
      m.load_error ? h("p", { class: "error-inline" }, `load error (v${m.load_error.version}): ${m.load_error.error}`) : null,
      Dom.table({}, ["version", "status", "created", "val acc", "test acc", "lineage", ""], rows, "No versions."));
  }

  /* A version's model card (GET .../card as JSON, drawn by card.js), and its Markdown to download. */
  async function cardPage(name, version) {
    const card = await api(`/v1/models/${name}/versions/${version}/card`);
    fill(C.main, h("p", {}, h("a", { href: "#/models" }, "← models"), " ",
      h("button", { id: "card-md", onclick: () => C.download(`/v1/models/${name}/versions/${version}/card?format=md`,
        `${name}-v${version}-card.md`) }, "Download Markdown")),
    CardView.render(card));
  }

  async function activate(name, version) {
    if (!window.confirm(`Make version ${version} of ${name} the serving version?`)) return;
    try {
      const out = await api(`/v1/models/${name}/versions/${version}/activate`, { method: "POST" });
      C.showError(out.swap.detail);
    } catch (e) { C.showError(e.message); }
    C.route();
  }

  C.pages.models = modelsPage;
})();
