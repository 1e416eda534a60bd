// The sweep page: a Plotly parcoords of the parameters against the target (one line per trial
// with a value) and a scatter of each parameter vs the target. Data: the "sweep-data" JSON
// (webapp.sweeps.selectors.plot_data). Categorical parameters become integer ticks. The page
// stays live (live_sections.js): summary, groups and runs table swapped in, the plots redrawn.
//
// Plotly's parcoords trace is WebGL: with a GPU it draws 500 lines in well under 100 ms, but on a
// software renderer (SwiftShader, llvmpipe: headless browsers, VMs, remote desktops) its shaders
// alone take 3-8 s whatever the number of lines (bench/sweep_page.py). There the same plot is drawn
// as SVG lines (Plotly scatter traces, one per colour band), without the brushing.
import { liveSections } from "./live_sections.js";

let software = null;
function softwareGL() {
  if (software !== null) return software;
  try {
    const gl = document.createElement("canvas").getContext("webgl");
    const info = gl && gl.getExtension("WEBGL_debug_renderer_info");
    const renderer = info ? String(gl.getParameter(info.UNMASKED_RENDERER_WEBGL)) : "";
    const lose = gl && gl.getExtension("WEBGL_lose_context");
    if (lose) lose.loseContext();
    software = !gl || /swiftshader|llvmpipe|softpipe|software/i.test(renderer);
  } catch (e) { software = true; }
  return software;
}

const VIRIDIS = ["#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725"];

// The parcoords as SVG: axis i at x = i, each value scaled to [0, 1] on its axis (log10 for log
// parameters), a line per trial coloured by its target in 8 bands; the axes' ends labelled.
function svgParcoords(div, dims, values, data, logs) {
  const scaled = dims.map((d) => {
    const raw = d.values.map((v) => (logs.has(d.label) && v > 0 ? Math.log10(v) : Number(v)));
    const lo = d.tickvals ? 0 : Math.min(...raw), hi = d.tickvals ? Math.max(1, d.tickvals.length - 1) : Math.max(...raw);
    return { raw, lo, hi, span: hi - lo || 1 };
  });
  const vlo = Math.min(...values), vspan = (Math.max(...values) - vlo) || 1;
  const bands = VIRIDIS.map(() => ({ x: [], y: [] }));
  values.forEach((v, j) => {
    let band = Math.min(VIRIDIS.length - 1, Math.floor(((v - vlo) / vspan) * VIRIDIS.length));
    if (data.direction === "min") band = VIRIDIS.length - 1 - band;
    const b = bands[band];
    scaled.forEach((s, i) => { b.x.push(i); b.y.push((s.raw[j] - s.lo) / s.span); });
    b.x.push(null); b.y.push(null);
  });
  const fmt = (v, d) => (d.tickvals ? "" : Number(v.toPrecision(3)).toString());
  const ends = (s, d, at) => {
    const v = at ? s.hi : s.lo;
    if (!Number.isFinite(v)) return "";  // no trial with a value yet
    return logs.has(d.label) ? Number((10 ** v).toPrecision(3)).toString() : fmt(v, d);
  };
  const notes = [];
  dims.forEach((d, i) => {
    notes.push({ x: i, y: 1.12, text: `<b>${d.label}</b>`, showarrow: false });
    if (d.tickvals) {
      d.ticktext.forEach((t, k) => notes.push({ x: i, y: k / scaled[i].span, text: t, showarrow: false, xanchor: "right",
                                                 xshift: -4, font: { size: 10 } }));
    } else {
      notes.push({ x: i, y: 1.03, text: ends(scaled[i], d, true), showarrow: false, font: { size: 10 } });
      notes.push({ x: i, y: -0.05, text: ends(scaled[i], d, false), showarrow: false, font: { size: 10 } });
    }
  });
  const traces = bands.filter((b) => b.x.length).map((b) => ({
    type: "scatter", mode: "lines", x: b.x, y: b.y, hoverinfo: "skip", showlegend: false,
    line: { width: 1, color: VIRIDIS[bands.indexOf(b)] }, opacity: 0.6 }));
  traces.push({ type: "scatter", mode: "markers", x: [0], y: [0], hoverinfo: "skip", showlegend: false,
    marker: { size: 0.1, opacity: 0, color: values.length ? values : [0], colorscale: "Viridis",
              reversescale: data.direction === "min", showscale: true } });
  const axes = dims.map((_, i) => ({ type: "line", x0: i, x1: i, y0: 0, y1: 1, line: { color: "#444", width: 1 } }));
  return Plotly.react(div, traces, {
    margin: { l: 60, r: 60, t: 50, b: 30 }, shapes: axes, annotations: notes,
    xaxis: { visible: false, range: [-0.3, dims.length - 0.7] }, yaxis: { visible: false, range: [-0.1, 1.15] },
  }, { displaylogo: false, responsive: true });
}

const STATES = { running: "Running", complete: "Complete", pruned: "Pruned", failed: "Failed" };

