// Group inspector (issue 8): the groups the trainer sampled at a step, token by token.
// Data: GET <run>/groups/?step=N -> {step, steps, tau, groups: [record + group_index + sources]}.

const FOLLOW_EVERY_MS = 4000;

export function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function fmt(v, digits = 3) {
  return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits);
}

function signClass(v) { return v > 1e-9 ? "pos" : v < -1e-9 ? "neg" : "zero"; }

// Byte-level BPE and sentencepiece markers shown as the characters they stand for.
function tokenText(t) { return String(t).replace(/[▁Ġ]/g, " ").replace(/Ċ/g, "⏎\n"); }

function groupsUrl(base, runId) { return base.replace(/\/runs\/\d+\/groups\/$/, `/runs/${runId}/groups/`); }

export function renderTokens(resp, tau) {
  const toks = resp.tokens || [], pi = resp.pi || [], c = resp.c || [], rect = resp.rectified || [];
  return toks.map((t, i) => {
    const p = pi[i], ci = c[i];
    // Shade: low pi = strong colour (the tokens DCR acts on), high pi = pale.
    const alpha = p === undefined ? 0 : (1 - p) * 0.75;
    const w = p ? ci / p : null;
    const title = `pi = ${fmt(p, 4)}\nC = ${fmt(ci, 4)}\nC/pi = ${fmt(w, 3)}${rect[i] ? "\nrectified (pi < tau)" : ""}`;
    return `<span class="tok${rect[i] ? " rect" : ""}" style="background:rgba(59,91,219,${alpha.toFixed(3)})" ` +
      `data-pi="${p}" data-c="${ci}" title="${esc(title)}">${esc(tokenText(t))}</span>`;
  }).join("");
}

export function renderGroup(g, { tau, showMeanC, exportUrl, label }) {
  const responses = (g.responses || []).map(r => `
    <div class="resp src-${esc(r.source)}">
      <div class="resp-head"><span class="src-label">${esc(r.source)}</span>
        <span class="badge reward ${signClass(r.reward)}" title="reward">R ${fmt(r.reward, 2)}</span>
        <span class="badge adv ${signClass(r.advantage)}" title="group advantage">A ${r.advantage > 0 ? "+" : ""}${fmt(r.advantage, 3)}</span>
        ${r.truncated ? `<span class="badge truncated" title="cut at max_response_len: its reward is for a cut answer">truncated at ${(r.tokens || []).length} tokens</span>` : ""}
        <span class="muted small">${(r.tokens || []).length} tokens · ${(r.rectified || []).filter(Boolean).length} rectified</span>
      </div>
      <div class="tokens">${renderTokens(r, tau)}</div>
    </div>`).join("");
  const srcRows = Object.entries(g.sources || {}).map(([s, v]) =>
    `<tr><td>${esc(s)}</td><td>${v.n}</td><td>${fmt(v.mean_reward, 3)}</td><td>${fmt(v.mean_advantage, 3)}</td>` +
    `<td>${fmt(v.mean_c, 3)}</td><td>${fmt(v.rectified_frac, 3)}</td></tr>`).join("");
  return `<article class="group-card" data-group="${g.group_index}">
    <header><strong>${label ? esc(label) + " · " : ""}group ${g.group_index}</strong>
      <a class="tool" href="${exportUrl}" download>Export JSON</a></header>
    <div class="prompt"><span class="muted">prompt</span><pre>${esc(g.prompt)}</pre>
      ${g.ground_truth ? `<span class="muted">ground truth</span> <code>${esc(g.ground_truth)}</code>` : ""}</div>
    <table class="table mean-c" ${showMeanC ? "" : "hidden"}><thead><tr><th>source</th><th>n</th><th>mean reward</th>
      <th>mean advantage</th><th>mean C</th><th>rectified share</th></tr></thead><tbody>${srcRows}</tbody></table>
    <div class="responses">${responses}</div>
  </article>`;
}

// Which steps have groups: the slider moves over these only.
export function stepsNote(steps) {
  if (!steps.length) return "";
  const shown = steps.length <= 8 ? steps.join(", ") : `${steps.slice(0, 4).join(", ")}, …, ${steps.slice(-2).join(", ")}`;
  return `Groups sampled at ${steps.length} step${steps.length === 1 ? "" : "s"}: ${shown}`;
}

