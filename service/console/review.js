/* Review: a model's unlabeled captures, photo by photo (GET .../feedback?state=unlabeled, paged), with the
   model's answer, its version and the heatmap (GET .../feedback/{id}/explain), labelled with one key press:
   1-9 the model's classes in order, 0 or n "none of these", s or → skip; or a class name typed in the field. */
"use strict";
(function () {
  const { h, fill } = window.Dom;
  const C = window.Console;
  const { api, postJSON, pct, main } = C;
  const PAGE = 20;

  async function reviewPage(model) {
    if (!model) return pickModel();
    const name = encodeURIComponent(model);
    const [info, policy] = await Promise.all([api(`/v1/models/${name}`), api(`/v1/models/${name}/feedback/policy`)]);
    const keyed = info.labels.slice(0, 9);
    const state = { queue: [], at: 0, skipped: 0, labelled: 0, total: 0, busy: false, done: false };
    const box = h("div", { id: "review" });
    const status = h("p", { class: "muted", id: "review-status" });
    fill(main, h("h2", {}, `Review: ${model}`),
      h("p", {}, h("a", { href: `#/models/${name}` }, "← the model"), ` · capture policy ${policy.policy}`,
        policy.policy === "off" ? ` (nothing new is kept: set a policy with PUT /v1/models/${model}/feedback/policy)` : ""),
      box, status);

    /* The next page after the ones skipped: labelled captures leave the server's queue, skipped ones stay in it. */
    async function load() {
      const page = await api(`/v1/models/${name}/feedback?state=unlabeled&limit=${PAGE}&offset=${state.skipped}`);
      state.queue = page.items;
      state.at = 0;
      state.total = page.total;
      state.done = !page.items.length;
    }

    function current() { return state.queue[state.at]; }

    async function next() {
      state.at += 1;
      if (state.at >= state.queue.length) await load();
      show();
    }

    async function label(value) {
      const c = current();
      if (!c || state.busy) return;
      state.busy = true;
      try {
        const out = await postJSON(`/v1/models/${name}/feedback/${c.id}`, { label: value });
        state.labelled += 1;
        state.total -= 1;
        fill(status, `${c.id.slice(0, 8)} labelled ${out.none_of_these ? "none of these" : out.label}`);
        await next();
      } catch (e) { C.showError(e.message); } finally { state.busy = false; }
    }

    async function skip() {
      const c = current();
      if (!c || state.busy) return;
      state.skipped += 1;
      fill(status, `${c.id.slice(0, 8)} skipped`);
      await next();
    }

    function show() {
      const c = current();
      if (!c) {
        fill(box, h("p", { class: "muted empty", id: "review-empty" }, state.skipped
          ? `Nothing left to review: ${state.labelled} labelled, ${state.skipped} skipped (reload the page to see those again).`
          : `Nothing to review: ${model} has no unlabeled captures.`));
        return;
      }
      const answer = c.answer || { predictions: [], unknown: false };
      const top = answer.predictions[0];
      const img = C.authImg(c.image_url, { id: "review-photo", alt: `capture ${c.id.slice(0, 8)}` });
      const heatBox = h("div", { id: "review-visual" }, C.heatPhoto(img, null).photo);
      api(`/v1/models/${name}/feedback/${c.id}/explain`).then((why) => {
        if (current() !== c) return;
        const shown = C.heatPhoto(img, why.explanation, { toggle: "review-heat-toggle", heat: "review-heatmap", crop: "review-crop" });
        fill(heatBox, shown.photo, shown.toggle, why.version !== c.version
          ? h("p", { class: "muted" }, `heatmap by version ${why.version} (version ${c.version ?? "none"} is gone)`) : null);
      }).catch((e) => { if (current() === c) heatBox.appendChild(h("p", { class: "muted", id: "review-no-heat" }, `no heatmap: ${e.message}`)); });
      const field = h("input", { id: "review-new-class", list: "review-classes", placeholder: "another or a new class",
        maxlength: 100 });
      const typed = h("form", { id: "review-type", onsubmit: (ev) => {
        ev.preventDefault();
        if (field.value.trim()) label(field.value.trim());
      } }, field, " ", h("button", { type: "submit" }, "Label"),
      h("datalist", { id: "review-classes" }, info.labels.map((l) => h("option", { value: l }))));
      fill(box, h("div", { class: "card", id: "review-card", "data-capture": c.id },
        h("p", { id: "review-position" }, `${state.total} unlabeled`, state.skipped ? ` (${state.skipped} skipped)` : "",
          ` · captured ${C.when(new Date(c.created_at * 1000).toISOString())} · `, h("span", { class: "muted" }, c.id.slice(0, 8))),
        h("div", { class: "row" }, heatBox,
          h("div", {},
            h("p", { id: "review-answer" }, "model's answer ", h("strong", {}, top ? top.label : "none"),
              top ? ` (${pct(top.probability)})` : "", ` · version `, h("span", { id: "review-version" }, c.version ?? "none"),
              answer.unknown ? h("span", { class: "error-inline" }, ` · flagged unknown (${answer.unknown_reason})`) : null),
            answer.predictions.length ? Charts.bars(answer.predictions.map((p) => ({ label: p.label, value: p.probability,
              text: pct(p.probability) })), { title: `top ${answer.predictions.length}` }) : null,
            h("div", { id: "review-keys" },
              keyed.map((l, i) => h("button", { "data-key": i + 1, onclick: () => label(l) }, `${i + 1} ${l}`)),
              h("button", { "data-key": "0", onclick: () => label(null) }, "0 / n none of these"),
              h("button", { "data-key": "s", onclick: skip }, "s / → skip")),
            typed))));
    }

    const onKey = (ev) => {
      if (ev.altKey || ev.ctrlKey || ev.metaKey || /^(INPUT|SELECT|TEXTAREA)$/.test(ev.target.tagName)) return;
      if (/^[1-9]$/.test(ev.key) && keyed[Number(ev.key) - 1] !== undefined) label(keyed[Number(ev.key) - 1]);
      else if (ev.key === "0" || ev.key === "n") label(null);
      else if (ev.key === "s" || ev.key === "ArrowRight") skip();
      else return;
      ev.preventDefault();
    };
    document.addEventListener("keydown", onKey);
    C.onLeave(() => document.removeEventListener("keydown", onKey));
    await load();
    show();
  }

  async function pickModel() {
    const models = await api("/v1/models");
    fill(main, h("h2", {}, "Review"),
      models.length ? h("p", {}, "Label the photos a model's capture policy kept: ",
        models.map((m, i) => [i ? ", " : "", h("a", { href: `#/review/${encodeURIComponent(m.name)}` }, m.name)]))
        : h("p", { class: "muted empty" }, "No models yet: run `tuneserve bootstrap` or train one."));
  }

  C.pages.review = reviewPage;
})();
