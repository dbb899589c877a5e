// /ui/runs/{id}: the run's graph, coloured live from its event stream; per node its
// attempts, timings, error, log lines and the artifacts it reads and writes; uploads
// to its WaitingURLs while it waits for them.

import {
  api, badge, download, downloadLink, duration, el, enc, followEvents, formatClock,
  formatSeconds, formatTime, pathPart, showError,
} from "./common.js";
import { drawGraph } from "./graph.js";

const PHASES = [
  "queue_wait", "presign", "input_transfer", "create", "start", "run", "output_transfer", "remove",
];
const STREAMS = new Set(["stdout", "stderr", "pipewell"]);

const runId = pathPart(3);
const artifactPath = (edge) => `/api/v1/flow/artifact/${enc(runId)}/${enc(edge)}`;
const $ = (id) => document.getElementById(id);

let graph = null;
let run = null;
let selected = null;
let nodes = new Map(); // id → Flow node
const logs = new Map(); // node id → log records, as the run has them plus live lines
let shown = { node: null, count: 0, last: "" }; // what the log pane holds
const uploaded = new Set(); // edges uploaded from this page
let artifactsShown = "";

$("run-id").textContent = runId;

function render(next) {
  run = next;
  $("run-status").replaceChildren(badge(run.Status));
  $("started").textContent = formatTime(run.StartedAt);
  $("finished").textContent = formatTime(run.FinishedAt);
  $("duration").textContent = duration(run.StartedAt, run.FinishedAt);
  $("run-error").hidden = !run.Error;
  $("run-error").textContent = run.Error || "";
  $("cancel").hidden = finished();
  for (const [id, state] of Object.entries(run.NodeState || {})) logs.set(id, [...(state.Logs || [])]);
  renderWaiting();
  graph.update(run);
  if (selected === null && nodes.size) select(defaultNode());
  else renderNode();
}

function finished() {
  return run !== null && ["COMPLETE", "ERROR", "STOPPED"].includes(run.Status);
}

function defaultNode() {
  const states = run ? run.NodeState || {} : {};
  for (const wanted of ["RUNNING", "RETRYING", "ERROR", "STOPPED"]) {
    for (const id of nodes.keys()) if (states[id] && states[id].Status === wanted) return id;
  }
  return nodes.keys().next().value;
}

function select(nodeId) {
  selected = nodeId;
  graph.select(nodeId);
  renderNode();
}

// ------------------------------------------------------------------ a node

function renderNode() {
  if (selected === null) return;
  const node = nodes.get(selected) || {};
  const state = (run && run.NodeState && run.NodeState[selected]) || null;
  $("node-title").textContent = `Node ${selected}`;
  $("log-node").textContent = `· ${selected}`;
  const facts = [
    ["Uses", el("code", {}, node.Uses || "")],
    ["State", state ? badge(state.Status) : "—"],
    ["Attempt", state ? (state.Attempt ? `${state.Attempt} of ${state.MaxAttempts}` : `not started (at most ${state.MaxAttempts})`) : "—"],
  ];
  $("node-facts").replaceChildren(...facts.map(([name, value]) =>
    el("div", {}, el("dt", {}, name), el("dd", { "data-fact": name.toLowerCase() }, value))));
  $("node-error").hidden = !(state && state.Error);
  $("node-error").textContent = (state && state.Error) || "";
  const timings = (state && state.Timings) || {};
  const phases = [...PHASES.filter((p) => p in timings), ...Object.keys(timings).filter((p) => !PHASES.includes(p))];
  const rows = phases.map((phase) =>
    el("tr", {}, el("td", {}, phase.replace(/_/g, " ")), el("td", { class: "num" }, formatSeconds(timings[phase]))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "muted" }, "none yet")));
  $("timings").tBodies[0].replaceChildren(...rows);
  renderArtifacts();
  renderLogs();
}

