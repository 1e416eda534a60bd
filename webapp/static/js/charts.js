// Chart board: draws the metric charts of one or more runs with Plotly, keeps them live.
// Data in: page JSON (runs, charts, urls) from the template; series from /runs/series/.
// No build step: a plain ES module; Plotly is the global from plotly.min.js (served locally).

const RUN_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22"];
const KEY_COLORS = ["#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#d62728", "#17becf"];
const DASHES = ["solid", "dot", "dash", "dashdot", "longdash", "longdashdot"];
const MAX_LEGEND = 9;  // more named lines than this: no legend on the chart (the run legend above says it)
const XMODES = ["step", "wall", "relative"];
const PLOT_PX = 200;  // height of a chart's plot area, legend and axes not counted
const X_TITLES = { step: "step", wall: "wall time (UTC)", relative: "time since start (min)" };

// Chart settings as kept in the URL (?smooth=0.6&log=1&x=relative&sync=1) and in saved dashboards.
// Missing or malformed values keep the page's defaults.
export function readSettings(defaults = {}, search = window.location.search) {
  const q = new URLSearchParams(search);
  const out = { smoothing: Number(defaults.smoothing) || 0, log: !!defaults.log,
    xmode: XMODES.includes(defaults.xmode) ? defaults.xmode : "step", sync: defaults.sync !== false };
  const sm = Number(q.get("smooth"));
  if (q.has("smooth") && Number.isFinite(sm) && sm >= 0 && sm < 1) out.smoothing = sm;
  if (q.has("log")) out.log = q.get("log") === "1";
  if (XMODES.includes(q.get("x"))) out.xmode = q.get("x");
  if (q.has("sync")) out.sync = q.get("sync") !== "0";
  return out;
}

function writeSettings(board) {
  const url = new URL(window.location.href);
  const set = (k, v, dflt) => (v === dflt ? url.searchParams.delete(k) : url.searchParams.set(k, v));
  set("smooth", board.smoothing ? String(board.smoothing) : "0", "0");
  set("log", board.logScale ? "1" : "0", "0");
  set("x", board.xmode, "step");
  set("sync", board.sync ? "1" : "0", "1");
  history.replaceState(history.state, "", url.toString());
  // The dashboard form saves what is shown.
  const form = document.getElementById("save-dashboard");
  if (form) {
    const put = (name, v) => { const el = form.querySelector(`[name=${name}]`); if (el) el.value = v; };
    put("smoothing", String(board.smoothing)); put("logscale", board.logScale ? "1" : "");
    put("xmode", board.xmode); put("sync", board.sync ? "1" : "");
  }
}

export function runColor(index) { return RUN_COLORS[index % RUN_COLORS.length]; }

function rgba(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
}

// TensorBoard-style debiased exponential moving average; nulls (NaN/inf) stay gaps.
export function ema(values, weight) {
  if (!weight) return values;
  const out = new Array(values.length);
  let last = 0, n = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || v === undefined) { out[i] = null; continue; }
    last = last * weight + (1 - weight) * v; n += 1;
    out[i] = last / (1 - Math.pow(weight, n));
  }
  return out;
}

function emptySeries() { return { step: [], value: [], wall_time: [] }; }

function lastStep(s) { return s && s.step.length ? s.step[s.step.length - 1] : -Infinity; }

// Index of the first element >= x in a sorted array.
function lowerBound(arr, x) {
  let lo = 0, hi = arr.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (arr[mid] < x) lo = mid + 1; else hi = mid; }
  return lo;
}

export class ChartBoard {
  constructor(root, page, opts = {}) {
    this.root = root;
    this.page = page;
    this.runs = page.runs.map((r, i) => ({ ...r, color: runColor(i) }));
    this.compare = page.mode === "compare";
    // The advantage heatmap is one run's picture; in a comparison its place is taken by the lines.
    this.charts = page.charts.filter(c => !(this.compare && c.kind === "heatmap"));
    this.data = {};      // runId -> key -> series (history, extended live)
    this.hist = {};      // runId -> {step, lo, hi, counts}
    this.zoom = {};      // chartId -> {range: [stepLo, stepHi], xrange, yrange?, data}: the user zoomed
    const st = readSettings({ smoothing: page.smoothing, ...(page.settings || {}) });
    this.smoothing = st.smoothing;
    this.logScale = st.log;
    this.xmode = st.xmode;   // step | wall (date) | relative (minutes since the run's first point)
    this.sync = st.sync;     // a zoom on one chart zooms every chart of the page (x only)
    this.t0 = {};          // runId -> wall time of its first point (the relative axis' zero)
    this.groups = page.groups || [];  // compare: runs that differ only in seed
    this.groupSeeds = false;
    this.pending = new Set();
    this.timer = null;
    this.revision = 0;
    this.onMissing = opts.onMissing || (() => {});
    for (const r of this.runs) { this.data[r.id] = {}; }
  }

