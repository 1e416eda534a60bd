// Live updates of running runs: Server-Sent Events from the run's Redis stream, resumed by the
// browser with Last-Event-ID; if the stream is unavailable, polling of the metrics JSON instead.

const POLL_MS = 5000;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export function isTerminal(status) { return TERMINAL.has(status); }

// Follow several runs. handlers: onEntry(runId, entry), onStatus(runId, event), onMode(mode, detail)
// where mode is "sse" | "polling" | "idle". Returns {stop()}.
export function followRuns(board, runs, streamUrls, positions, handlers) {
  const sources = new Map();
  let pollTimer = null;
  const active = new Set(runs.filter(r => r.state.active).map(r => r.id));
  const mode = { value: "idle" };

  function setMode(m, detail) {
    if (mode.value === m && m !== "polling") return;
    mode.value = m; handlers.onMode && handlers.onMode(m, detail);
  }

  function finish(runId) {
    active.delete(runId);
    const es = sources.get(runId);
    if (es) { es.close(); sources.delete(runId); }
    if (!active.size) { stopPolling(); setMode("idle"); }
  }

  function startSse(runId, lastId) {
    const url = new URL(streamUrls[runId], window.location.href);
    if (lastId) url.searchParams.set("last_id", lastId);
    const es = new EventSource(url.toString(), { withCredentials: true });
    let opened = false;
    es.addEventListener("open", () => { opened = true; if (!pollTimer) setMode("sse"); });
    es.addEventListener("metrics", ev => handlers.onEntry(runId, JSON.parse(ev.data)));
    es.addEventListener("status", ev => {
      const event = JSON.parse(ev.data);
      handlers.onStatus(runId, event);
      if (isTerminal(event.status)) finish(runId);
    });
    es.addEventListener("error", () => {
      // CLOSED: the server refused (503: Redis down; 404...) -> poll. CONNECTING: the browser
      // retries by itself with Last-Event-ID; if it never opened, poll meanwhile.
      if (es.readyState === EventSource.CLOSED || !opened) {
        es.close(); sources.delete(runId);
        startPolling(opened ? "the stream closed" : "the server refused the stream");
      }
    });
    sources.set(runId, es);
  }

  function stopPolling() { if (pollTimer) { clearTimeout(pollTimer); pollTimer = null; } }

  function startPolling(reason) {
    setMode("polling", reason);
    if (pollTimer) return;
    const tick = async () => {
      pollTimer = null;
      const ids = [...active];
      if (!ids.length) return;
      const last = board.lastSteps();
      // One request per run: each asks only for steps after the newest it has.
      for (const id of ids) {
        const params = new URLSearchParams({ runs: String(id), keys: board.keys().join(","),
          step_min: String((last[id] > 0 ? last[id] : 0) + 1), max_points: "5000" });
        try {
          const resp = await fetch(`${board.page.urls.series}?${params}`, { credentials: "same-origin" });
          if (!resp.ok) continue;
          const body = await resp.json();
          for (const [key, s] of Object.entries(body.series[id] || {})) board.appendPoints(id, key, s.step, s.value, s.wall_time);
          const state = body.runs[id];
          handlers.onState && handlers.onState(id, state);
          if (!state.active) active.delete(id);
        } catch (e) { /* offline for a moment: next tick */ }
      }
      if (active.size) pollTimer = setTimeout(tick, POLL_MS);
      else setMode("idle");
    };
    pollTimer = setTimeout(tick, 50);
  }

  if (!active.size) { setMode("idle"); return { stop() {} }; }
  if (!window.EventSource) { startPolling("this browser has no EventSource"); }
  else {
    for (const id of active) {
      if (positions[id] === null || positions[id] === undefined) { startPolling("Redis is unavailable"); continue; }
      startSse(id, positions[id]);
    }
  }
  return { stop() { for (const es of sources.values()) es.close(); sources.clear(); stopPolling(); } };
}
