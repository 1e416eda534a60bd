// A page that sums up several runs (a sweep, a pipeline) kept live without a reload. The active
// runs' status and step follow the run table's SSE (views/table.py table_stream, one connection;
// rows marked [data-run-state], see status.js). When a run changes status the page's own HTML is
// read again and its live sections swapped in (progress, best so far, new trial or stage runs),
// then `onSwap` draws the charts again. The "live-runs" JSON (views/table.py live_follow) says
// which runs to follow and whether the sweep or pipeline is about to launch one ("pending": the
// page re-reads itself, 1 s then slower, until it appears).
import { liveNote, onEntry, onStatus } from "./status.js";

const MAX_WAIT_MS = 5000;

export function liveSections(sections, onSwap) {
  const note = document.getElementById("live-note");
  let es = null, following = null, timer = null, wait = 1000;

  const config = () => JSON.parse(document.getElementById("live-runs").textContent);

  function refresh(delay) {
    if (timer) return;
    timer = setTimeout(() => { timer = null; reread(); }, delay);
  }

  async function reread() {
    let doc;
    try {
      const resp = await fetch(window.location.href, { credentials: "same-origin" });
      if (!resp.ok) throw new Error(String(resp.status));
      doc = new DOMParser().parseFromString(await resp.text(), "text/html");
    } catch (e) { refresh(MAX_WAIT_MS); return; } // offline for a moment
    for (const sel of [...sections, "#live-runs"]) {
      const old = document.querySelector(sel), fresh = doc.querySelector(sel);
      if (old && fresh) old.replaceWith(document.importNode(fresh, true));
    }
    onSwap();
    document.body.dataset.liveRereads = String(Number(document.body.dataset.liveRereads || 0) + 1);
    follow();
  }

  function follow() {
    const cfg = config();
    if (cfg.pending) { refresh(wait); wait = Math.min(MAX_WAIT_MS, wait * 2); } else wait = 1000;
    const key = cfg.runs.join(",");
    if (key === following) return;
    if (es) { es.close(); es = null; }
    following = key;
    if (!cfg.runs.length) { if (!cfg.pending) liveNote(note, "idle"); return; }
    const url = new URL(cfg.url, window.location.href);
    url.searchParams.set("runs", key);
    url.searchParams.set("since", Object.entries(cfg.positions).map(([id, pos]) => `${id}:${pos}`).join(","));
    const source = es = new EventSource(url.toString(), { withCredentials: true });
    source.addEventListener("open", () => liveNote(note, "sse"));
    source.addEventListener("metrics", ev => { const e = JSON.parse(ev.data); onEntry(e.run, e); });
    source.addEventListener("status", ev => { const e = JSON.parse(ev.data); onStatus(e.run, e); refresh(300); });
    source.addEventListener("closed", () => source.close());
    source.addEventListener("error", () => {
      // Refused (Redis down) or gone: re-read the page every few seconds instead.
      if (source.readyState === EventSource.CLOSED) { following = null; liveNote(note, "polling"); refresh(MAX_WAIT_MS); }
    });
  }

  follow();
}
