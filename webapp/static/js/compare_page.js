// Compare page and saved dashboards: several runs overlaid, stable colour per run, live.
import { ChartBoard, bindToolbar, runColor } from "./charts.js";
import { followRuns } from "./live.js";
import { liveNote, onEntry, onStatus, readStatesFrom, showState } from "./status.js";

const page = JSON.parse(document.getElementById("page-data").textContent);
const root = document.getElementById("charts");
if (page.runs.length) {
  page.runs.forEach((r, i) => {
    for (const sw of document.querySelectorAll(`[data-run-swatch="${r.id}"]`)) sw.style.background = runColor(i);
  });
  const board = new ChartBoard(root, page);
  board.build();
  bindToolbar(board, document.getElementById("chart-toolbar"));
  const note = document.getElementById("live-note");
  board.loadHistory().then(body => {
    document.body.dataset.chartsReady = "1";
    readStatesFrom(page.urls.series);
    const runs = page.runs.map(r => ({ id: r.id, state: body.runs[r.id] }));
    for (const r of runs) showState(r.id, r.state);
    followRuns(board, runs, page.urls.streams, body.stream_ids, {
      onEntry: (id, entry) => { board.applyEntry(id, entry); onEntry(id, entry); },
      onStatus: (id, event) => onStatus(id, event),
      onState: (id, st) => showState(id, st),
      onMode: (mode, detail) => liveNote(note, mode, detail),
    });
  });
}
// The save form takes the charts ticked in its own checkboxes and the current smoothing.
