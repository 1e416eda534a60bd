// Status, progress, ETA and queue position of runs on a page, updated from stream entries and
// polled states. Markup: an element [data-run-state="<id>"] holding .status, .progress > span,
// .step-text, .eta, .queue-pos, .tau-hint, [data-show-if="<statuses>"] (each optional); a flash
// message with the class run-queued-<id> ("Run #N is queued.") goes once the run leaves the queue.

import { isTerminal } from "./live.js";

const QUEUE_POLL_MS = 5000;
const REFRESH_MIN_MS = 5000;

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
    if (state.status) {
      el.dataset.status = state.status;
      // Actions the status allows (cancel while queued or running, resume once failed or cancelled).
      for (const a of el.querySelectorAll("[data-show-if]")) a.hidden = !a.dataset.showIf.split(" ").includes(state.status);
    }
    showQueue(el, state);
    const error = el.querySelector(".run-error");
    if (error && state.error !== undefined) { error.textContent = state.error; error.hidden = !state.error; }
    if (state.step !== undefined) showProgress(el, state.step, state.total_steps, state.eta_s, state.status);
    const device = el.querySelector(".device");
    if (device && state.device) { device.querySelector("b").textContent = state.device; device.hidden = false; }
  }
  if (state.status && state.status !== "queued") dropQueuedMessage(runId);
}

// "Run #N is queued." (a flash message of the launch or resume) is not true any more.
function dropQueuedMessage(runId) {
  for (const m of document.querySelectorAll(`.messages li.run-queued-${runId}`)) {
    const list = m.parentElement;
    m.remove();
    if (list && !list.children.length) list.remove();
  }
}

// "queue position N on <queue>" while queued; a status event carries no position: keep the last.
function showQueue(el, state) {
  const q = el.querySelector(".queue-pos");
  if (!q || !state.status) return;
  if (state.status !== "queued") { q.hidden = true; return; }
  if (!state.queue_position) return;
  const [pos, queue] = q.querySelectorAll("b");
  pos.textContent = String(state.queue_position);
  if (queue && state.queue) queue.textContent = state.queue;
  q.hidden = false;
}

function statusOf(runId) { const el = els(runId)[0]; return el ? el.dataset.status : undefined; }

// Where fresh run states are read: the metrics JSON asked for no keys (set once by the page).
let seriesUrl = null;
export function readStatesFrom(url) { seriesUrl = url; }

const lastRefresh = new Map(); // runId -> time of the last request
// Re-read a run's state from the server, at most every REFRESH_MIN_MS: what the run's own stream
// does not tell (its total steps once the trainer starts, its place in the queue).
export async function refreshState(runId, force = false) {
  const now = Date.now();
  if (!seriesUrl || (!force && now - (lastRefresh.get(runId) || 0) < REFRESH_MIN_MS)) return;
  lastRefresh.set(runId, now);
  try {
    const params = new URLSearchParams({ runs: String(runId), keys: "" });
    const resp = await fetch(`${seriesUrl}?${params}`, { credentials: "same-origin" });
    if (resp.ok) showState(runId, (await resp.json()).runs[runId]);
  } catch (e) { /* offline for a moment: a later call tries again */ }
}

// A queued run moves up as the runs ahead of it start or are cancelled: re-read its state until
// it leaves the queue.
export function followQueue(runId) {
  const tick = async () => {
    if (statusOf(runId) !== "queued") return;
    await refreshState(runId);
    if (statusOf(runId) === "queued") setTimeout(tick, QUEUE_POLL_MS);
  };
  setTimeout(tick, QUEUE_POLL_MS);
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
  // A later entry of the same step (the worker's system sample) keeps the time the step was stored.
  if (!prev || entry.step > prev.step) rates.set(runId, { t: entry.t, step: entry.step, secPerStep: spp });
  const rect = entry.scalars ? entry.scalars[RECTIFIED] : undefined;
  if (typeof rect === "number") noteRectified(runId, entry.step, rect);
  for (const el of els(runId)) {
    const total = Number(el.dataset.total || 0);
    if (!total) refreshState(runId); // opened before the trainer started: its total is in the database now
    if (entry.step < Number(el.dataset.step || 0)) continue;
    const badge = el.querySelector(".status");
    const status = badge ? badge.className.replace(/.*status-/, "") : "running";
    const eta = spp !== null && total ? spp * (total - entry.step) : (el.dataset.eta ? Number(el.dataset.eta) : null);
    showProgress(el, entry.step, total, eta, status);
  }
}

