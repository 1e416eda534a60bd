// Launch form (templates/runs/launch.html).
// - Fields a method does not read (data-used-by lists the methods that do) are hidden for it:
//   SFT shows no tau and no teacher/self counts.
// - Choosing another method refits the batch sizes it owns (sequences per update, micro-batch)
//   to its rollout; on a new launch, choosing or typing another model fills every field with the
//   defaults scaled for it. Both ask GET /runs/new/defaults/?model=&method= and replace only the
//   fields the user has not edited.
// - Below the group counts, the effective group per prompt on the chosen dataset (issue 18).
// - On a clone, fields that differ from the cloned run are marked and listed above the form.
(function () {
  const form = document.querySelector(".launch-form");
  if (!form) return;
  // The new-pipeline page holds one launch form per stage, its fields named "s<i>-<field>" inside
  // [data-launch-prefix="s<i>-"]; the stages after the first have no model field: they use stage 1's.
  const scopes = [...form.querySelectorAll("[data-launch-prefix]")];
  if (!scopes.length) scopes.push(form);
  const firstModel = form.elements[(scopes[0].getAttribute("data-launch-prefix") || "") + "model"];
  for (const scope of scopes) setup(scope, scope.getAttribute("data-launch-prefix") || "");

  function setup(scope, prefix) {
    const field = (name) => form.elements[prefix + name];
    const ownModel = field("model");
    const model = ownModel || firstModel;
    const method = field("method");
    const note = scope.querySelector(".model-defaults-note");
    // Attributes, not form.dataset: the form has a field named "dataset", which shadows it.
    const isClone = form.getAttribute("data-clone") === "1";
    const defaultsUrl = form.getAttribute("data-defaults-url");
    const edited = new Set();
    scope.addEventListener("input", (e) => {
      if (e.target.name && e.target !== model && e.target !== method) edited.add(e.target.name.slice(prefix.length));
    });

    function showFieldsOf(name) {
      for (const f of scope.querySelectorAll(".field[data-used-by]")) {
        f.hidden = !f.dataset.usedBy.split(" ").includes(name);
      }
    }

    let asked = "";
    async function fetchDefaults() {
      const key = `${((model && model.value) || "").trim() || "tiny"}|${method.value}`;
      asked = key;
      const url = `${defaultsUrl}?model=${encodeURIComponent(key.split("|")[0])}` +
                  `&method=${encodeURIComponent(method.value)}`;
      const resp = await fetch(url, {headers: {"Accept": "application/json"}});
      const body = await resp.json().catch(() => ({error: `defaults unavailable (HTTP ${resp.status})`}));
      if (key !== asked) return null;  // another model or method was chosen meanwhile
      if (!resp.ok) { if (note) note.textContent = body.error; return null; }
      return body;
    }

    function fill(values, names) {
      const filled = [];
      for (const name of names) {
        const el = field(name);
        if (!el || edited.has(name) || !(name in values)) continue;
        const v = values[name];
        const text = v === null || v === undefined ? "" : String(v);
        if (el.value !== text) { el.value = text; filled.push(name); }
      }
      form.dispatchEvent(new Event("change"));  // the clone marks follow
      return filled;
    }

    let lastModel = ((model && model.value) || "").trim();
    if (ownModel) ownModel.addEventListener("change", async () => {
      const value = (model.value || "").trim();
      if (isClone || !value || value === lastModel) return;
      lastModel = value;
      const body = await fetchDefaults();
      if (!body) return;
      const filled = fill(body.defaults, Object.keys(body.defaults));
      const size = body.params ? `~${(body.params / 1e6).toLocaleString(undefined, {maximumFractionDigits: 0})}M parameters`
                               : "size unknown";
      note.textContent = `Defaults for this model (${size}, ${body.small ? "small-model" : "paper-scale"} settings)` +
        (filled.length ? `: set ${filled.join(", ")}.` : ".") + (edited.size ? ` Kept your edits: ${[...edited].join(", ")}.` : "");
    });

    method.addEventListener("change", async () => {
      showFieldsOf(method.value);
      const body = await fetchDefaults();
      if (!body) return;
      const filled = fill(body.defaults, body.method_fitted);
      const methodNote = scope.querySelector(".method-defaults-note");
      if (methodNote) {
        methodNote.textContent = filled.length ? `Fitted to ${method.value}'s rollout: ${filled.join(", ")}.` : "";
      }
    });
    showFieldsOf(method.value);
  }

  // The effective group per prompt (GET /runs/new/group/): what the chosen dataset's rows give for
  // the chosen method and counts, the share of prompts with a short group, truncation warnings.
  const groupCard = document.getElementById("effective-group");
  const GROUP_INPUTS = ["dataset", "method", "n_expert", "n_teacher", "n_self", "max_response_len"];
  let groupAsked = "", groupTimer = null;
  async function updateGroup() {
    const msg = groupCard.querySelector(".group-message"), warnings = groupCard.querySelector(".group-warnings");
    const params = new URLSearchParams();
    for (const name of GROUP_INPUTS) if (form.elements[name] && form.elements[name].value !== "") params.set(name, form.elements[name].value);
    params.set("percentile", groupCard.querySelector("[name=group-percentile]").value);
    if (!params.get("dataset")) { msg.textContent = "Choose a dataset to see the group its rows give."; warnings.innerHTML = ""; return; }
    const key = params.toString();
    groupAsked = key;
    const resp = await fetch(`${groupCard.getAttribute("data-url")}?${key}`, {headers: {"Accept": "application/json"}});
    const body = await resp.json().catch(() => ({error: `group preview unavailable (HTTP ${resp.status})`}));
    if (key !== groupAsked) return;  // the inputs changed meanwhile
    warnings.innerHTML = "";
    if (!resp.ok) { msg.textContent = body.error; msg.classList.remove("short"); return; }
    msg.textContent = body.message;
    msg.classList.toggle("short", body.short_rows > 0 || body.group.teacher < body.asked.teacher);
    const link = msg.textContent.includes("generate them") && body.dataset_url;
    if (link) msg.insertAdjacentHTML("beforeend", ` (<a href="${body.dataset_url}">dataset page</a>)`);
    for (const w of body.warnings) { const li = document.createElement("li"); li.textContent = w; warnings.append(li); }
    groupCard.setAttribute("data-short-share", String(body.short_share));
  }
  if (groupCard) {
    const later = () => { clearTimeout(groupTimer); groupTimer = setTimeout(updateGroup, 250); };
    form.addEventListener("change", later);
    form.addEventListener("input", (e) => { if (GROUP_INPUTS.includes(e.target.name)) later(); });
    updateGroup();
  }

  const sourceData = document.getElementById("clone-source");
  if (sourceData) {
    const source = JSON.parse(sourceData.textContent);
    const list = document.getElementById("clone-changes-list");
    const norm = (v) => (v === null || v === undefined) ? "" : (Array.isArray(v) ? v.join(", ") : String(v));
    const update = () => {
      const changed = [];
      for (const [name, before] of Object.entries(source)) {
        const el = form.elements[name];
        if (!el) continue;
        const now = el.value;
        const differs = norm(before) !== now && !(Number(now) === Number(before) && now !== "" && norm(before) !== "");
        el.closest(".field").classList.toggle("changed", differs);
        if (differs) changed.push(`${name}: ${norm(before) || "(blank)"} → ${now || "(blank)"}`);
      }
      list.textContent = changed.length ? changed.join("; ") : "none yet: the form holds the settings of the cloned run.";
    };
    form.addEventListener("input", update);
    form.addEventListener("change", update);
    update();
  }
})();
