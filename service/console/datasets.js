/* Datasets: the list by name, the upload with its progress bar, and a dataset's report (counts per class and
   split, warnings, problems, duplicate groups with thumbnails). */
"use strict";
(function () {
  const { h, fill } = window.Dom;
  const C = window.Console;
  const { api, authHeaders, authImg, showError, num, main } = C;

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
      h("td", {}, h("a", { href: `#/datasets/${d.id}` }, d.name)), h("td", { class: "muted" }, d.id), h("td", {}, d.classes.length),
      h("td", {}, d.num_files), h("td", {}, d.problems), h("td", {}, C.when(d.created_at))));
    fill(main, h("h2", {}, "Datasets"), form,
      Dom.table({ id: "dataset-list" }, ["name", "id", "classes", "files", "problems", "created"], rows,
        "No datasets yet: upload an archive of class folders above."));
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
    fill(main,
      h("h2", {}, `Dataset ${d.name}`),
      h("p", {}, h("span", { class: "muted" }, d.id), ` · ${d.num_files} files`, d.layout ? ` · layout ${d.layout}` : "",
        ` · split ${d.split_source}`,
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
        d.duplicates.length ? null : h("p", { class: "muted empty" }, "no duplicates found"),
        d.duplicates.map((g) => h("div", {}, h("p", {}, `${g.kind}, similarity ${num(g.similarity, 3)}`),
          h("div", { class: "thumbs" }, g.paths.map(thumb))))),
      h("button", { id: "delete-dataset", onclick: async () => {
        if (!window.confirm(`Delete dataset ${d.name} (${id})?`)) return;
        try { await api(`/v1/datasets/${id}`, { method: "DELETE" }); location.hash = "#/datasets"; }
        catch (e) { showError(e.message); }
      } }, "Delete dataset"));
  }

  C.pages.datasets = datasetsPage;
})();
