// Run page "Evaluation" tab (issue 17): accuracy vs step per benchmark (dashed reference lines),
// pass@k curve of the latest evaluated checkpoint, evaluations in flight, and the per-problem view
// (solved by the run and not by the base model, and the reverse).
// Data: GET page.urls.evaluation[?suite=ID] (polled while the tab is open, so results that land
// show up without a reload) and GET page.urls.eval_problems?suite=&benchmark=&step=.
import { runColor } from "./charts.js";
import { esc } from "./groups.js";

const POLL_MS = 4000;
const REF_COLORS = ["#868e96", "#e8590c", "#5f3dc4", "#2b8a3e", "#c2255c", "#1098ad"];

const PLOT_CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

// One accuracy chart: the run's points and each reference value of this benchmark as a dashed line.
export function accuracyFigure(name, series, refs) {
  const traces = [{ x: series.step, y: series.value, mode: "lines+markers",
    name, line: { color: runColor(0), width: 2 }, hovertemplate: `step %{x}<br>${esc(name)} %{y:.2f}%<extra></extra>` }];
  const shapes = [], annotations = [];
  (refs || []).forEach((r, i) => {
    const color = REF_COLORS[i % REF_COLORS.length];
    shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: r.value, y1: r.value,
      line: { color, width: 1.5, dash: "dash" } });
    annotations.push({ xref: "paper", x: 1, xanchor: "right", y: r.value, yanchor: "bottom", showarrow: false,
      text: `${esc(r.label)} ${Number(r.value).toFixed(1)}`, font: { size: 10, color } });
  });
  const layout = { height: 260, margin: { l: 50, r: 15, t: 10, b: 30 }, showlegend: false, hovermode: "closest",
    xaxis: { title: { text: "step" }, automargin: true, rangemode: "tozero" },
    yaxis: { title: { text: "accuracy %" }, automargin: true, rangemode: "tozero" },
    shapes, annotations, paper_bgcolor: "#fff", plot_bgcolor: "#fff" };
  return { traces, layout };
}

export class EvalTab {
  constructor(panel, page) {
    this.panel = panel;
    this.page = page;
    this.suite = null;
    this.timer = null;
    this.open_ = false;
    this.data = null;
    this.charts = panel.querySelector(".eval-charts");
    this.passk = panel.querySelector(".eval-passk");
    this.jobs = panel.querySelector(".eval-jobs");
    this.suiteSelect = panel.querySelector("[name=eval-suite]");
    this.benchSelect = panel.querySelector("[name=diff-benchmark]");
    this.stepSelect = panel.querySelector("[name=diff-step]");
    this.diff = panel.querySelector(".eval-diff");
    this.refSelect = panel.querySelector("[name=eval-refs]");
    this.refSelect.addEventListener("change", () => this.render());
    this.suiteSelect.addEventListener("change", () => { this.suite = this.suiteSelect.value; this.data = null; this.load(); });
    this.benchSelect.addEventListener("change", () => this.loadDiff());
    this.stepSelect.addEventListener("change", () => this.loadDiff());
  }

  open() {
    this.open_ = true;
    this.load();
  }

  close() {
    this.open_ = false;
    clearTimeout(this.timer);
    this.timer = null;
  }

  url() {
    const q = this.suite ? `?suite=${encodeURIComponent(this.suite)}` : "";
    return this.page.urls.evaluation + q;
  }

  async load() {
    clearTimeout(this.timer);
    try {
      const resp = await fetch(this.url(), { credentials: "same-origin" });
      if (!resp.ok) throw new Error(`evaluation data: HTTP ${resp.status}`);
      const text = await resp.text();
      const changed = text !== this.lastText;
      this.lastText = text;
      this.data = JSON.parse(text);
      if (changed) this.render();
      this.panel.dataset.ready = "1";
    } catch (e) {
      this.charts.innerHTML = `<p class="error">${esc(e.message)}</p>`;
    }
    // Keep polling while the tab is shown: a result that lands appears within a few seconds.
    if (this.open_) this.timer = setTimeout(() => this.load(), POLL_MS);
  }

