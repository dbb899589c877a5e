// /console/api-keys: create a key (its raw value shown once), list keys masked, revoke.
// Through /api/v1/keys, which takes an admin key when the service asks for keys.

import { api, copyButton, el, enc, formatTime, showError } from "./common.js";

const $ = (id) => document.getElementById(id);

async function showKeys() {
  const { keys } = await api("/api/v1/keys");
  const rows = keys.map((key) => {
    const action = key.revoked ? "" : revokeControl(key.name);
    return el("tr", { "data-key": key.name },
      el("td", {}, key.name),
      el("td", {}, key.tenant),
      el("td", {}, el("code", { class: "masked" }, key.masked)),
      el("td", {}, key.admin ? "admin" : "user"),
      el("td", { title: key.created_at || "" }, formatTime(key.created_at)),
      el("td", { title: key.last_used || "" }, key.last_used ? formatTime(key.last_used) : "never"),
      el("td", { class: "state" }, key.revoked ? "revoked" : "active"),
      el("td", {}, action));
  });
  $("keys").tBodies[0].replaceChildren(...rows);
  $("keys-empty").hidden = rows.length > 0;
  $("keys").hidden = rows.length === 0;
}

// "Revoke NAME", then a confirmation in the row: "Revoke key" or "Cancel".
function revokeControl(name) {
  const cell = el("span", {});
  const ask = el("button", { type: "button", "aria-label": `Revoke ${name}` }, `Revoke ${name}`);
  ask.addEventListener("click", () => {
    const confirm = el("button", { type: "button", class: "danger" }, "Revoke key");
    const cancel = el("button", { type: "button" }, "Cancel");
    confirm.addEventListener("click", async () => {
      confirm.disabled = true;
      try {
        await api(`/api/v1/keys/${enc(name)}`, { method: "DELETE" });
        await showKeys();
      } catch (error) {
        showError(error);
        confirm.disabled = false;
      }
    });
    cancel.addEventListener("click", () => cell.replaceChildren(ask));
    cell.replaceChildren(el("span", { class: "confirm" },
      "Refused from its next use.", confirm, cancel));
  });
  cell.append(ask);
  return cell;
}

$("create-key").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const body = { name: form.elements.namedItem("name").value.trim(), admin: form.elements.namedItem("admin").checked };
  const tenant = form.elements.namedItem("tenant").value.trim();
  if (tenant) body.tenant = tenant;
  try {
    const created = await api("/api/v1/keys", { method: "POST", json: body });
    form.reset();
    showNewKey(created);
    await showKeys();
  } catch (error) {
    showError(error);
  }
});

// The raw key, this once: the service keeps only its hash. Done removes it from the page.
function showNewKey(created) {
  const done = el("button", { type: "button", class: "primary" }, "Done");
  const box = el("div", { class: "new-key", role: "status" },
    el("h2", {}, "Save your API key"),
    el("p", {}, `The key ${created.name} (tenant ${created.tenant}) is shown only now. Copy it; ` +
      "it cannot be shown or recovered again."),
    el("div", { class: "row" }, el("code", { id: "raw-key" }, created.key),
      copyButton(() => created.key), done));
  done.addEventListener("click", () => $("new-key").replaceChildren());
  $("new-key").replaceChildren(box);
}

try {
  await showKeys();
} catch (error) {
  showError(error);
}
