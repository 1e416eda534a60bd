// Leaderboard table (compare page, dashboards): click a header to sort the runs by that column,
// click again to reverse. Base-model and reference rows sit in their own <tbody> and stay put.
// Markup: table.leaderboard > thead th[data-sort], tbody.lb-runs > tr > td[data-value].

export function sortTable(table, column, descending) {
  const body = table.querySelector("tbody.lb-runs");
  if (!body) return;
  const rows = [...body.rows];
  const value = row => {
    const cell = row.cells[column];
    const raw = cell ? cell.dataset.value : undefined;
    if (raw === undefined || raw === "") return null;
    const n = Number(raw);
    return Number.isNaN(n) ? raw.toLowerCase() : n;
  };
  rows.sort((a, b) => {
    const va = value(a), vb = value(b);
    if (va === null && vb === null) return 0;
    if (va === null) return 1;   // missing values last, whatever the direction
    if (vb === null) return -1;
    const cmp = va < vb ? -1 : va > vb ? 1 : 0;
    return descending ? -cmp : cmp;
  });
  for (const row of rows) body.appendChild(row);
  for (const th of table.querySelectorAll("thead th")) th.removeAttribute("aria-sort");
  const th = table.querySelector(`thead tr:last-child th:nth-child(${column + 1})`);
  if (th) th.setAttribute("aria-sort", descending ? "descending" : "ascending");
}

export function bindLeaderboard(table) {
  const heads = [...table.querySelectorAll("thead tr:last-child th")];
  heads.forEach((th, i) => {
    if (!th.dataset.sort) return;
    th.tabIndex = 0;
    const go = () => {
      // Numbers start high-to-low (best accuracy first), text A-to-Z.
      const first = th.dataset.sort === "text" ? "ascending" : "descending";
      const now = th.getAttribute("aria-sort");
      const descending = now ? now === "ascending" : first === "descending";
      sortTable(table, i, descending);
    };
    th.addEventListener("click", go);
    th.addEventListener("keydown", ev => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); go(); } });
  });
}

for (const table of document.querySelectorAll("table.leaderboard")) bindLeaderboard(table);