// The runs table, a row per trial; rows carry [data-run-state] so status.js moves their status and
// step from the live stream.
function drawTable(data) {
  const table = document.getElementById("sweep-trials");
  const prefix = table.dataset.runUrl.replace(/0\/$/, "");
  const cell = (tr, text, cls) => { const td = tr.insertCell(); td.textContent = text; if (cls) td.className = cls; return td; };
  const body = document.createElement("tbody");
  for (const t of data.trials) {
    const tr = body.insertRow();
    Object.assign(tr.dataset, { runState: t.run, status: t.status, step: t.step, total: t.total || 0 });
    cell(tr, String(t.number));
    const a = document.createElement("a");
    a.href = `${prefix}${t.run}/`; a.textContent = `#${t.run} ${t.name}`;
    tr.insertCell().append(a);
    for (const p of data.params) cell(tr, String(t.params[p]));
    const badge = document.createElement("span");
    badge.className = `status status-${t.status}`; badge.textContent = t.status_label;
    tr.insertCell().append(badge);
    cell(tr, t.total ? `step ${t.step} / ${t.total}` : `step ${t.step}`, "step-text");
    cell(tr, t.value === null ? "–" : t.value.toFixed(4));
    cell(tr, (STATES[t.state] || t.state) + (t.pruned_step !== null ? ` at step ${t.pruned_step}` : ""));
  }
  if (!data.trials.length) {
    const td = cell(body.insertRow(), "No runs yet.", "muted");
    td.colSpan = data.params.length + 6;
  }
  table.tBodies[0].replaceWith(body);
}

function draw() {
  const data = JSON.parse(document.getElementById("sweep-data").textContent);
  drawTable(data);
  if (typeof Plotly === "undefined") return;
  const done = data.trials.filter((t) => t.value !== null);
  const categorical = new Set(data.categorical);
  const dims = data.params.map((p) => {
    if (!categorical.has(p)) return { label: p, values: done.map((t) => t.params[p]) };
    const levels = [...new Set(data.trials.map((t) => String(t.params[p])))];
    return { label: p, values: done.map((t) => levels.indexOf(String(t.params[p]))),
             tickvals: levels.map((_, i) => i), ticktext: levels };
  });
  const values = done.map((t) => t.value);
  dims.push({ label: data.target, values: values });
  const drawn = [];
  const box0 = document.getElementById("sweep-parcoords");
  if (softwareGL()) {
    box0.dataset.kind = "parcoords-svg";
    drawn.push(svgParcoords(box0, dims, values, data, new Set(data.log || [])));
  } else {
    box0.dataset.kind = "parcoords";
    drawn.push(Plotly.react(box0, [{
      type: "parcoords", dimensions: dims,
      line: { color: values, colorscale: "Viridis", reversescale: data.direction === "min", showscale: true },
    }], { margin: { l: 60, r: 60, t: 40, b: 20 } }, { displaylogo: false, responsive: true }));
  }
  // One figure, a subplot per parameter (one Plotly render instead of one per parameter).
  const box = document.getElementById("sweep-scatter");
  const n = data.params.length, cols = Math.min(3, n), rows = Math.ceil(n / cols);
  const text = done.map((t) => `trial ${t.number}, run #${t.run} (${t.state})`);
  const colors = done.map((t) => (t.state === "complete" ? "#1f77b4" : "#bbb"));
  const layout = { grid: { rows, columns: cols, pattern: "independent", ygap: 0.35, xgap: 0.12 }, showlegend: false,
                   margin: { l: 50, r: 10, t: 30, b: 40 }, annotations: [] };
  const traces = data.params.map((p, i) => {
    const ax = i ? String(i + 1) : "";
    layout[`xaxis${ax}`] = { title: { text: p, standoff: 2 } };
    layout[`yaxis${ax}`] = { title: { text: i % cols ? "" : data.target } };
    layout.annotations.push({ text: `${p} vs ${data.target}`, xref: `x${ax} domain`, yref: `y${ax} domain`, x: 0.5,
                              y: 1.12, showarrow: false, font: { size: 13 } });
    return { type: "scatter", mode: "markers", x: done.map((t) => t.params[p]), y: values, text, name: p,
             xaxis: `x${ax}`, yaxis: `y${ax}`, marker: { color: colors } };
  });
  box.style.height = `${rows * 280}px`;
  box.dataset.plots = String(n);
  drawn.push(Plotly.react(box, traces, layout, { displaylogo: false, responsive: true }));
  // What bench/sweep_page.py times (from the navigation start) and the browser test waits for.
  Promise.all(drawn).then(() => {
    document.body.dataset.sweepDrawn = String(done.length);
    if (!performance.getEntriesByName("sweep-drawn").length) performance.mark("sweep-drawn");
  });
}

draw();
liveSections(["#sweep-head", "#sweep-summary", "#sweep-groups-card", "#sweep-trials", "#sweep-data"], draw);