  render() {
    const d = this.data;
    this.suite = d.suite ? String(d.suite.id) : null;
    this.suiteSelect.innerHTML = d.suites.map(s =>
      `<option value="${s.id}" ${this.suite === String(s.id) ? "selected" : ""}>${esc(s.label)}</option>`).join("");
    this.renderJobs(d.evaluations);
    this.renderRefChoices(d.references);
    this.renderCharts(d.accuracy, this.chosenRefs(d.references));
    this.renderPassk(d.pass_at_k);
    this.renderDiffChoices(d);
  }

  // Which reference rows draw dashed lines: those of the run's base model (by name) by default.
  renderRefChoices(references) {
    const models = [...new Set(Object.values(references).flat().map(r => r.model))].sort();
    const keep = this.refSelect.value || "match";
    this.refSelect.innerHTML = [["match", "of this run's base model"], ["all", "all"], ["none", "none"]]
      .concat(models.map(m => [`model:${m}`, m]))
      .map(([v, l]) => `<option value="${esc(v)}" ${v === keep ? "selected" : ""}>${esc(l)}</option>`).join("");
  }

  chosenRefs(references) {
    const choice = this.refSelect.value || "match";
    const base = (this.data.base_model || "").replace(/\/+$/, "").split("/").pop().toLowerCase();
    const keep = r => choice === "all" || (choice === "match" ? !!base && (base.includes(r.model.toLowerCase()) ||
      r.model.toLowerCase().includes(base)) : choice === `model:${r.model}`);
    return Object.fromEntries(Object.entries(references).map(([b, refs]) => [b, refs.filter(keep)]));
  }

  renderJobs(evals) {
    if (!evals.length) { this.jobs.innerHTML = `<p class="muted">No evaluations of this run with this suite yet: use “Evaluate…” above.</p>`; return; }
    this.jobs.innerHTML = `<table class="table eval-jobs-table"><thead><tr><th>#</th><th>checkpoint</th><th>prompt format</th><th>status</th>
      <th>progress</th><th>created</th></tr></thead><tbody>${evals.map(e => `<tr data-eval="${e.id}">
      <td>${e.id}</td><td>${e.step === 0 ? "base model" : `step ${e.step}`}</td><td class="small prompt-format">${esc(e.prompt || "")}</td>
      <td><span class="status status-${esc(e.status)}">${esc(e.status)}</span>${e.error ? ` <span class="error small">${esc(e.error)}</span>` : ""}</td>
      <td class="num">${e.total ? `${e.done} / ${e.total}` : "–"}</td><td>${esc(e.created)}</td></tr>`).join("")}</tbody></table>`;
  }

  renderCharts(accuracy, references) {
    const names = Object.keys(accuracy);
    if (!names.length) {
      this.charts.innerHTML = `<p class="muted">No results yet.</p>`;
      return;
    }
    // Rebuild only when the set of benchmarks changes; otherwise Plotly.react updates in place.
    const key = names.join("\u0000");
    if (this.charts.dataset.key !== key) {
      this.charts.dataset.key = key;
      this.charts.innerHTML = names.map((n, i) => `<div class="chart-card" data-chart="acc-${i}" data-benchmark="${esc(n)}">
        <div class="chart-head"><span class="chart-title">${esc(n)}: accuracy vs step</span></div>
        <div class="chart" id="acc-${i}"></div></div>`).join("");
    }
    for (const [i, n] of names.entries()) {
      const el = document.getElementById(`acc-${i}`);
      const { traces, layout } = accuracyFigure(n, accuracy[n], references[n]);
      el.closest(".chart-card").dataset.points = String(accuracy[n].step.length);
      Plotly.react(el, traces, layout, PLOT_CONFIG);
    }
  }

  renderPassk(passk) {
    const el = this.passk.querySelector(".chart");
    const title = this.passk.querySelector(".chart-title");
    if (!passk || !Object.keys(passk.benchmarks).length) {
      this.passk.hidden = true;
      return;
    }
    this.passk.hidden = false;
    title.textContent = `pass@k of ${passk.step === 0 ? "the base model" : `step ${passk.step}`} (latest evaluated checkpoint)`;
    const maxK = Math.max(...Object.values(passk.benchmarks).map(c => c.k[c.k.length - 1] || 1));
    const traces = Object.entries(passk.benchmarks).map(([n, c], i) => ({ x: c.k, y: c.value, name: n,
      mode: "lines+markers", line: { color: runColor(i), width: 2 }, hovertemplate: `pass@%{x} %{y:.2f}%<extra>${esc(n)}</extra>` }));
    Plotly.react(el, traces, { height: 280, margin: { l: 50, r: 15, t: 10, b: 30 }, hovermode: "closest",
      // Few k: one tick per k; many: a log axis (pass@k grows roughly with log k).
      xaxis: maxK >= 16 ? { title: { text: "k" }, type: "log", automargin: true } :
        { title: { text: "k" }, type: "linear", dtick: 1, automargin: true }, yaxis: { title: { text: "pass@k %" }, automargin: true },
      legend: { orientation: "h", y: -0.25 }, paper_bgcolor: "#fff", plot_bgcolor: "#fff" }, PLOT_CONFIG);
  }