  keys() {
    const seen = new Set();
    for (const c of this.charts) for (const k of c.keys) seen.add(k);
    return [...seen];
  }

  histKey() {
    const c = this.charts.find(c => c.kind === "heatmap");
    return c ? c.hist : null;
  }

  seriesUrl(params) {
    const q = new URLSearchParams(params);
    return `${this.page.urls.series}?${q.toString()}`;
  }

  csvUrl(chart) {
    const q = new URLSearchParams({ runs: this.runs.map(r => r.id).join(","), keys: chart.keys.join(",") });
    return this.page.urls.series.replace(/series\/$/, "series.csv") + "?" + q.toString();
  }

  // Build the DOM: one section per chart group, one card per chart.
  build() {
    this.root.innerHTML = "";
    const groups = new Map();
    for (const c of this.charts) {
      if (!groups.has(c.group)) groups.set(c.group, []);
      groups.get(c.group).push(c);
    }
    for (const [name, charts] of groups) {
      const sec = document.createElement("section");
      sec.className = "chart-group";
      sec.innerHTML = `<h2>${name}</h2><div class="chart-grid"></div>`;
      const grid = sec.querySelector(".chart-grid");
      for (const c of charts) {
        const card = document.createElement("div");
        card.className = "chart-card";
        card.dataset.chart = c.id;
        card.hidden = !!c.until_data; // shown by render() once it has points (a live run's System charts)
        card.innerHTML = `<div class="chart-head"><span class="chart-title">${c.title}</span>
          <span class="chart-tools"><span class="log-note warn-note" hidden></span><span class="zoom-note muted" hidden>zoomed · full resolution</span>
          <button type="button" class="tool png" title="Download PNG">PNG</button>
          ${c.keys.length ? `<a class="tool csv" href="${this.csvUrl(c)}" title="Download all points as CSV">CSV</a>` : ""}
          </span></div><div class="chart" id="chart-${c.id}"></div>`;
        card.querySelector(".png").addEventListener("click", () => {
          const el = card.querySelector(".chart");
          if (!el._fullLayout) return;  // no data yet: nothing drawn
          Plotly.downloadImage(el, { format: "png", filename: `${c.id}`, width: el.clientWidth, height: 420 });
        });
        grid.appendChild(card);
      }
      sec.hidden = charts.every(c => c.until_data);
      this.root.appendChild(sec);
    }
  }

  async loadHistory() {
    // Sent by the page's inline script (runs/_chart_data.html) while plotly.js loaded.
    const pending = window.gftChartData;
    window.gftChartData = null;
    if (!pending) throw new Error("this page did not request its chart data");
    const resp = await pending;
    if (!resp.ok) throw new Error(`metrics request failed: ${resp.status}`);
    const body = await resp.json();
    for (const r of this.runs) {
      this.data[r.id] = body.series[r.id] || {};
      const firsts = Object.values(this.data[r.id]).filter(s => s.wall_time.length).map(s => s.wall_time[0]);
      if (firsts.length) this.t0[r.id] = Math.min(...firsts);
      if (body.hist && body.hist[r.id]) this.hist[r.id] = body.hist[r.id];
    }
    // One request drew every chart; the time to the last one is what bench/charts.py measures.
    await Promise.all(this.renderAll());
    document.body.dataset.chartsDrawn = String(Math.round(performance.now()));
    return body;
  }

