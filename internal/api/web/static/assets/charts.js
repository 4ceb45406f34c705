// Charts drawn by hand in SVG: no library. Every function returns an
// element to insert; colours come from the style sheet's classes.

const NS = "http://www.w3.org/2000/svg";

function el(name, attrs = {}, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// fmtMS shows a duration in ms as ms or s.
export function fmtMS(ms) {
  if (ms === undefined || ms === null || Number.isNaN(ms)) return "-";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 100000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.round(ms / 1000)} s`;
}

// stageChart draws one stage's p50, p95 and p99 as horizontal bars, with
// its thresholds (each {value, level: "warning"|"critical"}) as vertical
// lines; the scale reaches the highest of them so that the distance to
// a threshold is visible.
export function stageChart(stage, s, thresholds = []) {
  const W = 320, rowH = 22, left = 32, right = 60, top = 8;
  const rows = [["p50", s.p50_ms], ["p95", s.p95_ms], ["p99", s.p99_ms]];
  const H = top + rows.length * rowH + 20 + 12 * thresholds.length;
  const max = Math.max(1, ...rows.map((r) => r[1] || 0), ...thresholds.map((t) => t.value)) * 1.05;
  const x = (v) => left + (W - left - right) * (v / max);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "stage-chart", "data-stage": stage });
  svg.append(el("title", {}, `${stage}: p50 ${fmtMS(s.p50_ms)}, p95 ${fmtMS(s.p95_ms)}, p99 ${fmtMS(s.p99_ms)} over ${s.count} samples`));
  rows.forEach(([name, v], i) => {
    const y = top + i * rowH;
    svg.append(el("text", { x: 4, y: y + 14 }, name));
    svg.append(el("rect", { class: `bar ${name}`, x: left, y: y + 3, width: Math.max(1, x(v || 0) - left), height: rowH - 8 }));
    svg.append(el("text", { x: x(v || 0) + 4, y: y + 14 }, fmtMS(v)));
  });
  const axisY = top + rows.length * rowH;
  svg.append(el("line", { class: "axis", x1: left, y1: axisY, x2: W - right, y2: axisY }));
  svg.append(el("text", { x: left, y: axisY + 14 }, "0"));
  svg.append(el("text", { x: W - right, y: axisY + 14, "text-anchor": "end" }, fmtMS(max)));
  thresholds.forEach((t, i) => {
    svg.append(el("line", { class: `th-${t.level}`, x1: x(t.value), y1: top, x2: x(t.value), y2: axisY }));
    svg.append(el("text", { x: x(t.value), y: axisY + 14 + 12 * (i + 1), "text-anchor": "end" }, `${t.level} ${fmtMS(t.value)}`));
  });
  return svg;
}

// trendChart draws series ({name, cls, points: [{t, v}]}) over the last
// spanMS milliseconds before now, with horizontal threshold lines.
// With counts (fmt given), the scale is an even whole number, so that its
// labels are whole numbers too.
export function trendChart(series, thresholds, now, spanMS, fmt) {
  const W = 640, H = 220, left = 52, right = 12, top = 10, bottom = 26;
  const all = series.flatMap((s) => s.points.map((p) => p.v));
  let max = Math.max(1, ...all, ...thresholds.map((t) => t.value)) * 1.05;
  if (fmt) max = 2 * Math.ceil(max / 2);
  fmt = fmt || fmtMS;
  const x = (t) => left + (W - left - right) * (1 - (now - t) / spanMS);
  const y = (v) => top + (H - top - bottom) * (1 - v / max);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "trend-chart" });
  svg.append(el("title", {}, series.map((s) => `${s.name}: ${s.points.length ? fmt(s.points[s.points.length - 1].v) : "-"}`).join(", ")));
  svg.append(el("line", { class: "axis", x1: left, y1: H - bottom, x2: W - right, y2: H - bottom }));
  svg.append(el("line", { class: "axis", x1: left, y1: top, x2: left, y2: H - bottom }));
  for (const f of [0, 0.5, 1]) {
    svg.append(el("text", { x: left - 4, y: y(max * f) + 4, "text-anchor": "end" }, fmt(max * f)));
  }
  svg.append(el("text", { x: left, y: H - 8 }, `-${Math.round(spanMS / 60000)} min`));
  svg.append(el("text", { x: W - right, y: H - 8, "text-anchor": "end" }, "now"));
  for (const t of thresholds) {
    svg.append(el("line", { class: `th-${t.level}`, x1: left, y1: y(t.value), x2: W - right, y2: y(t.value) }));
    svg.append(el("text", { x: W - right - 2, y: y(t.value) - 3, "text-anchor": "end" }, `${t.label} ${fmtMS(t.value)}`));
  }
  for (const s of series) {
    if (s.points.length === 0) continue;
    const d = s.points.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
    svg.append(el("path", { class: "line", d, stroke: s.color }));
    const last = s.points[s.points.length - 1];
    svg.append(el("circle", { cx: x(last.t), cy: y(last.v), r: 3, fill: s.color }));
  }
  return svg;
}

// timingColors colour a job's stages, in order.
export const timingColors = ["#5b8fd1", "#0b5cad", "#8a5300", "#1d6b34", "#6a3d9a", "#a11d1d"];

// timingBar draws a job's stages (each {name, ms}) as one stacked bar in
// their order, labelled below.
export function timingBar(stages, totalMS) {
  const W = 640, H = 30, left = 4, right = 4;
  const sum = Math.max(1, totalMS || stages.reduce((a, s) => a + s.ms, 0));
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "timing-bar" });
  svg.append(el("title", {}, stages.map((s) => `${s.name} ${fmtMS(s.ms)}`).join(", ") + `; total ${fmtMS(totalMS)}`));
  let x = left;
  stages.forEach((s, i) => {
    const w = Math.max(2, (W - left - right) * (s.ms / sum));
    svg.append(el("rect", { x, y: 4, width: w, height: 22, fill: timingColors[i % timingColors.length], "data-stage": s.name }));
    x += w;
  });
  return svg;
}


// stateStrip draws one row per breaker ({name, states: [{t, state}]}) over
// the last spanMS: one cell per sample, coloured by its state.
export function stateStrip(rows, now, spanMS) {
  const W = 640, rowH = 20, left = 220, right = 8;
  const H = rows.length * rowH + 18;
  const x = (t) => left + (W - left - right) * (1 - (now - t) / spanMS);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "state-strip" });
  svg.append(el("title", {}, rows.map((r) => `${r.name}: ${r.states.length ? r.states[r.states.length - 1].state : "-"}`).join(", ")));
  rows.forEach((r, i) => {
    const y = i * rowH;
    svg.append(el("text", { x: 0, y: y + 14 }, r.name));
    r.states.forEach((s, j) => {
      const next = j + 1 < r.states.length ? r.states[j + 1].t : now;
      const x0 = Math.max(left, x(s.t));
      svg.append(el("rect", { class: `state ${s.state}`, x: x0, y: y + 3, width: Math.max(2, x(next) - x0), height: rowH - 6 }));
    });
  });
  svg.append(el("text", { x: left, y: H - 4 }, `-${Math.round(spanMS / 60000)} min`));
  svg.append(el("text", { x: W - right, y: H - 4, "text-anchor": "end" }, "now"));
  return svg;
}