  renderDiffChoices(d) {
    const benches = Object.keys(d.accuracy);
    const steps = [...new Set(d.evaluations.filter(e => e.status === "succeeded" && e.step > 0).map(e => e.step))].sort((a, b) => b - a);
    const keepB = this.benchSelect.value, keepS = this.stepSelect.value;
    this.benchSelect.innerHTML = benches.map(b => `<option ${b === keepB ? "selected" : ""}>${esc(b)}</option>`).join("");
    this.stepSelect.innerHTML = steps.map(s => `<option value="${s}" ${String(s) === keepS ? "selected" : ""}>step ${s}</option>`).join("");
    if (!benches.length || !steps.length) {
      this.diff.innerHTML = `<p class="muted">The per-problem view needs a finished evaluation of a checkpoint.</p>`;
      return;
    }
    if (this.benchSelect.value !== keepB || this.stepSelect.value !== keepS || !this.diff.dataset.loaded) this.loadDiff();
  }

  async loadDiff() {
    if (!this.benchSelect.value || !this.stepSelect.value) return;
    const q = new URLSearchParams({ suite: this.suite, benchmark: this.benchSelect.value, step: this.stepSelect.value });
    const resp = await fetch(`${this.page.urls.eval_problems}?${q}`, { credentials: "same-origin" });
    if (!resp.ok) { this.diff.innerHTML = `<p class="error">problems: HTTP ${resp.status}</p>`; return; }
    const body = await resp.json();
    this.diff.dataset.loaded = "1";
    if (!body.base) {
      this.diff.innerHTML = `<p class="muted">No finished evaluation of the base model with this suite: evaluate it
        (“Evaluate the base model” above) to see which problems training gained and lost.</p>`;
      return;
    }
    const section = (title, cls, list) => `<h3>${esc(title)} <span class="muted small">(${list.length})</span></h3>
      <div class="problem-list ${cls}">${list.map(p => renderProblem(p)).join("") || `<p class="muted">None.</p>`}</div>`;
    this.diff.innerHTML = section(`Solved by step ${body.step} and not by the base model`, "gained", body.solved_only_by_run) +
      section("Solved by the base model and not by this checkpoint", "lost", body.solved_only_by_base);
  }
}

// One side (run or base) of a problem as problem_diff gives it: {correct, k, responses, extracted, response_correct}.
function answers(label, side) {
  if (!side) return "";
  const responses = side.responses || [], extracted = side.extracted || [], ok = side.response_correct || [];
  return responses.map((text, i) => {
    const good = ok[i];
    const badge = good === undefined || good === null ? "" :
      `<span class="badge ${good ? "pos" : "neg"}">${good ? "correct" : "wrong"}</span>`;
    return `<div class="resp ${good ? "correct" : "wrong"}">
      <div class="resp-head"><span class="src-label">${esc(label)} sample ${i + 1}</span>${badge}
        <span class="muted small">extracted <code class="extracted">${esc(extracted[i] ?? "–")}</code></span></div>
      <pre class="answer">${esc(text)}</pre></div>`;
  }).join("");
}

export function renderProblem(p) {
  const count = s => s ? `${s.correct ?? "?"}/${s.k ?? "?"}` : "–";
  return `<article class="group-card problem-card" data-problem="${p.index}">
    <header><strong>problem ${p.index}</strong> <span class="muted small">run ${count(p.run)} correct ·
      base ${count(p.base)} correct</span></header>
    <div class="prompt"><span class="muted">prompt</span><pre>${esc(p.prompt)}</pre>
      <span class="muted">ground truth</span> <code class="ground-truth">${esc(p.ground_truth)}</code></div>
    <div class="responses">${answers("run", p.run)}${answers("base", p.base)}</div>
  </article>`;
}