  // Append points that arrived later (SSE entry or polling); steps already present are skipped.
  appendPoints(runId, key, steps, values, walls) {
    const store = this.data[runId] || (this.data[runId] = {});
    const s = store[key] || (store[key] = emptySeries());
    let added = 0;
    for (let i = 0; i < steps.length; i++) {
      if (steps[i] <= lastStep(s)) continue;
      s.step.push(steps[i]); s.value.push(values[i]); s.wall_time.push(walls[i]);
      added++;
    }
    if (added) this.markKey(key);
    return added;
  }

  // One entry of the run's stream: {"step", "t", "scalars": {...}, "histograms": {...}}.
  applyEntry(runId, entry) {
    for (const [key, value] of Object.entries(entry.scalars || {})) {
      this.appendPoints(runId, key, [entry.step], [value], [entry.t]);
    }
    const hk = this.histKey();
    const h = entry.histograms && hk && entry.histograms[hk];
    if (h) {
      const cur = this.hist[runId] || (this.hist[runId] = { step: [], lo: h.lo, hi: h.hi, counts: [] });
      if (!cur.step.length || entry.step > cur.step[cur.step.length - 1]) {
        cur.step.push(entry.step); cur.counts.push(h.counts);
        this.pending.add(this.charts.find(c => c.kind === "heatmap").id);
        this.schedule();
      }
    }
  }

  markKey(key) {
    for (const c of this.charts) if (c.keys.includes(key)) this.pending.add(c.id);
    this.schedule();
  }

