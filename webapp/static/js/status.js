// Status, progress and ETA of runs on a page, updated from stream entries and polled states.
// Markup: an element [data-run-state="<id>"] holding .status, .progress > span, .step-text, .eta.

const rates = new Map(); // runId -> {t, step, secPerStep}

export function formatEta(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${r}s` : `${r}s`;
}

function els(runId) { return document.querySelectorAll(`[data-run-state="${runId}"]`); }

export function showState(runId, state) {
  for (const el of els(runId)) {
    const badge = el.querySelector(".status");
    if (badge && state.status) {
      badge.className = `status status-${state.status}`;
      badge.textContent = state.status_label || state.status.charAt(0).toUpperCase() + state.status.slice(1);
    }
    if (state.step !== undefined) showProgress(el, state.step, state.total_steps, state.eta_s, state.status);
  }
}

function showProgress(el, step, total, eta, status) {
  const bar = el.querySelector(".progress > span");
  const frac = total ? Math.min(1, step / total) : 0;
  if (bar) bar.style.width = `${(frac * 100).toFixed(1)}%`;
  const text = el.querySelector(".step-text");
  if (text) text.textContent = total ? `step ${step} / ${total} (${(frac * 100).toFixed(0)}%)` : `step ${step}`;
  const etaEl = el.querySelector(".eta");
  if (etaEl) etaEl.textContent = status === "running" && eta ? `ETA ${formatEta(eta)}` : "";
  el.dataset.step = String(step);
  if (eta) el.dataset.eta = String(eta);
  if (total) el.dataset.total = String(total);
}

// A metrics entry {step, t}: progress moves, ETA from the recent seconds per step.
export function onEntry(runId, entry) {
  const prev = rates.get(runId);
  let spp = prev ? prev.secPerStep : null;
  if (prev && entry.step > prev.step && entry.t > prev.t) {
    const inst = (entry.t - prev.t) / (entry.step - prev.step);
    // Steps flushed together carry nearly the same time: ignore those, keep the last good rate.
    if (inst > 1e-3) spp = spp === null ? inst : 0.8 * spp + 0.2 * inst;
  }
  rates.set(runId, { t: entry.t, step: entry.step, secPerStep: spp });
  for (const el of els(runId)) {
    const total = Number(el.dataset.total || 0);
    if (entry.step < Number(el.dataset.step || 0)) continue;
    const badge = el.querySelector(".status");
    const status = badge ? badge.className.replace(/.*status-/, "") : "running";
    const eta = spp !== null && total ? spp * (total - entry.step) : (el.dataset.eta ? Number(el.dataset.eta) : null);
    showProgress(el, entry.step, total, eta, status);
  }
}

// A lifecycle event from the stream {status, step, message}.
export function onStatus(runId, event) {
  showState(runId, { status: event.status, step: event.step,
    total_steps: Number((els(runId)[0] || { dataset: {} }).dataset.total || 0), eta_s: null });
}

export function liveNote(el, mode, detail) {
  if (!el) return;
  el.hidden = false;
  el.className = `live-note live-${mode}`;
  el.textContent = mode === "sse" ? "● Live: following the run's stream"
    : mode === "polling" ? `Live stream unavailable (${detail || "no connection"}): polling the metrics every 5 s`
    : "Not live: no run on this page is training";
}
