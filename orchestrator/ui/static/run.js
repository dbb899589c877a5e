// /ui/runs/{id}: the run's graph, coloured live from its event stream; per node its
// attempts, timings, error, log lines and the artifacts it reads and writes; uploads
// to its WaitingURLs while it waits for them. A mapped node (run once per item of a
// collection) shows a bar of its items and its failed items, paged from the items
// endpoint; a collection's items are listed, paged, each with its download link.

import {
  api, badge, download, downloadLink, duration, el, enc, followEvents, formatClock,
  formatSeconds, formatTime, pathPart, showError,
} from "./common.js";
import { drawGraph, itemsDone } from "./graph.js";

const PHASES = [
  "queue_wait", "presign", "input_transfer", "create", "start", "run", "output_transfer", "remove",
];
const STREAMS = new Set(["stdout", "stderr", "pipewell"]);

const runId = pathPart(3);
const artifactPath = (edge) => `/api/v1/flow/artifact/${enc(runId)}/${enc(edge)}`;
const itemsPath = (node) => `/api/v1/flow/items/${enc(runId)}/${enc(node)}`;
const collectionPath = (edge) => `/api/v1/flow/collection/${enc(runId)}/${enc(edge)}`;
// Items asked for per page: failed items, and a collection's.
const FAILED_PAGE = 20;
const COLLECTION_PAGE = 100;
// Milliseconds between two readings of the failed items while new ones come in.
const FAILED_EVERY = 1000;
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
  $("retry").hidden = !(run.Status === "ERROR" || run.Status === "STOPPED");
  const runLink = (id) => el("a", { href: `/ui/runs/${enc(id)}` }, el("code", {}, id));
  $("retry-of-fact").hidden = !run.RetryOf;
  $("retry-of").replaceChildren(...(run.RetryOf ? [runLink(run.RetryOf)] : []));
  const retries = run.RetriedBy || [];
  $("retried-by-fact").hidden = !retries.length;
  $("retried-by").replaceChildren(...retries.flatMap((id, i) => (i ? [" ", runLink(id)] : [runLink(id)])));
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
  const mapped = Boolean(state && state.Items);
  const attempt = !state ? "—"
    : mapped ? `per item, at most ${state.MaxAttempts} each`
      : state.Attempt ? `${state.Attempt} of ${state.MaxAttempts}` : `not started (at most ${state.MaxAttempts})`;
  const facts = [
    ["Uses", el("code", {}, node.Uses || "")],
    ["State", state ? badge(state.Status) : "—"],
    ["Attempt", attempt],
  ];
  if (state && state.Cached) {
    // Its outputs are an earlier run's: no container ran for it here.
    facts.push(["Reused", el("span", {}, `outputs of node ${state.Cached.Node} of run `,
      el("a", { href: `/ui/runs/${enc(state.Cached.Run)}` }, el("code", {}, state.Cached.Run)))]);
  }
  $("node-facts").replaceChildren(...facts.map(([name, value]) =>
    el("div", {}, el("dt", {}, name), el("dd", { "data-fact": name.toLowerCase() }, value))));
  $("node-error").hidden = !(state && state.Error);
  $("node-error").textContent = (state && state.Error) || "";
  renderItems(state);
  const timings = (state && state.Timings) || {};
  const phases = [...PHASES.filter((p) => p in timings), ...Object.keys(timings).filter((p) => !PHASES.includes(p))];
  const rows = phases.map((phase) =>
    el("tr", {}, el("td", {}, phase.replace(/_/g, " ")), el("td", { class: "num" }, formatSeconds(timings[phase]))));
  if (!rows.length) {
    rows.push(el("tr", {}, el("td", { class: "muted" }, mapped ? "each item has its own" : "none yet")));
  }
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
  const state = run && run.NodeState && run.NodeState[selected];
  const mapped = Boolean(state && state.Items);
  // A mapped node's pane says so while it has no line: its items have their own.
  const last = keyOf(lines[lines.length - 1]) || (mapped ? "mapped" : "");
  if (shown.node === selected && shown.count === lines.length && shown.last === last) return;
  const box = $("log");
  const empty = mapped
    ? "No log lines of the node itself: each item has its own (a failed item's is beside)."
    : "No log lines yet.";
  box.replaceChildren(...(lines.length ? lines.map(lineOf) : [el("div", { class: "empty" }, empty)]));
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

// ------------------------------------------------------------------ a mapped node's items

// "312/5000 items (3 failed)": the items that ended, of how many ("?" while its
// collection is still coming in).
function itemsText(items) {
  const { done, failed, stopped, total } = itemsDone(items);
  const notes = [failed ? `${failed} failed` : "", stopped ? `${stopped} stopped` : ""].filter(Boolean);
  return `${done}/${total === null ? "?" : total} items${notes.length ? ` (${notes.join(", ")})` : ""}`;
}

