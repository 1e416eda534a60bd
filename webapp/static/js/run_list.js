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
document.addEventListener("change", e => { if (e.target.matches("input[name=run-select]")) updateActions(); });
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

// Live rows: status, step and ETA of the queued and running runs on this page; a run launched in the
// team (here or elsewhere) gets its row without a reload: the page is read again and its rows merged.
const note = document.getElementById("live-note");
let source = null;
let reading = null;

function follow(live) {
  if (source) source.close();
  source = followRows(live, note, () => { reading = reading || mergeRows().finally(() => { reading = null; }); });
}

// This page (same filters, sort and page) read again: its rows replace the shown ones (their states
// read with the new feed positions, so no event falls in between), ticks kept; the pager follows,
// and the live feed then follows the active rows of the new page.
async function mergeRows() {
  const resp = await fetch(window.location.href, { credentials: "same-origin" });
  if (!resp.ok) return;
  const fresh = new DOMParser().parseFromString(await resp.text(), "text/html");
  const body = document.querySelector("#run-table tbody"), freshBody = fresh.querySelector("#run-table tbody");
  if (!body || !freshBody) return;
  const ticked = new Set(chosen());
  const rows = [...freshBody.children].map(tr => document.importNode(tr, true));
  for (const tr of rows) { const box = tr.querySelector("input[name=run-select]"); if (box) box.checked = ticked.has(box.value); }
  body.replaceChildren(...rows);
  const pager = document.querySelector(".pager"), freshPager = fresh.querySelector(".pager");
  if (pager && freshPager) pager.innerHTML = freshPager.innerHTML;
  updateActions();
  follow(JSON.parse(fresh.getElementById("run-table-live").textContent));
}

follow(JSON.parse(document.getElementById("run-table-live").textContent));
