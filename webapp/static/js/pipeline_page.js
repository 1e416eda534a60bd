// The pipeline page: the stages' charts joined on one step axis (dashed lines where a stage
// starts; data: the "joined-data" JSON, webapp.pipelines.selectors.joined_series). Live without a
// reload (live_sections.js): head, stage table and charts re-read as the stages change status.
import { liveSections } from "./live_sections.js";

function draw() {
  const data = JSON.parse(document.getElementById("joined-data").textContent);
  const root = document.getElementById("joined-charts");
  const keys = Object.keys(data.series);
  if (!keys.length) { root.textContent = "No metrics yet."; return; }
  if (!root.querySelector(".joined-chart")) root.textContent = "";
  const shapes = data.boundaries.slice(1).map(b => ({type: "line", x0: b.step, x1: b.step, yref: "paper", y0: 0, y1: 1,
                                                     line: {dash: "dash", width: 1, color: "#888"}}));
  const notes = data.boundaries.map(b => ({x: b.step, yref: "paper", y: 1.08, text: b.label, showarrow: false, xanchor: "left", font: {size: 10}}));
  for (const key of keys) {
    let div = [...root.querySelectorAll(".joined-chart")].find(d => d.dataset.key === key);
    if (!div) {
      div = document.createElement("div");
      div.className = "joined-chart"; div.dataset.key = key; div.style.height = "260px";
      root.appendChild(div);
    }
    const traces = data.series[key].map(s => ({x: s.step, y: s.value, name: s.label, mode: "lines", type: "scatter"}));
    Plotly.react(div, traces, {title: {text: key, font: {size: 13}}, margin: {t: 40, r: 10, b: 30, l: 50},
      shapes, annotations: notes, xaxis: {title: "step (all stages)"}, legend: {orientation: "h", y: -0.2}},
      {displayModeBar: false, responsive: true});
  }
}

draw();
liveSections([".pipeline-head", "table.stages", "#joined-data"], draw);