// The failed items shown: whose, read when the node had how many, and where the next page starts.
let failed = { node: null, count: -1, items: [], next: null, loading: false, at: 0, timer: null };

function renderItems(state) {
  const items = state && state.Items;
  $("node-items").hidden = !items;
  if (!items) return;
  const { done, failed: bad, total, whole } = itemsDone(items);
  const bar = $("items-bar");
  bar.setAttribute("aria-valuemax", String(whole));
  bar.setAttribute("aria-valuenow", String(done));
  bar.setAttribute("aria-valuetext", itemsText(items));
  // Widths through the CSSOM: the page's policy refuses style attributes.
  bar.querySelector(".done").style.width = `${(100 * (done - bad)) / whole}%`;
  bar.querySelector(".failed").style.width = `${(100 * bad) / whole}%`;
  const share = Math.round((items.MinSuccess ?? 1) * 100);
  const running = (items.Counts && (items.Counts.RUNNING || 0) + (items.Counts.READY || 0)) || 0;
  $("items-text").replaceChildren(
    el("strong", {}, itemsText(items)),
    el("span", { class: "muted" },
      `${running ? ` · ${running} queued or running` : ""}` +
      `${total === null ? " · more may come" : ""} · ${share}% must succeed`));
  loadFailed(selected, bad);
}

// The selected node's first page of failed items, read again when it has more of them
// (at most once a second while they come in); "More" reads the pages after it.
function loadFailed(node, count) {
  if (failed.node !== node) {
    clearTimeout(failed.timer);
    failed = { node, count: -1, items: [], next: null, loading: false, at: 0, timer: null };
    $("failed-items").replaceChildren();
  }
  $("failed-box").hidden = count === 0;
  if (count === 0 || count === failed.count || failed.loading || failed.timer) return;
  const wait = failed.at + FAILED_EVERY - Date.now();
  if (wait > 0) {
    failed.timer = setTimeout(() => {
      failed.timer = null;
      const state = run && run.NodeState && run.NodeState[node];
      if (selected === node && state && state.Items) loadFailed(node, itemsDone(state.Items).failed);
    }, wait);
    return;
  }
  readFailed(node, count, null);
}

async function readFailed(node, count, after) {
  failed.loading = true;
  failed.at = Date.now();
  const query = new URLSearchParams({ status: "ERROR", limit: String(FAILED_PAGE) });
  if (after) query.set("after", after);
  try {
    const page = await api(`${itemsPath(node)}?${query}`);
    if (failed.node !== node) return; // another node was chosen meanwhile
    if (!after) {
      failed.items = [];
      failed.count = count;
    }
    failed.items.push(...page.Items);
    failed.next = page.Next;
    renderFailed();
  } catch (error) {
    if (failed.node === node) $("failed-note").textContent = `Could not read them: ${error.message}`;
  } finally {
    if (failed.node === node) failed.loading = false;
  }
  // Failures that came in while this page was read: read again (the run may have ended).
  const state = run && run.NodeState && run.NodeState[node];
  if (selected === node && failed.node === node && state && state.Items) {
    loadFailed(node, itemsDone(state.Items).failed);
  }
}

function renderFailed() {
  const list = $("failed-items");
  list.replaceChildren(...failed.items.map(failedRow));
  $("failed-more").hidden = !failed.next;
  const total = run && run.NodeState[failed.node] && run.NodeState[failed.node].Items;
  const count = total ? itemsDone(total).failed : failed.items.length;
  $("failed-note").textContent = `${failed.items.length} of ${count} shown`;
}

function failedRow(item) {
  const lines = item.Logs || [];
  const toggle = el("button", { type: "button", class: "link small", "aria-expanded": "false" },
    lines.length ? `log (${lines.length} line${lines.length === 1 ? "" : "s"})` : "no log lines");
  toggle.disabled = !lines.length;
  const log = el("div", { class: "log item-log", hidden: true }, ...lines.map(lineOf));
  toggle.addEventListener("click", () => {
    log.hidden = !log.hidden;
    toggle.setAttribute("aria-expanded", String(!log.hidden));
  });
  return el("li", { "data-item": item.Name },
    el("div", { class: "item-head" },
      el("code", { class: "item-name" }, item.Name),
      el("span", { class: "muted small" }, `attempt ${item.Attempt}`),
      toggle),
    el("div", { class: "reason" }, item.Error || "no error given"),
    log);
}

$("failed-more").addEventListener("click", () => {
  if (failed.next && !failed.loading) readFailed(failed.node, failed.count, failed.next);
});

// ------------------------------------------------------------------ a collection's items

let collection = { edge: null, items: [], next: null, loading: false };

