/* Small SVG charts for the console (no dependencies): lines, bars, scatter. */
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function frame(width, height, title) {
    const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
    if (title) svg.appendChild(el("text", { x: width / 2, y: 14, "text-anchor": "middle" }, title));
    return svg;
  }

  function extent(values, pad) {
    let lo = Math.min(...values), hi = Math.max(...values);
    if (!isFinite(lo)) { lo = 0; hi = 1; }
    if (lo === hi) { lo -= pad || 0.5; hi += pad || 0.5; }
    return [lo, hi];
  }

  /* Whole numbers only (epochs): at most ~6 ticks, a step of 1, 2, 5, 10, ... */
  function integerTicks(lo, hi) {
    const span = Math.max(1, Math.floor(hi) - Math.ceil(lo));
    const step = [1, 2, 5, 10, 20, 50, 100, 200, 500].find((s) => span / s <= 6) || Math.ceil(span / 6);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) if (v >= lo) out.push(v);
    return out;
  }

  function axes(svg, box, xr, yr, xlabel, ylabel, integerX) {
    const { l, t, w, h } = box;
    svg.appendChild(el("line", { x1: l, y1: t + h, x2: l + w, y2: t + h, stroke: "#999" }));
    svg.appendChild(el("line", { x1: l, y1: t, x2: l, y2: t + h, stroke: "#999" }));
    const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(1) : v.toPrecision(2));
    for (let i = 0; i <= 4; i++) {
      const yv = yr[0] + (yr[1] - yr[0]) * i / 4, y = t + h - h * i / 4;
      svg.appendChild(el("text", { x: l - 4, y: y + 4, "text-anchor": "end" }, fmt(yv)));
    }
    const xticks = integerX ? integerTicks(xr[0], xr[1]) : [0, 1, 2, 3, 4].map((i) => xr[0] + (xr[1] - xr[0]) * i / 4);
    for (const xv of xticks) {
      const x = l + w * (xv - xr[0]) / (xr[1] - xr[0]);
      svg.appendChild(el("text", { x, y: t + h + 14, "text-anchor": "middle", class: "xtick" }, integerX ? String(xv) : fmt(xv)));
    }
    if (xlabel) svg.appendChild(el("text", { x: l + w / 2, y: t + h + 28, "text-anchor": "middle" }, xlabel));
    if (ylabel) svg.appendChild(el("text", { x: 10, y: t + h / 2, transform: `rotate(-90 10 ${t + h / 2})`,
                                              "text-anchor": "middle" }, ylabel));
  }

  const COLOURS = ["#1e88e5", "#e53935", "#43a047", "#fb8c00", "#8e24aa"];

  /* series: [{name, points: [[x, y], ...]}] */
  function lines(series, opts) {
    const o = Object.assign({ width: 420, height: 240 }, opts || {});
    const svg = frame(o.width, o.height, o.title);
    const box = { l: 48, t: 24, w: o.width - 64, h: o.height - 60 };
    const all = series.flatMap((s) => s.points);
    const xr = o.xrange || extent(all.map((p) => p[0]));
    const yr = o.yrange || extent(all.map((p) => p[1]), 0.05);
    axes(svg, box, xr, yr, o.xlabel, o.ylabel, o.integerX);
    const sx = (x) => box.l + box.w * (x - xr[0]) / (xr[1] - xr[0]);
    const sy = (y) => box.t + box.h - box.h * (y - yr[0]) / (yr[1] - yr[0]);
    for (const m of o.marks || []) {  // e.g. where a training stage starts
      svg.appendChild(el("line", { x1: sx(m.x), y1: box.t, x2: sx(m.x), y2: box.t + box.h, stroke: "#bbb",
                                   "stroke-dasharray": "2 3", class: "mark" }));
      svg.appendChild(el("text", { x: sx(m.x) + 3, y: box.t + box.h - 4, fill: "#888" }, m.label));
    }
    series.forEach((s, i) => {
      const colour = s.colour || COLOURS[i % COLOURS.length];
      if (s.points.length > 1) {
        const d = s.points.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
        svg.appendChild(el("path", { d, fill: "none", stroke: colour, "stroke-width": 2,
                                     "stroke-dasharray": s.dashed ? "4 3" : "none" }));
      }
      for (const p of s.points) {
        svg.appendChild(el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 3, fill: colour, class: "point" }));
      }
      svg.appendChild(el("text", { x: box.l + 8, y: box.t + 12 + 13 * i, fill: colour }, s.name));
    });
    return svg;
  }

  /* items: [{label, value}] as horizontal bars */
  function bars(items, opts) {
    const o = Object.assign({ width: 420, bar: 18 }, opts || {});
    const height = 24 + items.length * (o.bar + 4);
    const svg = frame(o.width, height, o.title);
    const top = Math.max(...items.map((i) => i.value), 1e-9);
    items.forEach((item, i) => {
      const y = 22 + i * (o.bar + 4), w = (o.width - 200) * item.value / top;
      svg.appendChild(el("text", { x: 110, y: y + o.bar - 5, "text-anchor": "end" }, item.label));
      svg.appendChild(el("rect", { x: 116, y, width: Math.max(w, 1), height: o.bar, fill: "#4db6ac", class: "bar" }));
      svg.appendChild(el("text", { x: 120 + w, y: y + o.bar - 5 }, String(item.text ?? item.value)));
    });
    return svg;
  }

  /* points: [{x, y, grey, title}] */
  function scatter(points, opts) {
    const o = Object.assign({ width: 420, height: 260 }, opts || {});
    const svg = frame(o.width, o.height, o.title);
    const box = { l: 48, t: 24, w: o.width - 64, h: o.height - 60 };
    const logx = o.logx && points.every((p) => p.x > 0);
    const xv = (x) => (logx ? Math.log10(x) : x);
    const xr = extent(points.map((p) => xv(p.x))), yr = extent(points.map((p) => p.y), 0.05);
    axes(svg, box, xr, yr, (logx ? "log10 " : "") + (o.xlabel || ""), o.ylabel);
    for (const p of points) {
      const c = el("circle", {
        cx: box.l + box.w * (xv(p.x) - xr[0]) / (xr[1] - xr[0]),
        cy: box.t + box.h - box.h * (p.y - yr[0]) / (yr[1] - yr[0]),
        r: 5, fill: p.grey ? "#bbb" : "#1e88e5", class: p.grey ? "point pruned" : "point",
      });
      if (p.title) c.appendChild(el("title", {}, p.title));
      svg.appendChild(c);
    }
    return svg;
  }

  window.Charts = { lines, bars, scatter };
})();
