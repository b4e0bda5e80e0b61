/* The console's shared parts: the API client (the key as a Bearer header), error display, formatting, server-sent
   events, names for ids, and the photo with its heatmap. Each page is a script of its own (models.js, datasets.js,
   jobs.js, try.js, review.js, drift.js) that registers itself in Console.pages; app.js routes between them. */
"use strict";
(function () {
  const KEY = "tuneserve-api-key";
  const { h } = window.Dom;
  let leaving = [];

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
  const when = (iso) => (iso || "").slice(0, 19).replace("T", " ");

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

  /* dataset id -> its name (the id stays the link target and a secondary label). */
  const datasetNames = (datasets) => Object.fromEntries(datasets.map((d) => [d.id, d.name]));
  const datasetLink = (id, names) => (names[id] ? h("a", { href: `#/datasets/${id}` }, names[id])
    : `dataset ${String(id).slice(0, 8)} (deleted)`);

  /* Deletes ask first; the server refuses (409, shown) what a job or the serving version still needs. */
  async function remove(what, path, then) {
    if (!window.confirm(`Delete ${what}? This cannot be undone.`)) return;
    try { await api(path, { method: "DELETE" }); } catch (e) { showError(e.message); }
    if (then) then(); else Console.route();
  }

  /* A photo with a heatmap (an explanation of the API: predict?explain=true or a capture's explain) laid over
     the centre crop the model sees, a toggle for it, and the sentence that says so. */
  function heatPhoto(img, why, ids) {
    const i = ids || {};
    const photo = h("div", { class: "photo" }, img);
    img.classList.add("base");
    const toggle = h("label", {}, h("input", { type: "checkbox", id: i.toggle, checked: true, disabled: !why }), " heatmap");
    if (!why) return { photo, toggle, note: null };
    const heat = h("img", { class: "heat", id: i.heat, src: why.heatmap, alt: `where the model saw ${why.label}` });
    const crop = h("div", { class: "crop-box", id: i.crop, title: "the centre crop the model sees" });
    const place = () => {  // the heatmap covers the model's crop, scaled like the photo on screen
      if (!img.naturalWidth) return;
      const k = img.clientWidth / img.naturalWidth;
      const [l, t, r, b] = why.crop_box;
      for (const box of [heat, crop]) {
        Object.assign(box.style, { left: `${l * k}px`, top: `${t * k}px`, width: `${(r - l) * k}px`, height: `${(b - t) * k}px` });
      }
    };
    img.addEventListener("load", place);
    requestAnimationFrame(place);  // a photo loaded before its heatmap came: placed once it is on the page
    photo.append(heat, crop);
    toggle.firstChild.addEventListener("change", (ev) => { heat.hidden = !ev.target.checked; });
    const [l, t, r, b] = why.crop_box;
    const note = h("p", { class: "muted", id: i.note }, `The model sees only the centre crop (the box, ${Math.round(r - l)}×${Math.round(b - t)} px of `
      + "the photo); the heatmap covers that crop, and nothing outside it counted.");
    return { photo, toggle, note };
  }

  window.Console = {
    KEY, pages: {}, main: document.getElementById("main"), route: () => {},
    api, postJSON, authHeaders, showError, authImg, download, streamEvents, remove, heatPhoto,
    pct, num, seconds, when, datasetNames, datasetLink,
    /* Run fn when the page is left (an event stream, a key listener). */
    onLeave: (fn) => { leaving.push(fn); },
    leave: () => { leaving.forEach((f) => f()); leaving = []; },
  };
})();
