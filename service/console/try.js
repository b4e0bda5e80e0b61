/* Try it: drop, paste or choose a photo; the top 5 and the heatmap over the centre crop the model sees. */
"use strict";
(function () {
  const { h, fill } = window.Dom;
  const C = window.Console;
  const { api, pct, main } = C;

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
    C.onLeave(() => document.removeEventListener("paste", paste));
    fill(main, h("h2", {}, "Try it"), h("p", {}, "model ", pick), drop, out);
  }

  async function predict(model, file, out) {
    const form = new FormData();
    form.append("file", file);
    let body, note = null;
    try { body = await api(`/v1/models/${model}/predict?explain=true&top_k=5`, { method: "POST", body: form }); }
    catch (e) {
      if (e.status !== 409) return C.showError(e.message);
      note = e.message;  // a version exported before heatmaps: predict without one
      body = await api(`/v1/models/${model}/predict?top_k=5`, { method: "POST", body: form });
    }
    const result = body.results[0];
    const img = h("img", { id: "try-photo", src: URL.createObjectURL(file), alt: file.name });
    const shown = C.heatPhoto(img, result.explanation, { toggle: "heat-toggle", heat: "heatmap", crop: "crop-box", note: "crop-note" });
    fill(out, h("div", {}, shown.photo, shown.toggle, shown.note, note ? h("p", { class: "muted" }, note) : null),
      h("div", { class: "card bars", id: "top5" }, h("h3", {}, `${body.model} v${body.version}`),
        Charts.bars(result.predictions.map((p) => ({ label: p.label, value: p.probability, text: pct(p.probability) })), { title: "top 5" })));
  }

  C.pages.try = tryPage;
})();
