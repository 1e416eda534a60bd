// Run table: tick runs to compare (2-10) or act on them (tag, archive, cancel), add columns, and
// follow the active rows live over one SSE connection (views/table.py table_stream).
import { followRows } from "./status.js";

const boxes = () => [...document.querySelectorAll("input[name=run-select]")];
const chosen = () => boxes().filter(b => b.checked).map(b => b.value);

function updateActions() {
  const ids = chosen();
  const compare = document.getElementById("compare-form");
  if (compare) {
    const button = compare.querySelector("button[type=submit]");
    const max = Number(compare.dataset.max || 10);
    compare.querySelector("[name=runs]").value = ids.join(",");
    button.disabled = ids.length < 2 || ids.length > max;
    button.textContent = `Compare ${ids.length} run${ids.length === 1 ? "" : "s"}`;
  }
  const bulk = document.getElementById("bulk-form");
  if (bulk) {
    bulk.querySelector("[name=runs]").value = ids.join(",");
    for (const b of bulk.querySelectorAll("button")) b.disabled = !ids.length;
  }
}
for (const b of boxes()) b.addEventListener("change", updateActions);
const all = document.getElementById("select-all");
if (all) all.addEventListener("change", () => { for (const b of boxes()) b.checked = all.checked; updateActions(); });
updateActions();

// Add a column: it joins ?cols= (the URL keeps the choice).
const addInput = document.getElementById("add-column");
const addButton = document.getElementById("add-column-button");
function addColumn() {
  const spec = addInput.value.trim();
  if (!spec) return;
  const url = new URL(window.location.href);
  const cols = (document.querySelector("#run-filters [name=cols]").value || "").split(",").filter(Boolean);
  if (!cols.includes(spec)) cols.push(spec);
  url.searchParams.set("cols", cols.join(","));
  url.searchParams.delete("page");
  window.location.assign(url.toString());
}
if (addButton) addButton.addEventListener("click", addColumn);
if (addInput) addInput.addEventListener("keydown", e => { if (e.key === "Enter") { e.preventDefault(); addColumn(); } });

// Live rows: status, step and ETA of the queued and running runs on this page.
followRows(JSON.parse(document.getElementById("run-table-live").textContent), document.getElementById("live-note"));