function lineOf(record) {
  const stream = STREAMS.has(record.stream) ? record.stream : "other";
  return el("div", { class: `line ${stream}` },
    el("span", { class: "time", title: record.timestamp || "" }, formatClock(record.timestamp)),
    el("span", { class: "attempt", title: "attempt" }, record.attempt ? `#${record.attempt}` : ""),
    el("span", { class: "stream" }, record.stream || ""),
    el("span", { class: "message" }, record.message));
}

const keyOf = (record) => (record ? `${record.timestamp}|${record.message}` : "");

function renderLogs() {
  const lines = logs.get(selected) || [];
  const last = keyOf(lines[lines.length - 1]);
  if (shown.node === selected && shown.count === lines.length && shown.last === last) return;
  const box = $("log");
  box.replaceChildren(...(lines.length ? lines.map(lineOf) : [el("div", { class: "empty" }, "No log lines yet.")]));
  shown = { node: selected, count: lines.length, last };
  follow();
}

function appendLog(record) {
  const lines = logs.get(record.node) || [];
  lines.push(record);
  logs.set(record.node, lines);
  if (record.node !== selected) return;
  const box = $("log");
  if (shown.count === 0) box.replaceChildren();
  box.append(lineOf(record));
  shown = { node: selected, count: lines.length, last: keyOf(record) };
  follow();
}

function follow() {
  if ($("follow").checked) $("log").scrollTop = $("log").scrollHeight;
}

// ------------------------------------------------------------------ uploads and artifacts

function rowFor(list, edge) {
  return [...list.children].find((li) => li.dataset.edge === edge);
}

function renderWaiting() {
  const list = $("waiting-list");
  const waiting = new Map((run.WaitingURLs || []).map((w) => [w.Artifact.EdgeName, w]));
  for (const li of [...list.children]) {
    if (!waiting.has(li.dataset.edge) && !uploaded.has(li.dataset.edge)) li.remove();
  }
  for (const [edge, entry] of waiting) if (!rowFor(list, edge)) list.append(uploadRow(entry));
  // Rows of inputs uploaded from here stay while others wait, to say it worked; once
  // nothing waits, or the run is over, there is nothing left to upload.
  $("waiting").hidden = finished() || waiting.size === 0;
}

function uploadRow(entry) {
  const edge = entry.Artifact.EdgeName;
  const row = el("li", { "data-edge": edge },
    el("span", { class: "edge" }, edge),
    el("span", { class: "muted small", title: entry.TTL }, `upload before ${formatTime(entry.TTL)}`));
  const target = new URL(entry.PutURL, location.href);
  if (target.origin !== location.origin) {
    // The page's Content-Security-Policy only lets it send to this origin.
    const quoted = `'${entry.PutURL.replace(/'/g, "'\\''")}'`;
    row.append(el("div", {},
      el("p", { class: "muted" }, `This input's URL is on ${target.origin}: upload it from a ` +
        "terminal (or open this page on that origin):"),
      el("pre", {}, `curl -T FILE ${quoted}`)));
    return row;
  }
  const input = el("input", { type: "file", "data-edge": edge, "aria-label": `file for ${edge}` });
  const button = el("button", { type: "button", class: "primary", "data-upload": edge }, "Upload");
  const note = el("span", { class: "muted note" });
  button.addEventListener("click", async () => {
    const file = input.files[0];
    if (!file) {
      note.textContent = "Choose a file first.";
      return;
    }
    button.disabled = input.disabled = true;
    note.className = "muted note";
    note.textContent = "Uploading…";
    try {
      // The WaitingURL is its own credential: no key goes with it (an s3 URL would refuse one).
      const response = await fetch(entry.PutURL, { method: "PUT", body: file });
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        throw new Error((body && body.message) || `${response.status} ${response.statusText}`);
      }
      uploaded.add(edge);
      note.className = "ok note";
      note.textContent = `Uploaded ${file.name} (${file.size} bytes).`;
    } catch (error) {
      button.disabled = input.disabled = false;
      note.className = "error note";
      note.textContent = `Upload failed: ${error.message}`;
    }
  });
  row.append(input, button, note);
  return row;
}

