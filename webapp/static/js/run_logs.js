// The Logs page: follows the worker log by polling its byte windows (runs:log_text ?after=end)
// while the run is live or the file has more than was shown; "Following" scrolls to each new
// line, "Paused" leaves the view where it is (lines still arrive). "Earlier lines" pages back
// (?before=start). Polling, not the run's stream: log lines are not on the Redis stream, and a
// byte offset makes a poll idempotent (a lost answer is simply asked again).

const POLL_MS = 1000;
const pre = document.getElementById("log-text");
const followBtn = document.getElementById("log-follow");
const earlierBtn = document.getElementById("log-earlier");
const note = document.getElementById("log-note");
const url = pre.dataset.textUrl;
let start = Number(pre.dataset.start), end = Number(pre.dataset.end);
let live = pre.dataset.live === "1";
let follow = true;

function setFollow(on) {
  follow = on;
  followBtn.setAttribute("aria-pressed", String(on));
  followBtn.textContent = on ? "Following" : "Paused";
  document.body.dataset.logFollow = on ? "1" : "0";
  if (on) pre.scrollTop = pre.scrollHeight;
}

async function get(params) {
  const resp = await fetch(`${url}?${new URLSearchParams(params)}`, { credentials: "same-origin" });
  if (!resp.ok) throw new Error(`log: HTTP ${resp.status}`);
  return resp.json();
}

async function poll() {
  let more = false;
  try {
    const w = await get({ after: end });
    if (w.text) {
      document.getElementById("log-empty")?.remove();
      pre.append(w.text);
      if (follow) pre.scrollTop = pre.scrollHeight;
    }
    end = w.end;
    live = w.live;
    const badge = document.getElementById("log-status");
    if (badge && w.status) { badge.className = `status status-${w.status}`; badge.textContent = w.status.charAt(0).toUpperCase() + w.status.slice(1); }
    more = w.end < w.size && w.text !== "";  // no progress: wait for the writer, not a busy loop
    if (!live && !more) note.textContent = `The run is ${w.status}: this is the whole end of the log.`;
  } catch (e) {
    more = true; // a failed poll is asked again
  }
  document.body.dataset.logEnd = String(end);
  if (live || more) setTimeout(poll, more ? 0 : POLL_MS);
}

earlierBtn?.addEventListener("click", async () => {
  const w = await get({ before: start });
  const keep = pre.scrollHeight - pre.scrollTop;
  pre.prepend(w.text);
  pre.scrollTop = pre.scrollHeight - keep; // the lines in view stay in view
  start = w.start;
  earlierBtn.hidden = start === 0;
});

followBtn.addEventListener("click", () => setFollow(!follow));
setFollow(true);
poll();
