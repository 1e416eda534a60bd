// Run list: tick 2-10 runs and open them in the compare view.
const form = document.getElementById("compare-form");
if (form) {
  const button = form.querySelector("button[type=submit]");
  const boxes = () => [...document.querySelectorAll("input[name=run-select]")];
  const max = Number(form.dataset.max || 10);
  const update = () => {
    const chosen = boxes().filter(b => b.checked).map(b => b.value);
    form.querySelector("[name=runs]").value = chosen.join(",");
    button.disabled = chosen.length < 2 || chosen.length > max;
    button.textContent = `Compare ${chosen.length} run${chosen.length === 1 ? "" : "s"}`;
  };
  for (const b of boxes()) b.addEventListener("change", update);
  update();
}
