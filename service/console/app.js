/* tuneserve console: one page per resource (hash routes), plain DOM, data from the HTTP API only. The pages are
   the scripts index.html loads before this one (core.js, then one per page); this one routes between them. */
"use strict";
(function () {
  const { h, fill } = window.Dom;
  const C = window.Console;

  async function route() {
    C.leave();
    const [page, id, ...rest] = location.hash.replace(/^#\/?/, "").split("?")[0].split("/").map(decodeURIComponent);
    const name = C.pages[page] ? page : "models";
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === name);
    try { await C.pages[name](id, rest); } catch (e) { fill(C.main, h("p", { class: "error-inline" }, e.message)); C.showError(e.message); }
  }
  C.route = route;

  const keyInput = document.getElementById("api-key");
  keyInput.value = sessionStorage.getItem(C.KEY) || "";
  keyInput.addEventListener("change", () => {
    if (keyInput.value) sessionStorage.setItem(C.KEY, keyInput.value); else sessionStorage.removeItem(C.KEY);
    route();
  });
  window.addEventListener("hashchange", route);
  route();
})();
