// The run page's alert banner: alert events of the run's stream (kind "alert", see
// docs/INTERFACES.md) add a firing alert with its step and values, or remove a cleared one.

export function showAlert(event) {
  const banner = document.getElementById("alert-banner");
  if (!banner) return;
  let item = banner.querySelector(`[data-alert="${event.alert}"]`);
  if (event.state !== "firing") { if (item) item.remove(); return; }
  if (!item) {
    item = document.createElement("div");
    item.dataset.alert = String(event.alert);
    banner.appendChild(item);
  }
  item.className = `alert-item severity-${event.severity}`;
  item.replaceChildren();
  const name = document.createElement("b");
  name.textContent = event.rule;
  const step = document.createElement("span");
  step.className = "alert-step";
  step.textContent = String(event.step);
  const msg = document.createElement("span");
  msg.className = "alert-message";
  msg.textContent = event.message;
  const link = document.createElement("a");
  link.href = "/alerts/";
  link.textContent = "alerts";
  item.append(name, " at step ", step, ": ", msg, " ", link);
}
