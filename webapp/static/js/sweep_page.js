// The sweep page: a Plotly parcoords of the parameters against the target (one line per trial
// with a value) and a scatter of each parameter vs the target. Data: the "sweep-data" JSON
// (webapp.sweeps.selectors.plot_data). Categorical parameters become integer ticks. The page
// stays live (live_sections.js): summary, groups and runs table swapped in, the plots redrawn.
import { liveSections } from "./live_sections.js";

function draw() {
  const data = JSON.parse(document.getElementById("sweep-data").textContent);
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
  Plotly.react("sweep-parcoords", [{
    type: "parcoords", dimensions: dims,
    line: { color: values, colorscale: "Viridis", reversescale: data.direction === "min", showscale: true },
  }], { margin: { l: 60, r: 60, t: 40, b: 20 } }, { displaylogo: false, responsive: true });
  const box = document.getElementById("sweep-scatter");
  data.params.forEach((p, i) => {
    let div = box.children[i];
    if (!div) {
      div = document.createElement("div");
      div.className = "sweep-scatter";
      div.style.height = "260px";
      box.appendChild(div);
    }
    Plotly.react(div, [{
      type: "scatter", mode: "markers", x: done.map((t) => t.params[p]), y: values,
      text: done.map((t) => `trial ${t.number}, run #${t.run} (${t.state})`),
      marker: { color: done.map((t) => (t.state === "complete" ? "#1f77b4" : "#bbb")) },
    }], { title: { text: `${p} vs ${data.target}`, font: { size: 13 } }, xaxis: { title: { text: p } },
          yaxis: { title: { text: data.target } }, margin: { l: 50, r: 10, t: 30, b: 40 } },
    { displaylogo: false, responsive: true });
  });
  document.body.dataset.sweepDrawn = String(done.length);
}

draw();
liveSections(["#sweep-head", "#sweep-summary", "#sweep-groups-card", "#sweep-trials", "#sweep-data"], draw);