function formatBytes(size) {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${(size / 1024 / 1024).toFixed(1)} MiB`;
}

// Open the card that lists the collection on `edge`, its first page read.
function showCollection(edge) {
  collection = { edge, items: [], next: null, loading: false };
  $("collection").hidden = false;
  $("collection-title").textContent = `Collection ${edge}`;
  $("collection-facts").textContent = "Reading its items…";
  $("collection-items").replaceChildren();
  $("collection-more").hidden = true;
  readCollection(edge, null);
  $("collection").scrollIntoView({ block: "nearest" });
}

async function readCollection(edge, after) {
  collection.loading = true;
  const query = new URLSearchParams({ limit: String(COLLECTION_PAGE) });
  if (after) query.set("after", after);
  try {
    const page = await api(`${collectionPath(edge)}?${query}`);
    if (collection.edge !== edge) return;
    collection.items.push(...page.Items);
    collection.next = page.Next;
    $("collection-facts").textContent = `${page.Count} item${page.Count === 1 ? "" : "s"}` +
      (page.Complete ? "" : " so far (more may come)") +
      ` · ${collection.items.length} shown · each link downloads one item`;
    $("collection-items").append(...page.Items.map(collectionRow));
    $("collection-more").hidden = !page.Next;
  } catch (error) {
    if (collection.edge === edge) $("collection-facts").textContent = `Could not read its items: ${error.message}`;
  } finally {
    if (collection.edge === edge) collection.loading = false;
  }
}

function collectionRow(item) {
  // A presigned URL: it needs no key, so a plain link downloads it.
  const name = item.Name.split("/").pop();
  return el("li", { "data-item": item.Name },
    el("a", { href: item.URL, download: name, class: "download" }, item.Name),
    el("span", { class: "muted small" }, formatBytes(item.Size)),
    el("span", { class: "muted small" }, item.ContentType || ""));
}

$("collection-more").addEventListener("click", () => {
  if (collection.next && !collection.loading) readCollection(collection.edge, collection.next);
});
$("collection-close").addEventListener("click", () => {
  collection = { edge: null, items: [], next: null, loading: false };
  $("collection").hidden = true;
});

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
  // A collection's WaitingURL (its artifact counts items) takes a zip or tar of them.
  const collection = entry.Artifact.Items !== undefined && entry.Artifact.Items !== null;
  const row = el("li", { "data-edge": edge },
    el("span", { class: "edge" }, edge),
    el("span", { class: "muted small", title: entry.TTL },
      `${collection ? "a zip or tar of its items, " : ""}upload before ${formatTime(entry.TTL)}`));
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
  const input = el("input", {
    type: "file", "data-edge": edge, "aria-label": `file for ${edge}`,
    accept: collection ? ".zip,.tar,.tgz,.tar.gz,application/zip,application/x-tar,application/gzip" : null,
  });
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
  // A collection's item count; null for one file (and "none" while it is not there).
  const count = (edge) => (edge in produced ? produced[edge].Items ?? null : "none");
  const shownNow = JSON.stringify([selected, ...bound.map(([way, b]) => [way, b.Edge, count(b.Edge)])]);
  if (shownNow === artifactsShown) return;
  artifactsShown = shownNow;
  const items = bound.map(([way, binding]) => {
    const edge = binding.Edge;
    const port = `${way} ${binding.Name} of ${selected}, on edge ${edge}`;
    const row = el("li", { "data-edge": edge, "data-way": way, title: port },
      el("span", { class: "direction" }, way));
    if (!(edge in produced)) {
      row.append(el("span", { class: "edge" }, edge), el("span", { class: "muted small" }, "not yet available"));
    } else if (count(edge) !== null) {
      // A collection: its items, not one file (the artifact endpoint has none to give).
      const list = el("button", { type: "button", class: "link", "data-collection": edge },
        `${count(edge)} item${count(edge) === 1 ? "" : "s"}`);
      list.addEventListener("click", () => showCollection(edge));
      row.append(el("span", { class: "edge collection" }, edge), list);
    } else {
      row.append(downloadLink(artifactPath(edge), edge, edge));
    }
    return row;
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

$("retry").addEventListener("click", async () => {
  $("retry").disabled = true;
  try {
    const next = await api(`/api/v1/flow/retry/${enc(runId)}`, { method: "POST" });
    window.location.assign(`/ui/runs/${enc(next.ID)}`);
  } catch (error) {
    showError(error);
    $("retry").disabled = false;
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
    onArtifact: (edge) => {
      const artifact = run && run.Artifacts && run.Artifacts[edge];
      if (artifact && artifact.Items !== undefined && artifact.Items !== null) showCollection(edge);
      else download(artifactPath(edge), edge).catch((error) => showError(error));
    },
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