// A lifecycle event from the stream {status, step, message, device (a start)}; other events on the
// stream (alerts, evaluations) carry no status and change nothing here. At the end, the final step,
// total and error are read from the server.
export function onStatus(runId, event) {
  if (!event.status) return;
  showState(runId, { status: event.status, step: event.step, device: event.device,
    total_steps: Number((els(runId)[0] || { dataset: {} }).dataset.total || 0), eta_s: null });
  if (isTerminal(event.status)) refreshState(runId, true);
}

// tau has no effect when (nearly) every token is rectified, pi < tau: the run page says so once
// the share stays near 1 (webapp.runs.charts.tau_hint tells the same at page load).
const RECTIFIED = "dcr/rectified_frac";
export const TAU_HINT_MIN = 0.95, TAU_HINT_STEPS = 3;
const recentRect = new Map(); // runId -> [last values]
function noteRectified(runId, step, value) {
  const recent = (recentRect.get(runId) || []).concat([value]).slice(-TAU_HINT_STEPS);
  recentRect.set(runId, recent);
  const stuck = recent.length >= TAU_HINT_STEPS && recent.every(v => v >= TAU_HINT_MIN);
  for (const el of els(runId)) {
    const hint = el.querySelector(".tau-hint");
    if (!hint) continue;
    if (stuck) {
      hint.querySelector(".tau-hint-share").textContent = `${(Math.min(...recent) * 100).toFixed(0)}%`;
      hint.hidden = false;
    } else if (recent.length >= TAU_HINT_STEPS) hint.hidden = true;
  }
}

export function liveNote(el, mode, detail) {
  if (!el) return;
  el.hidden = false;
  el.className = `live-note live-${mode}`;
  el.textContent = mode === "sse" ? "● Live: following the run's stream"
    : mode === "polling" ? `Live stream unavailable (${detail || "no connection"}): polling the metrics every 5 s`
    : "Not live: no run on this page is training";
}

// At load: a page rendered after its run left the queue.
for (const el of document.querySelectorAll("[data-run-state]")) {
  if (el.dataset.status && el.dataset.status !== "queued") dropQueuedMessage(el.dataset.runState);
}

// Rows of a table ([data-run-state] each) that follow their active runs over one SSE connection
// (webapp/runs/views/table.py table_stream). live: {url, series_url, runs: [ids], positions:
// {id: stream entry id}, team?, team_position?} (views/table.py run_list). With a team, the
// stream also says when a run of the team is created: onCreated(runId). Returns the EventSource
// (null when there is nothing to follow), so a caller can close it and follow a new set of rows.
export function followRows(live, note, onCreated = null) {
  readStatesFrom(live.series_url); // a row learns its total steps, and its final state at the end
  const team = onCreated && live.team ? String(live.team) : "";
  if (!live.runs.length && !team) return null;
  const url = new URL(live.url, window.location.href);
  url.searchParams.set("runs", live.runs.join(","));
  const since = Object.entries(live.positions).map(([id, pos]) => `${id}:${pos}`);
  if (team) { url.searchParams.set("team", team); since.push(`t${team}:${live.team_position}`); }
  url.searchParams.set("since", since.join(","));
  const following = new Set(live.runs.map(String));
  const es = new EventSource(url.toString(), { withCredentials: true });
  es.addEventListener("open", () => { if (following.size) liveNote(note, "sse"); }); // only new runs: no note
  es.addEventListener("metrics", ev => { const e = JSON.parse(ev.data); onEntry(e.run, e); });
  es.addEventListener("status", ev => {
    const e = JSON.parse(ev.data);
    onStatus(e.run, e);
    if (isTerminal(e.status)) {
      for (const el of els(e.run)) { const eta = el.querySelector(".eta"); if (eta) eta.textContent = ""; }
      following.delete(String(e.run));
    }
    if (!following.size) { if (!team) es.close(); liveNote(note, "idle"); }
  });
  if (team) es.addEventListener("created", ev => onCreated(JSON.parse(ev.data).run));
  es.addEventListener("closed", () => es.close());
  es.addEventListener("error", () => {
    if (es.readyState === EventSource.CLOSED && note) { note.hidden = false; note.textContent = "Live updates stopped: reload to refresh."; }
  });
  return es;
}