// The selected node's inputs and outputs, as its graph binds them: each links its
// artifact once the run has it.
function renderArtifacts() {
  const node = nodes.get(selected) || {};
  const produced = (run && run.Artifacts) || {};
  const bound = [
    ...(node.Inputs || []).map((binding) => ["input", binding]),
    ...(node.Outputs || []).map((binding) => ["output", binding]),
  ];
  const shownNow = JSON.stringify([selected, ...bound.map(([way, b]) => [way, b.Edge, b.Edge in produced])]);
  if (shownNow === artifactsShown) return;
  artifactsShown = shownNow;
  const items = bound.map(([way, binding]) => {
    const edge = binding.Edge;
    const port = `${way} ${binding.Name} of ${selected}, on edge ${edge}`;
    return el("li", { "data-edge": edge, "data-way": way, title: port },
      el("span", { class: "direction" }, way),
      edge in produced
        ? downloadLink(artifactPath(edge), edge, edge)
        : el("span", { class: "edge" }, edge),
      edge in produced ? null : el("span", { class: "muted small" }, "not yet available"));
  });
  if (!items.length) items.push(el("li", { class: "muted" }, "none: this node reads and writes no edge"));
  $("artifacts").replaceChildren(...items);
}

// ------------------------------------------------------------------ start

$("cancel").addEventListener("click", async () => {
  // Stopping cannot be undone: ask first.
  if (!window.confirm("Stop this run? Nodes at work are stopped and the run ends STOPPED.")) return;
  $("cancel").disabled = true;
  try {
    render(await api(`/api/v1/flow/cancel/${enc(runId)}`, { method: "POST" }));
  } catch (error) {
    showError(error);
  } finally {
    $("cancel").disabled = false;
  }
});

function onEvent(name, data) {
  if (name === "log") appendLog(data);
  else if (name === "status" || name === "end") render(data);
  else if (name === "delta" && run) render(mergeDelta(run, data));
}

// A big run's change: its own fields, and only the nodes and artifacts that changed.
function mergeDelta(whole, delta) {
  const { NodeState, Artifacts, Counts, ...fields } = delta;
  return {
    ...whole,
    ...fields,
    NodeState: { ...whole.NodeState, ...NodeState },
    Artifacts: { ...whole.Artifacts, ...Artifacts },
  };
}

function onStreamState(state) {
  $("stream-state").textContent = state === "live" ? "● live" : "reconnecting…";
}

// A run that cannot be read: why, and the way back; no empty page under it.
function showUnreadable(error) {
  $("run-view").hidden = true;
  document.title = `${error.status === 404 ? "Run not found" : "Run"} · Pipewell`;
  $("errors").replaceChildren(el("div", { class: "error", role: "alert" },
    el("p", { class: "reason" }, `Run ${runId}: ${error.message}`),
    el("a", { href: "/ui/", class: "back" }, "← Back to the runs")));
}

async function start() {
  let flow;
  try {
    flow = await api(`/api/v1/flow/graph/${enc(runId)}`);
  } catch (error) {
    showUnreadable(error);
    return;
  }
  // Shown before the graph is drawn: its labels are sized from the laid-out text.
  $("run-view").hidden = false;
  $("flow-name").textContent = flow.Name;
  document.title = `${flow.Name} · run · Pipewell`;
  nodes = new Map(flow.Nodes.map((node) => [node.ID, node]));
  graph = drawGraph($("graph"), flow.Nodes, {
    onSelect: select,
    onArtifact: (edge) => download(artifactPath(edge), edge).catch((error) => showError(error)),
  });
  setInterval(() => {
    if (run && !finished()) $("duration").textContent = duration(run.StartedAt, null);
  }, 1000);
  try {
    await followEvents(`/api/v1/flow/events/${enc(runId)}`, onEvent, onStreamState);
    $("stream-state").textContent = "";
  } catch (error) {
    $("stream-state").textContent = "";
    showError(error);
  }
}

start();
