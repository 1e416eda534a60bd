// Run page: charts (history, then live), status/progress, tabs, group inspector.
import { ChartBoard, bindToolbar } from "./charts.js";
import { followRuns } from "./live.js";
import { followQueue, liveNote, onEntry, onStatus, readStatesFrom, showState } from "./status.js";
import { GroupInspector } from "./groups.js";
import { EvalTab } from "./eval_tab.js";
import { showAlert } from "./alert_banner.js";

const page = JSON.parse(document.getElementById("page-data").textContent);
const board = new ChartBoard(document.getElementById("charts"), page);
board.build();
bindToolbar(board, document.getElementById("chart-toolbar"));
const note = document.getElementById("live-note");
const run = page.runs[0];

// Tabs without reloads; the hash keeps the tab on refresh and in shared links.
function showTab(name) {
  for (const t of document.querySelectorAll("[data-tab]")) t.classList.toggle("active", t.dataset.tab === name);
  for (const p of document.querySelectorAll("[data-panel]")) p.hidden = p.dataset.panel !== name;
  if (name === "charts") window.dispatchEvent(new Event("resize"));
  if (name === "groups") inspector.open();
  if (name === "evaluation") evalTab.open(); else evalTab.close();
}
const inspector = new GroupInspector(document.getElementById("groups-panel"), page);
const evalTab = new EvalTab(document.getElementById("evaluation-panel"), page);
for (const t of document.querySelectorAll("[data-tab]")) {
  t.addEventListener("click", ev => { ev.preventDefault(); history.replaceState(null, "", `#${t.dataset.tab}`); showTab(t.dataset.tab); });
}
showTab((location.hash || "#charts").slice(1) || "charts");

board.loadHistory().then(body => {
  document.body.dataset.chartsReady = "1";
  const state = body.runs[run.id];
  readStatesFrom(page.urls.series);
  showState(run.id, state);
  if (state.status === "queued") followQueue(run.id);
  followRuns(board, [{ id: run.id, state }], { [run.id]: page.urls.stream }, body.stream_ids, {
    onEntry: (id, entry) => { board.applyEntry(id, entry); onEntry(id, entry); inspector.onStep(entry.step); },
    onStatus: (id, event) => (event.kind === "alert" ? showAlert(event) : onStatus(id, event)),
    onState: (id, st) => showState(id, st),
    onMode: (mode, detail) => liveNote(note, mode, detail),
  });
}).catch(err => { note.hidden = false; note.className = "live-note live-polling"; note.textContent = `Could not load metrics: ${err.message}`; });