  // Redraw changed charts at most a few times a second, however fast steps arrive.
  schedule() {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      const ids = [...this.pending]; this.pending.clear();
      for (const id of ids) this.render(this.charts.find(c => c.id === id));
    }, 250);
  }

  lastSteps() {
    const out = {};
    for (const r of this.runs) {
      let m = 0;
      for (const s of Object.values(this.data[r.id] || {})) m = Math.max(m, lastStep(s));
      out[r.id] = m;
    }
    return out;
  }

  pointCount(chartId) {
    const c = this.charts.find(c => c.id === chartId);
    let n = 0;
    for (const r of this.runs) for (const k of c.keys) n += ((this.data[r.id] || {})[k] || emptySeries()).step.length;
    return n;
  }

  setSmoothing(w) { this.smoothing = w; this.renderAll(); writeSettings(this); }
  setLog(on) { this.logScale = on; this.renderAll(); writeSettings(this); }
  setXMode(mode) { this.xmode = mode; this.resetZoom(); writeSettings(this); }
  setSync(on) { this.sync = on; writeSettings(this); }
  setGroupSeeds(on) { this.groupSeeds = on; this.renderAll(); }

  renderAll(resetView = false) {
    return this.charts.map(c => this.render(c, resetView));
  }

  resetZoom() {
    this.zoom = {};
    for (const n of this.root.querySelectorAll(".zoom-note")) n.hidden = true;
    this.renderAll(true);
  }

  seriesFor(chart, runId, key) {
    const z = this.zoom[chart.id];
    const src = z ? (z.data[runId] || {}) : (this.data[runId] || {});
    return src[key];
  }

  x(s, runId) {
    if (this.xmode === "step") return s.step;
    if (this.xmode === "relative") {
      const t0 = this.t0[runId] ?? (s.wall_time.length ? s.wall_time[0] : 0);
      return s.wall_time.map(t => (t - t0) / 60);
    }
    return s.wall_time.map(t => new Date(t * 1000));
  }

  // Compare with "group seeds": a group of runs differing only in seed drawn as its mean, with a
  // +/- std band, at the steps every run of the group logged (x from the group's first run).
  groupTraces(traces, chart, fmt) {
    const byId = Object.fromEntries(this.runs.map(r => [r.id, r]));
    for (const g of this.groups) {
      if (g.runs.length < 2) continue;
      const first = byId[g.runs[0]];
      chart.keys.forEach((key, ki) => {
        const all = g.runs.map(id => this.seriesFor(chart, id, key)).filter(s => s && s.step.length);
        if (all.length < 2) return;
        const maps = all.map(s => new Map(s.step.map((st, i) => [st, s.value[i]])));
        const base = all[0];
        const idx = base.step.map((st, i) => i).filter(i => maps.every(m => m.get(base.step[i]) != null));
        const pick = arr => idx.map(i => arr[i]);
        const sub = { step: pick(base.step), wall_time: pick(base.wall_time), value: [] };
        const mean = [], sd = [];
        for (const i of idx) {
          const vs = maps.map(m => m.get(base.step[i]));
          const mu = vs.reduce((a, b) => a + b, 0) / vs.length;
          mean.push(mu);
          sd.push(Math.sqrt(vs.reduce((a, b) => a + (b - mu) ** 2, 0) / (vs.length - 1)));
        }
        sub.value = mean;
        const x = this.x(sub, first.id), color = first.color, label = `${g.label}`;
        traces.push({ x, y: ema(mean.map((m, i) => m - sd[i]), this.smoothing), mode: "lines", line: { width: 0 },
          showlegend: false, hoverinfo: "skip", legendgroup: `g${first.id}${key}` });
        traces.push({ x, y: ema(mean.map((m, i) => m + sd[i]), this.smoothing), mode: "lines", line: { width: 0 },
          fill: "tonexty", fillcolor: rgba(color, 0.2), showlegend: false, hoverinfo: "skip", legendgroup: `g${first.id}${key}` });
        this.lineTraces(traces, sub, key, color, DASHES[ki % DASHES.length], `${label} mean`, fmt, first.id);
      });
    }
  }

  shortLabel(run) {
    const name = run.name.length > 18 ? run.name.slice(0, 17) + "…" : run.name;
    return `#${run.id} ${name}`;
  }

  traces(chart) {
    const traces = [];
    const fmt = this.xmode === "step" ? "step %{x}" : this.xmode === "relative" ? "%{x:.1f} min" : "%{x|%Y-%m-%d %H:%M:%S}";
    const grouped = new Set();
    if (this.compare && this.groupSeeds && chart.kind !== "heatmap" && chart.kind !== "band") {
      this.groupTraces(traces, chart, fmt);
      for (const g of this.groups) if (g.runs.length > 1) for (const id of g.runs) grouped.add(id);
    }
    this.runs.forEach((run, ri) => {
      if (grouped.has(run.id)) return;
      const runLabel = this.compare ? this.shortLabel(run) : "";
      if (chart.kind === "heatmap") {
        const h = this.hist[run.id];
        if (!h || !h.step.length) return;
        const nb = h.counts[0].length, width = (h.hi - h.lo) / nb;
        const y = Array.from({ length: nb }, (_, i) => h.lo + (i + 0.5) * width);
        // Share of the step's advantages per bin (rows summed over downsampled steps compare fairly).
        const z = y.map((_, bi) => h.counts.map(row => { const t = row.reduce((a, b) => a + b, 0); return t ? row[bi] / t : 0; }));
        traces.push({ type: "heatmap", x: h.step, y, z, colorscale: "Viridis", colorbar: { title: "share", thickness: 10 },
          hovertemplate: "step %{x}<br>advantage %{y:.2f}<br>share %{z:.3f}<extra></extra>" });
        return;
      }
      if (chart.kind === "band") {
        const color = this.compare ? run.color : KEY_COLORS[0];
        const mid = this.seriesFor(chart, run.id, chart.mid);
        const lo = this.seriesFor(chart, run.id, chart.lo), hi = this.seriesFor(chart, run.id, chart.hi);
        if (lo && hi) {
          traces.push({ x: this.x(lo, run.id), y: ema(lo.value, this.smoothing), mode: "lines", line: { width: 0.5, color: rgba(color, 0.4) },
            name: `${runLabel} ${chart.lo}`.trim(), legendgroup: `${run.id}band`, showlegend: false,
            hovertemplate: `${chart.lo} %{y:.6g}<extra>${runLabel}</extra>` });
          traces.push({ x: this.x(hi, run.id), y: ema(hi.value, this.smoothing), mode: "lines", line: { width: 0.5, color: rgba(color, 0.4) },
            fill: "tonexty", fillcolor: rgba(color, 0.12), name: `${runLabel} ${chart.lo}…${chart.hi}`.trim(),
            legendgroup: `${run.id}band`, hovertemplate: `${chart.hi} %{y:.6g}<extra>${runLabel}</extra>` });
        }
        if (chart.std && mid) {
          const sd = this.seriesFor(chart, run.id, chart.std);
          if (sd && sd.step.length === mid.step.length) {
            const up = mid.value.map((v, i) => v === null || sd.value[i] === null ? null : v + sd.value[i]);
            const dn = mid.value.map((v, i) => v === null || sd.value[i] === null ? null : v - sd.value[i]);
            traces.push({ x: this.x(mid, run.id), y: ema(dn, this.smoothing), mode: "lines", line: { width: 0 }, showlegend: false,
              legendgroup: `${run.id}std`, hoverinfo: "skip" });
            traces.push({ x: this.x(mid, run.id), y: ema(up, this.smoothing), mode: "lines", line: { width: 0 }, fill: "tonexty",
              fillcolor: rgba(color, 0.25), name: `${runLabel} ±std`.trim(), legendgroup: `${run.id}std`, hoverinfo: "skip" });
          }
        }
        if (mid) this.lineTraces(traces, mid, chart.mid, color, "solid", runLabel, fmt, run.id);
        return;
      }
      chart.keys.forEach((key, ki) => {
        const s = this.seriesFor(chart, run.id, key);
        if (!s || !s.step.length) return;
        const color = this.compare ? run.color : KEY_COLORS[ki % KEY_COLORS.length];
        const dash = this.compare ? DASHES[ki % DASHES.length] : "solid";
        this.lineTraces(traces, s, key, color, dash, runLabel, fmt, run.id);
      });
    });
    if (this.compare && chart.kind === "band") for (const t of traces) t.showlegend = false;  // colours: the run legend
    if (this.compare && chart.kind === "lines") {
      // Compact legend: colour is the run (the run legend above the charts), dash is the key; the
      // chart's legend lists its keys once, not runs x keys.
      const drawn = new Set(traces.map(t => t.meta).filter(Boolean));
      for (const t of traces) t.showlegend = false;
      if (chart.keys.length > 1) chart.keys.forEach((key, ki) => {
        if (!drawn.has(key)) return;
        traces.push({ x: [null], y: [null], mode: "lines", name: key, hoverinfo: "skip", showlegend: true,
          line: { color: "#555", width: 1.5, dash: DASHES[ki % DASHES.length] } });
      });
    }
    return traces;
  }

  lineTraces(traces, s, key, color, dash, runLabel, fmt, runId) {
    const name = runLabel ? `${runLabel} · ${key}` : key;
    const x = this.x(s, runId);
    const marker = s.step.length < 3 ? "lines+markers" : "lines";
    if (this.smoothing > 0) {
      // Raw values stay visible (faint) and hoverable: hover always shows exact values.
      traces.push({ x, y: s.value, mode: marker, line: { color: rgba(color, 0.25), width: 1, dash }, name: `${name} (raw)`,
        showlegend: false, meta: key, hovertemplate: `${fmt}<br>${key} %{y:.6g}<extra>${runLabel}</extra>` });
      traces.push({ x, y: ema(s.value, this.smoothing), mode: "lines", line: { color, width: 1.8, dash }, name, meta: key,
        hovertemplate: `${key} (smoothed) %{y:.6g}<extra>${runLabel}</extra>` });
    } else {
      traces.push({ x, y: s.value, mode: marker, line: { color, width: 1.5, dash }, name, meta: key,
        hovertemplate: `${fmt}<br>${key} %{y:.6g}<extra>${runLabel}</extra>` });
    }
  }

  layout(chart, resetView, traces, logInfo) {
    const shapes = [], annotations = [];
    if (chart.ref === "tau") {
      // One label per distinct tau (runs sharing it listed together), spread along the top edge of
      // the line so that close values of several runs do not print over each other.
      const byTau = new Map();
      this.runs.forEach(run => {
        if (run.tau === null || run.tau === undefined) return;
        if (!byTau.has(run.tau)) byTau.set(run.tau, []);
        byTau.get(run.tau).push(run);
        shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: run.tau, y1: run.tau,
          line: { color: this.compare ? run.color : "#c92a2a", width: 1.5, dash: "dash" } });
      });
      [...byTau.entries()].sort((a, b) => a[0] - b[0]).forEach(([tau, runs], i) => {
        const text = this.compare ? `tau ${tau} (${runs.map(r => `#${r.id}`).join(", ")})` : `tau = ${tau}`;
        annotations.push({ xref: "paper", x: 1 - (i % 4) * 0.25, xanchor: "right", y: tau, yanchor: "bottom",
          showarrow: false, text, bgcolor: "rgba(255,255,255,0.7)",
          font: { size: 11, color: this.compare && runs.length === 1 ? runs[0].color : "#c92a2a" } });
      });
    }
    const z = this.zoom[chart.id];
    // Axis ranges are ours: autorange on every redraw (live points rescale the chart) unless the
    // user zoomed. A per-redraw axis uirevision stops Plotly from keeping an earlier range, e.g. the
    // [-1, 4] of a chart first drawn without data or the padded range of a first single point.
    const axisRev = `${this.xmode}-${this.revision + 1}`;
    // ticklabeloverflow "allow": Plotly's default hides labels past the div, measuring every label
    // on every draw (a quarter of the draw time); the margins below keep the labels inside anyway.
    const xaxis = { type: this.xmode === "wall" ? "date" : "linear", automargin: true, uirevision: axisRev,
      ticklabeloverflow: "allow", title: { text: X_TITLES[this.xmode], font: { size: 11 }, standoff: 4 } };
    if (chart.kind === "heatmap") { xaxis.title.text = "step"; xaxis.type = "linear"; }  // its x is always the step
    if (z && z.xrange && (chart.kind !== "heatmap" || this.xmode === "step")) { xaxis.range = z.xrange; xaxis.autorange = false; }
    else { xaxis.autorange = true; }
    const log = this.logScale && chart.kind !== "heatmap" && !(logInfo && logInfo.allHidden);
    const yaxis = { type: log ? "log" : "linear", automargin: true, exponentformat: "e", uirevision: axisRev, ticklabeloverflow: "allow",
      title: chart.y ? { text: chart.y, font: { size: 11 }, standoff: 4 } : undefined, autorange: true };
    const flat = this.constantValue(traces);
    if (z && z.yrange) { yaxis.range = z.yrange; yaxis.autorange = false; }
    else if (flat !== null && !log) {
      // A constant series (a fixed learning rate) would sit on a -1..1 axis: centre it on its value.
      const pad = flat === 0 ? 1 : Math.abs(flat) * 0.5;
      yaxis.range = [flat - pad, flat + pad]; yaxis.autorange = false;
    }
    const names = traces.filter(t => t.showlegend !== false && t.type !== "heatmap").map(t => t.name || "");
    // Short labels, several per row; past MAX_LEGEND entries the page's run legend (colour swatches
    // above the charts) says which line is which, instead of a legend that scrolls.
    const legendShown = names.length > 1 && names.length <= MAX_LEGEND;
    // Margins that already hold the axis titles, tick labels (the x axis' last label, the y axis' top
    // one, dates on two lines), the heatmap's colour bar and the legend under the x axis: automargin
    // (kept for unusually wide labels) then finds nothing to push, and Plotly does not draw the chart
    // a second time. Legend entries get equal widths (as many a row as the longest name allows), so
    // the page knows the legend's rows; it sits a fixed number of pixels under the plot.
    const heat = chart.kind === "heatmap";
    const axisPx = heat ? 48 : this.xmode === "wall" ? 56 : 40;
    // A date axis' last tick label is wider than a step number and can overhang the right edge
    // (seen pushing that margin to 34 px, depending on the time of day): room for it.
    const margin = { l: 64, r: heat ? 90 : this.xmode === "wall" ? 40 : 28, t: 22, b: axisPx };
    let perRow = 1;
    if (legendShown) {
      const el = document.getElementById(`chart-${chart.id}`);
      const plotPx = ((el && el.clientWidth) || 440) - margin.l - margin.r;
      const entryPx = 40 + 6.5 * Math.max(...names.map(n => n.length));  // line sample + 11 px text
      perRow = Math.max(1, Math.min(3, Math.floor(plotPx / entryPx)));
      margin.b += 19 * Math.ceil(names.length / perRow) + 18;
    }
    return {
      height: margin.t + PLOT_PX + margin.b, margin, hovermode: "x unified", showlegend: legendShown,
      legend: { orientation: "h", yanchor: "top", y: -(axisPx - 4) / PLOT_PX, font: { size: 11 },
        entrywidth: 1 / perRow, entrywidthmode: "fraction", traceorder: "normal" },
      xaxis, yaxis, shapes, annotations,
      // Keeps legend clicks across live redraws; a new value resets them (x mode change).
      uirevision: resetView ? `${this.xmode}-${Date.now()}` : this.xmode,
      paper_bgcolor: "#fff", plot_bgcolor: "#fff",
      // Live points are pushed into the same arrays: a new datarevision makes Plotly.react redraw them.
      datarevision: ++this.revision,
    };
  }

  constantValue(traces) {
    let lo = Infinity, hi = -Infinity;
    for (const t of traces) {
      if (t.type === "heatmap" || !t.y) return null;
      for (const v of t.y) if (v !== null && v !== undefined) { if (v < lo) lo = v; if (v > hi) hi = v; }
    }
    return lo !== Infinity && hi - lo <= 1e-12 * Math.max(1, Math.abs(hi)) ? hi : null;
  }

  // Log scale: values <= 0 cannot be drawn. They become gaps, and the chart says how many of which
  // key; a chart with nothing positive stays linear and says so.
  applyLog(chart, traces) {
    if (!this.logScale || chart.kind === "heatmap") return null;
    const hiddenBy = new Map();
    let shown = 0;
    for (const t of traces) {
      if (!t.y || t.y.length === 1 && t.y[0] === null) continue;
      const counted = t.line && t.line.width !== 0 && !(t.name || "").endsWith("(raw)") && t.hoverinfo !== "skip";
      let n = 0;
      const y = t.y.map(v => { if (v !== null && v !== undefined && v <= 0) { n++; return null; } if (v !== null && v !== undefined) shown++; return v; });
      if (n && counted) hiddenBy.set(t.meta || t.name, (hiddenBy.get(t.meta || t.name) || 0) + n);
      t._ylin = t.y; t.y = y;
    }
    const hidden = [...hiddenBy.values()].reduce((a, b) => a + b, 0);
    if (!shown && hidden) for (const t of traces) if (t._ylin) t.y = t._ylin;
    return { hidden, keys: [...hiddenBy.keys()], allHidden: !shown && hidden > 0 };
  }

  render(chart, resetView = false) {
    if (!chart) return Promise.resolve();
    const el = document.getElementById(`chart-${chart.id}`);
    if (!el) return Promise.resolve();
    const traces = this.traces(chart);
    const card = el.closest(".chart-card");
    card.classList.toggle("empty", traces.length === 0);
    card.dataset.points = String(this.pointCount(chart.id));
    if (card.hidden && card.dataset.points !== "0") card.hidden = card.closest("section").hidden = false; // before drawing: Plotly sizes to the shown card
    const logInfo = this.applyLog(chart, traces);
    const note = card.querySelector(".log-note");
    if (note) {
      note.hidden = !(logInfo && logInfo.hidden);
      if (logInfo && logInfo.hidden) {
        note.textContent = logInfo.allHidden ? "all values ≤ 0: linear axis"
          : `log: ${logInfo.hidden.toLocaleString()} value${logInfo.hidden > 1 ? "s" : ""} ≤ 0 not drawn`;
        note.title = `Not drawn on the log axis: values ≤ 0 of ${logInfo.keys.join(", ")}`;
      }
    }
    // A chart that never had data shows "no data yet" (charts.css) without a Plotly figure: nine
    // empty axes of a queued run cost as much to draw as nine charts. Its first points draw it.
    if (!traces.length && !el._fullLayout) return Promise.resolve();
    const done = Plotly.react(el, traces, this.layout(chart, resetView, traces, logInfo),
      { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["toImage", "lasso2d", "select2d"] });
    if (!el.dataset.bound) {
      el.dataset.bound = "1";
      el.on("plotly_relayout", ev => this.onRelayout(chart, ev));
    }
    return done;
  }

  // Zoom: fetch the visible range again, at full resolution for that range (with sync on, for every
  // chart of the page at once: one request for all their keys).
  async onRelayout(chart, ev) {
    if (!chart.keys.length && chart.kind !== "heatmap") return;
    if (ev["xaxis.autorange"] || ev["yaxis.autorange"]) {
      if (this.sync) { this.resetZoom(); return; }
      delete this.zoom[chart.id];
      document.querySelector(`.chart-card[data-chart="${chart.id}"] .zoom-note`).hidden = true;
      this.render(chart, true);
      return;
    }
    const a = ev["xaxis.range[0]"], b = ev["xaxis.range[1]"];
    const ya = ev["yaxis.range[0]"], yb = ev["yaxis.range[1]"];
    if (a === undefined || b === undefined) {
      // A y-only zoom: keep it, no new data needed.
      if (ya !== undefined && yb !== undefined && this.zoom[chart.id]) { this.zoom[chart.id].yrange = [ya, yb]; }
      else if (ya !== undefined && yb !== undefined) {
        this.zoom[chart.id] = { xrange: null, yrange: [ya, yb], data: this.data };
      }
      return;
    }
    const [lo, hi] = this.toSteps(chart, a, b);
    if (!(hi >= lo)) return;
    const targets = this.sync ? this.charts.filter(c => c.kind !== "heatmap" || this.xmode === "step") : [chart];
    const keys = [...new Set(targets.flatMap(c => c.keys))];
    const width = document.getElementById(`chart-${chart.id}`).clientWidth || 800;
    let series = {};
    if (keys.length) {
      const params = { runs: this.runs.map(r => r.id).join(","), keys: keys.join(","),
        step_min: String(lo), step_max: String(hi), max_points: String(Math.max(200, width * 2)) };
      const resp = await fetch(this.seriesUrl(params), { credentials: "same-origin" });
      if (!resp.ok) return;
      series = (await resp.json()).series;
    }
    for (const c of targets) {
      this.zoom[c.id] = { range: [lo, hi], xrange: [a, b], data: series,
        yrange: c === chart && ya !== undefined && yb !== undefined ? [ya, yb] : undefined };
      const card = document.querySelector(`.chart-card[data-chart="${c.id}"]`);
      if (card) card.querySelector(".zoom-note").hidden = false;
      this.render(c);
    }
  }

  toSteps(chart, a, b) {
    if (this.xmode === "step") return [Math.floor(a), Math.ceil(b)];
    // Time range -> step range through the loaded history of the chart's series.
    let lo = Infinity, hi = -Infinity;
    for (const r of this.runs) for (const k of chart.keys) {
      const rel = this.xmode === "relative", t0 = this.t0[r.id] || 0;
      const ta = rel ? t0 + a * 60 : new Date(a).getTime() / 1000, tb = rel ? t0 + b * 60 : new Date(b).getTime() / 1000;
      const s = (this.data[r.id] || {})[k];
      if (!s || !s.step.length) continue;
      const i = Math.max(0, lowerBound(s.wall_time, ta) - 1), j = Math.min(s.step.length - 1, lowerBound(s.wall_time, tb));
      lo = Math.min(lo, s.step[i]); hi = Math.max(hi, s.step[j]);
    }
    return [lo, hi];
  }
}

