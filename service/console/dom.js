/* DOM building for the console: every string becomes a text node (never HTML), null and undefined children
   are dropped (Node.replaceChildren would print them as "null"), so no page shows data as markup or "null". */
"use strict";
(function () {
  function kids(children) {
    return children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false)
      .map((c) => (typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c));
  }

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of kids(children)) node.appendChild(c);
    return node;
  }

  /* node.replaceChildren without the nulls. */
  function fill(node, ...children) {
    node.replaceChildren(...kids(children));
    return node;
  }

  /* A table, or a sentence when there are no rows (a bare header row says nothing). */
  function table(attrs, header, rows, empty) {
    if (!rows.length) return h("p", { class: "muted empty" }, empty);
    return h("table", attrs, h("tr", {}, header.map((t) => h("th", {}, t))), rows);
  }

  window.Dom = { h, fill, table };
})();