export class GroupInspector {
  constructor(panel, page) {
    this.panel = panel;
    this.page = page;
    this.url = page.urls.groups;
    this.runId = page.runs[0].id;
    this.steps = [];
    this.step = null;
    this.follow = true;
    this.loaded = false;
    this.lastFollow = 0;
    if (!panel) return;
    this.slider = panel.querySelector("[name=group-step]");
    this.stepLabel = panel.querySelector(".group-step-label");
    this.latest = panel.querySelector("[name=group-latest]");
    this.meanC = panel.querySelector("[name=group-meanc]");
    this.other = panel.querySelector("[name=group-compare]");
    this.list = panel.querySelector(".group-list");
    this.slider.addEventListener("input", () => {
      this.follow = false; this.latest.checked = false;
      this.stepLabel.textContent = `step ${this.steps[Number(this.slider.value)]}`;
    });
    this.slider.addEventListener("change", () => this.load(this.steps[Number(this.slider.value)]));
    this.latest.addEventListener("change", () => { this.follow = this.latest.checked; if (this.follow) this.load(null); });
    this.meanC.addEventListener("change", () => {
      for (const t of this.list.querySelectorAll(".mean-c")) t.hidden = !this.meanC.checked;
    });
    this.other.addEventListener("change", () => this.load(this.step));
    this.stepsNote = panel.querySelector(".group-steps");
    // A tap (or click) on a token shows its pi, C and C/pi: the title tooltip needs a mouse.
    this.list.addEventListener("click", ev => {
      const tok = ev.target.closest(".tok");
      this.showToken(tok && tok !== this.activeTok ? tok : null);
    });
    document.addEventListener("click", ev => { if (!panel.contains(ev.target)) this.showToken(null); });
  }

  showToken(tok) {
    if (this.activeTok) this.activeTok.classList.remove("tok-active");
    if (this.tokDetail) this.tokDetail.remove();
    this.activeTok = tok;
    this.tokDetail = null;
    if (!tok) return;
    tok.classList.add("tok-active");
    const box = document.createElement("div");
    box.className = "tok-detail";
    box.setAttribute("role", "status");
    box.textContent = `"${tok.textContent}"\n${tok.title}`;
    document.body.appendChild(box);
    const r = tok.getBoundingClientRect();
    const left = Math.max(4, Math.min(r.left, document.documentElement.clientWidth - box.offsetWidth - 4));
    box.style.left = `${left + window.scrollX}px`;
    box.style.top = `${r.bottom + window.scrollY + 4}px`;
    this.tokDetail = box;
  }

  open() { if (this.panel && !this.loaded) this.load(null); }

  // A live step arrived: when following "latest", look for new groups now and then.
  onStep() {
    if (!this.loaded || !this.follow || Date.now() - this.lastFollow < FOLLOW_EVERY_MS) return;
    this.lastFollow = Date.now();
    this.load(null);
  }

  async fetchGroups(runId, step) {
    const q = step === null || step === undefined ? "" : `?step=${step}`;
    const resp = await fetch(groupsUrl(this.url, runId) + q, { credentials: "same-origin" });
    if (!resp.ok) throw new Error(resp.status === 404 ? `run ${runId} not found` : `HTTP ${resp.status}`);
    return resp.json();
  }

  async load(step) {
    this.loaded = true;
    let data;
    try { data = await this.fetchGroups(this.runId, step); } catch (e) { this.list.textContent = e.message; return; }
    this.steps = data.steps; this.step = data.step;
    this.slider.max = String(Math.max(0, this.steps.length - 1));
    this.slider.value = String(Math.max(0, this.steps.indexOf(data.step)));
    this.slider.disabled = this.steps.length < 2;
    this.stepLabel.textContent = data.step === null ? "no groups sampled yet" : `step ${data.step}`;
    if (this.stepsNote) this.stepsNote.textContent = stepsNote(this.steps);
    let other = null, otherErr = "";
    const otherId = Number(this.other.value || 0);
    if (otherId && otherId !== this.runId && data.step !== null) {
      try { other = await this.fetchGroups(otherId, data.step); } catch (e) { otherErr = e.message; }
    }
    const exportUrl = (runId, s, g) => `${groupsUrl(this.url, runId)}?step=${s}&group=${g}&download=1`;
    const opts = (d, g, label) => ({ tau: d.tau, showMeanC: this.meanC.checked, exportUrl: exportUrl(d.run, d.step, g.group_index), label });
    const cards = data.groups.map(g => {
      const mine = renderGroup(g, opts(data, g, other ? `run #${this.runId} (tau ${data.tau})` : ""));
      if (!other) return mine;
      const twin = other.groups.find(o => o.prompt === g.prompt);
      const theirs = twin ? renderGroup(twin, opts(other, twin, `run #${other.run} (tau ${other.tau}) step ${other.step}`))
        : `<article class="group-card muted">Run #${other.run} has no group with this prompt at step ${other.step}.</article>`;
      return `<div class="group-pair">${mine}${theirs}</div>`;
    });
    this.list.innerHTML = (otherErr ? `<p class="error">${esc(otherErr)}</p>` : "") +
      (cards.join("") || `<p class="muted">No groups sampled at this step yet. The trainer samples
        ${esc(String(this.page.group_sample_count ?? "a few"))} groups every ${esc(String(this.page.group_sample_interval ?? "N"))} steps.</p>`);
    this.panel.dataset.step = String(data.step);
  }
}
