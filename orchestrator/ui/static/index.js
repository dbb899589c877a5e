// /ui/: the caller's recent runs and saved flows, each linking to its page, and what
// waits for a worker, with the caller's (an admin's: every tenant's) runs and storage
// against their quotas.

import { api, badge, duration, el, enc, formatTime, showError } from "./common.js";

const REFRESH_MS = 5000;

async function showRuns() {
  const { runs } = await api("/api/v1/flow/runs?limit=50");
  const rows = runs.map((run) => {
    const page = `/ui/runs/${enc(run.ID)}`;
    return el("tr", { "data-run": run.ID },
      el("td", {}, badge(run.Status)),
      el("td", {}, el("a", { href: page }, run.Flow || "(unnamed)")),
      el("td", {}, el("a", { href: page }, el("code", { title: run.ID }, run.ID.slice(0, 12)))),
      el("td", { title: run.StartedAt || "" }, formatTime(run.StartedAt)),
      el("td", {}, duration(run.StartedAt, run.FinishedAt)));
  });
  document.querySelector("#runs tbody").replaceChildren(...rows);
  document.getElementById("runs-empty").hidden = rows.length > 0;
  document.getElementById("runs").hidden = rows.length === 0;
  document.getElementById("runs-updated").textContent = `updated ${formatTime(new Date().toISOString())}`;
}

async function showFlows() {
  const { flows } = await api("/api/v1/flows");
  const rows = flows.map((flow) => {
    const page = `/ui/flows/${enc(flow.graph_id)}`;
    return el("tr", { "data-flow": flow.graph_id },
      el("td", {}, el("a", { href: page }, flow.name)),
      el("td", {}, `v${flow.version}`),
      el("td", {}, String(flow.id)),
      el("td", {}, el("a", { href: page }, el("code", {}, flow.graph_id))),
      el("td", { title: flow.created_at || "" }, formatTime(flow.created_at)));
  });
  document.querySelector("#flows tbody").replaceChildren(...rows);
  document.getElementById("flows-empty").hidden = rows.length > 0;
  document.getElementById("flows").hidden = rows.length === 0;
}

function bytes(size) {
  if (size === null || size === undefined) return "not measured yet";
  const units = [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]];
  const [unit, scale] = units.find(([, scale]) => size >= scale) || ["bytes", 1];
  return scale === 1 ? `${size} bytes` : `${(size / scale).toFixed(1)} ${unit}`;
}

function ofLimit(value, limit, show = String) {
  return limit === null ? show(value) : `${show(value)} of ${show(limit)}`;
}

async function showService() {
  const { queued, tenants } = await api("/api/v1/workers");
  const tiers = Object.entries(queued).sort(([a], [b]) => a.localeCompare(b));
  document.querySelector("#queued tbody").replaceChildren(...tiers.map(([tier, count]) =>
    el("tr", { "data-tier": tier }, el("td", {}, tier), el("td", {}, String(count)))));
  document.getElementById("queued-empty").hidden = tiers.length > 0;
  document.getElementById("queued").hidden = tiers.length === 0;
  document.querySelector("#tenants tbody").replaceChildren(...tenants.map((t) =>
    el("tr", { "data-tenant": t.tenant },
      el("td", {}, t.tenant),
      el("td", {}, ofLimit(t.running, t.running_limit)),
      el("td", {}, ofLimit(t.runs - t.running, t.queued_limit)),
      el("td", {}, ofLimit(t.stored_bytes, t.stored_limit, bytes)))));
}

let refreshing = false;

async function refresh() {
  if (refreshing) return; // e.g. still waiting for a key to be entered
  refreshing = true;
  try {
    await Promise.all([showRuns(), showFlows(), showService()]);
    document.getElementById("errors").replaceChildren();
  } catch (error) {
    showError(error);
  } finally {
    refreshing = false;
  }
}

await refresh();
setInterval(() => {
  if (document.visibilityState === "visible") refresh();
}, REFRESH_MS);
