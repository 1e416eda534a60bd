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

    // A recipe (gft_core.recipes): its diff against the defaults is shown, and its values fill the
    // fields the user has not edited (the server applies it to untouched fields too).
    const recipe = field("recipe");
    const recipeData = document.getElementById("recipe-table");
    const recipes = recipeData ? JSON.parse(recipeData.textContent) : {};
    function applyRecipe() {
      for (const box of form.querySelectorAll(".recipe-diff")) box.hidden = box.dataset.recipe !== recipe.value;
      const r = recipes[recipe.value];
      if (r) { fill(r.values, Object.keys(r.values)); showFieldsOf(method.value); }
    }
    if (recipe) {
      recipe.addEventListener("change", async () => {
        if (!recipe.value) {  // back to the model's defaults
          const body = await fetchDefaults();
          if (body) fill(body.defaults, Object.keys(body.defaults));
        }
        applyRecipe();
      });
      model.addEventListener("change", () => setTimeout(applyRecipe, 300));
    }

    if (scope !== scopes[0]) return;  // the notes below are the launch page's (stage 1 on a pipeline)

    // What the server says about the model (GET /runs/new/defaults/ with the settings the memory plan
    // reads): whether its tokenizer has a chat template, how many parameters train with these LoRA
    // settings, and the peak memory per GPU beside what the GPU workers report.
    const chatNote = document.getElementById("chat-template-note");
    const trainableNote = document.getElementById("trainable-note");
    const memoryNote = document.getElementById("memory-note");
    const PLAN_INPUTS = ["lora_rank", "lora_target_modules", "n_expert", "n_teacher", "n_self", "micro_batch_size",
                         "max_prompt_len", "max_response_len", "mixed_precision", "gradient_checkpointing", "kl_coef",
                         "num_gpus", "queue"];
    let infoAsked = "", infoTimer = null;
    async function updateModelInfo() {
      const params = new URLSearchParams({model: (model.value || "").trim() || "tiny", method: method.value});
      for (const name of PLAN_INPUTS) {
        const el = field(name);
        if (!el) continue;
        params.set(name, el.type === "checkbox" ? (el.checked ? "true" : "false") : el.value);
      }
      const key = params.toString();
      infoAsked = key;
      const resp = await fetch(`${defaultsUrl}?${key}`, {headers: {"Accept": "application/json"}});
      const body = await resp.json().catch(() => ({error: `unavailable (HTTP ${resp.status})`}));
      if (key !== infoAsked) return;
      if (!resp.ok) { if (trainableNote) trainableNote.textContent = body.error; return; }
      if (chatNote) chatNote.textContent = body.chat_template
        ? "Its tokenizer has a chat template: each prompt is wrapped in it (with the dataset's system prompt and instruction suffix)."
        : "This model has no chat template: prompts are sent plain (the dataset's system prompt and suffix still apply).";
      if (trainableNote) trainableNote.textContent = body.trainable == null ? "Trainable parameters: unknown for this model."
        : `Trainable parameters: ${body.trainable.toLocaleString("en-US")} of ${body.parameters.toLocaleString("en-US")} ` +
          `(${(100 * body.trainable / body.parameters).toFixed(2)}%).`;
      if (memoryNote) {
        const m = body.memory;
        memoryNote.textContent = "";
        if (m) {
          const workers = m.workers.filter((w) => w.devices.length);
          const how = {single: "one GPU", ddp: "DDP, the whole model on each GPU", fsdp: "FSDP, sharded over the GPUs"}[m.strategy] || m.strategy;
          const lines = [`Memory plan: ~${m.peak_gib} GiB per GPU (~${m.need_gib} GiB free needed); strategy: ${how}.`, ...m.lines.slice(0, 2),
            workers.length ? "GPU workers: " + workers.map((w) => `${w.hostname} (${w.devices.join("; ")})`).join(" · ")
                           : "No GPU worker has reported its devices."];
          if (m.problem) lines.push(m.problem);
          for (const line of lines) { const div = document.createElement("div"); div.textContent = line; memoryNote.append(div); }
          memoryNote.classList.toggle("error", Boolean(m.problem));
        }
      }
    }
    if (trainableNote || chatNote || memoryNote) {
      const soon = () => { clearTimeout(infoTimer); infoTimer = setTimeout(updateModelInfo, 250); };
      model.addEventListener("change", soon);
      form.addEventListener("input", (e) => { if (PLAN_INPUTS.includes(e.target.name)) soon(); });
      form.addEventListener("change", (e) => { if (e.target === form || PLAN_INPUTS.includes(e.target.name)) soon(); });
      updateModelInfo();
    }
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
    const pre = groupCard.querySelector(".group-prompt");
    const p = body.prompt || {};
    pre.hidden = !p.example;  // the first prompt as the model's user turn (dataset prompt settings)
    pre.textContent = p.example ? (p.system_prompt ? `[system] ${p.system_prompt}\n` : "") + `[user] ${p.example}` : "";
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