// Toolbar wiring shared by run and compare pages: the controls start from the board's settings
// (URL, saved dashboard) and every change goes back to the URL.
export function bindToolbar(board, toolbar) {
  const smooth = toolbar.querySelector("[name=smoothing]");
  const smoothOut = toolbar.querySelector(".smoothing-value");
  if (smooth) {
    smooth.value = String(board.smoothing);
    if (smoothOut) smoothOut.textContent = Number(smooth.value).toFixed(2);
    smooth.addEventListener("input", () => {
      if (smoothOut) smoothOut.textContent = Number(smooth.value).toFixed(2);
      board.setSmoothing(Number(smooth.value));
    });
  }
  const log = toolbar.querySelector("[name=logscale]");
  if (log) { log.checked = board.logScale; log.addEventListener("change", () => board.setLog(log.checked)); }
  const xmode = toolbar.querySelector("[name=xmode]");
  if (xmode) { xmode.value = board.xmode; xmode.addEventListener("change", () => board.setXMode(xmode.value)); }
  const sync = toolbar.querySelector("[name=synczoom]");
  if (sync) { sync.checked = board.sync; sync.addEventListener("change", () => board.setSync(sync.checked)); }
  const seeds = toolbar.querySelector("[name=groupseeds]");
  if (seeds) seeds.addEventListener("change", () => board.setGroupSeeds(seeds.checked));
}
