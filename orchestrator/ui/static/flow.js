// /ui/flows/{graph_id}: a saved flow's graph, a form to run it, and "Use via API":
// a ready curl command per dialect with this version's id filled in. An entry edge
// that carries a collection says what its WaitingURL takes (a zip or a tar of the
// items) and how to put the items one by one instead.

import {
  ApiError, api, copyButton, el, enc, formatTime, pathPart, showError,
} from "./common.js";
import { drawGraph } from "./graph.js";

const $ = (id) => document.getElementById(id);
const ref = pathPart(3);

// A shell word: single quotes, each ' inside written as '\''.
function quote(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

function sampleInput(entries, files) {
  // An edge that takes a file gets the shape of one in JSON: base64 the caller fills in.
  const sample = (edge) => (files[edge]
    ? { base64: "<the file in base64>", content_type: files[edge].find((t) => !t.includes("*")) }
    : { text: "hello" });
  if (entries.length === 0) return {};
  if (entries.length === 1) return sample(entries[0]);
  return Object.fromEntries(entries.map((edge) => [edge, sample(edge)]));
}

function commandCard(command) {
  return el("div", { class: "command", "data-dialect": command.dialect },
    el("div", { class: "card-head" }, el("h3", {}, command.title),
      copyButton(() => command.text)),
    el("pre", {}, el("code", {}, command.text)),
    el("p", { class: "muted small" }, command.note));
}

// The commands of every dialect for `input`, as {dialect, title, note, text}.
function commands(flow, input) {
  const origin = location.origin;
  // One line, spaced: JSON strings hold no raw newline, so every newline is layout.
  const body = (value) => quote(JSON.stringify(value, null, 1).replace(/\n\s*/g, " "));
  const post = (path, auth, value, stream = false) => [
    `curl ${stream ? "-N " : ""}-X POST ${quote(origin + path)} \\`,
    `  -H "${auth}" \\`,
    "  -H 'Content-Type: application/json' \\",
    `  -d ${body(value)}`,
  ].join("\n");
  const bearer = "Authorization: Bearer $PIPEWELL_API_KEY";
  const apiKey = "x-api-key: $PIPEWELL_API_KEY";
  const basic = "Authorization: Basic $PIPEWELL_API_KEY";
  const gid = flow.graph_id;

  const nodes = flow.Flow.Nodes || [];
  const start = flow.entry_edges.length
    ? nodes.find((n) => (n.Inputs || []).some((i) => i.Edge === flow.entry_edges[0]))
    : null;
  const end = nodes.find((n) => (n.Outputs || []).some((o) => o.Edge === flow.terminal_edges[0]));
  const scade = {};
  if (start) {
    scade.start_node_id = start.ID;
    scade.node_settings = { [start.ID]: { data: input } };
  }
  if (end) scade.end_node_id = end.ID;
  const text = input && typeof input.text === "string" && Object.keys(input).length === 1
    ? input.text
    : JSON.stringify(input);

  return [
    {
      dialect: "axiom", title: "Axiom: invoke and wait",
      note: "202 with execution_id and result (output, or error).",
      text: post("/invocations/v1/flows/invoke", bearer, { graph_id: gid, input, wait: true }),
    },
    {
      dialect: "axiom-stream", title: "Axiom: stream",
      note: "Server-Sent Events: one frame per output, then a final frame.",
      text: post("/invocations/v1/flows/invoke/stream", bearer, { graph_id: gid, input }, true),
    },
    {
      dialect: "xpander", title: "xpander",
      note: "Waits, then answers xpander's task record (status, result).",
      text: post(`/v1/workflows/${enc(gid)}/invoke`, apiKey, { input }),
    },
    {
      dialect: "scade", title: "Scade",
      note: "Answers a task; poll it with GET /api/v1/task/{id} until status 3 (finished) or 4.",
      text: `${post(`/api/v1/scade/flow/${flow.id}/execute`, basic, scade)}\n` +
        `# then: curl ${quote(`${origin}/api/v1/task/TASK_ID`)} -H "${basic}"`,
    },
    {
      dialect: "langflow", title: "Langflow",
      note: "The input is text: the flow gets {\"text\": input_value}.",
      text: post(`/api/v1/run/${enc(gid)}`, apiKey, { input_value: text }),
    },
    {
      dialect: "native", title: "Native (Pupload's Flow API)",
      note: "Submits this version as it is saved; the FlowRun's WaitingURLs take the inputs " +
        "(curl -T FILE \"$PUT_URL\").",
      text: [
        `curl -s ${quote(`${origin}/api/v1/flows/${enc(gid)}`)} -H "${bearer}" \\`,
        "  | jq '{Flow, NodeDefs}' \\",
        `  | curl -s -X POST ${quote(`${origin}/api/v1/flow/test`)} -H "${bearer}" \\`,
        "      -H 'Content-Type: application/json' --data-binary @-",
      ].join("\n"),
    },
  ];
}

// A file extension for a MIME type, for the sample file name of a flow that takes one.
const EXTENSIONS = {
  "application/zip": "zip", "application/pdf": "pdf", "application/json": "json",
  "application/gzip": "gz", "application/x-tar": "tar", "text/csv": "csv", "text/plain": "txt",
  "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif",
  "image/tiff": "tiff", "image/bmp": "bmp", "video/mp4": "mp4", "audio/mpeg": "mp3",
};
const FAMILIES = { image: "png", video: "mp4", audio: "mp3", text: "txt" };

// The type of the file at `path` by its extension, when the flow takes that type; else
// the one concrete type the flow takes; else none (the service reads the bytes).
function typeOf(path, types) {
  const extension = path.split(".").pop().toLowerCase();
  const aliases = { jpeg: "image/jpeg", tif: "image/tiff" };
  const named = aliases[extension]
    || Object.keys(EXTENSIONS).find((type) => EXTENSIONS[type] === extension);
  const taken = (type) => types.some((t) => t === type || t === "*/*"
    || (t.endsWith("/*") && type.startsWith(t.slice(0, -1))));
  if (named && taken(named)) return named;
  const concrete = types.filter((t) => !t.includes("*"));
  return concrete.length === 1 ? concrete[0] : null;
}

function sampleFile(types) {
  const type = types.find((t) => !t.includes("*")) || types[0] || "";
  const extension = EXTENSIONS[type] || FAMILIES[type.split("/")[0]] || "bin";
  return `input.${extension}`;
}

// The commands of every dialect sending the file at `path` to a flow whose one entry
// edge takes files of `types`: base64 in JSON (a here-document, so no argument limit
// applies to a large file), a multipart upload, the file as a webhook's body.
function fileCommands(flow, path, types) {
  const origin = location.origin;
  const gid = flow.graph_id;
  const edge = flow.entry_edges[0];
  const type = typeOf(path, types);
  const sent = type || "application/octet-stream";
  const name = path.split("/").pop();
  const bearer = "Authorization: Bearer $PIPEWELL_API_KEY";
  const apiKey = "x-api-key: $PIPEWELL_API_KEY";
  const basic = "Authorization: Basic $PIPEWELL_API_KEY";
  const encoded = `$(base64 < ${quote(path)} | tr -d '\\n')`;
  const MARK = "@@BASE64@@";
  // JSON in an unquoted here-document: its $, ` and \ are escaped, then the one
  // command substitution that reads the file goes in.
  const heredoc = (route, auth, value, stream = false) => [
    `curl ${stream ? "-N " : ""}-X POST ${quote(origin + route)} \\`,
    `  -H "${auth}" \\`,
    "  -H 'Content-Type: application/json' \\",
    "  --data-binary @- <<EOF",
    JSON.stringify(value).replace(/[\\$`]/g, "\\$&").replace(MARK, encoded),
    "EOF",
  ].join("\n");
  const file = { base64: MARK, ...(type ? { content_type: type } : {}), name };
  const dataUrl = `data:${sent};base64,${MARK}`;
  const nodes = flow.Flow.Nodes || [];
  const start = nodes.find((n) => (n.Inputs || []).some((i) => i.Edge === edge));
  const end = nodes.find((n) => (n.Outputs || []).some((o) => o.Edge === flow.terminal_edges[0]));
  const scade = { start_node_id: start.ID, node_settings: { [start.ID]: { data: { file: dataUrl } } } };
  if (end) scade.end_node_id = end.ID;
  return [
    {
      dialect: "axiom", title: "Axiom: invoke and wait",
      note: "The file goes as base64 in the input. 202 with execution_id and result.",
      text: heredoc("/invocations/v1/flows/invoke", bearer, { graph_id: gid, input: file, wait: true }),
    },
    {
      dialect: "axiom-stream", title: "Axiom: stream",
      note: "Server-Sent Events: one frame per output, then a final frame.",
      text: heredoc("/invocations/v1/flows/invoke/stream", bearer, { graph_id: gid, input: file }, true),
    },
    {
      dialect: "xpander", title: "xpander",
      note: "input.files takes URLs: here a data URL. Waits, then answers the task record.",
      text: heredoc(`/v1/workflows/${enc(gid)}/invoke`, apiKey, { input: { files: [dataUrl] } }),
    },
    {
      dialect: "scade", title: "Scade",
      note: "The start node's data holds the file as a data URL. Poll the task it answers.",
      text: `${heredoc(`/api/v1/scade/flow/${flow.id}/execute`, basic, scade)}\n` +
        `# then: curl ${quote(`${origin}/api/v1/task/TASK_ID`)} -H "${basic}"`,
    },
    {
      dialect: "langflow", title: "Langflow",
      note: "Upload the file (multipart, as Langflow's files API), then run with its " +
        "file_path in tweaks. Needs jq.",
      text: [
        `FILE_PATH=$(curl -s -X POST ${quote(`${origin}/api/v1/files/upload/${enc(gid)}`)} \\`,
        `  -H "${apiKey}" -F ${quote(`file=@${path}${type ? `;type=${type}` : ""}`)} | jq -r .file_path)`,
        `curl -X POST ${quote(`${origin}/api/v1/run/${enc(gid)}`)} \\`,
        `  -H "${apiKey}" \\`,
        "  -H 'Content-Type: application/json' \\",
        `  -d "{\\"tweaks\\": {\\"${edge}\\": {\\"path\\": \\"$FILE_PATH\\"}}}"`,
      ].join("\n"),
    },
    {
      dialect: "langflow-webhook", title: "Langflow: webhook",
      note: "The body is the file. 202 with the execution_id; follow it on the run's page.",
      text: [
        `curl -X POST ${quote(`${origin}/api/v1/webhook/${enc(gid)}`)} \\`,
        `  -H "${apiKey}" -H ${quote(`Content-Type: ${sent}`)} \\`,
        `  --data-binary ${quote(`@${path}`)}`,
      ].join("\n"),
    },
    {
      dialect: "native", title: "Native (Pupload's Flow API)",
      note: "Submits this version, then PUTs the file to its WaitingURL. Needs jq.",
      text: [
        `RUN=$(curl -s ${quote(`${origin}/api/v1/flows/${enc(gid)}`)} -H "${bearer}" \\`,
        "  | jq '{Flow, NodeDefs}' \\",
        `  | curl -s -X POST ${quote(`${origin}/api/v1/flow/test`)} -H "${bearer}" \\`,
        "      -H 'Content-Type: application/json' --data-binary @-)",
        `curl -T ${quote(path)} "$(jq -r '.WaitingURLs[0].PutURL' <<<"$RUN")"`,
        "jq -r .ID <<<\"$RUN\"",
      ].join("\n"),
    },
  ];
}

// ------------------------------------------------------------------ collections

// The entry edges the flow lists in Collections: each takes a zip or tar of its items.
function collectionEdges(flow) {
  const listed = new Set((flow.Flow && flow.Flow.Collections) || []);
  return flow.entry_edges.filter((edge) => listed.has(edge));
}

// Submit this version with curl and keep the FlowRun in $RUN (needs jq).
function submitLines(flow, bearer) {
  const origin = location.origin;
  return [
    `RUN=$(curl -s ${quote(`${origin}/api/v1/flows/${enc(flow.graph_id)}`)} -H "${bearer}" \\`,
    "  | jq '{Flow, NodeDefs}' \\",
    `  | curl -s -X POST ${quote(`${origin}/api/v1/flow/test`)} -H "${bearer}" \\`,
    "      -H 'Content-Type: application/json' --data-binary @-)",
  ];
}

// What a collection entry edge takes, and the commands that fill it: a zip PUT to its
// WaitingURL, or a PutURL per item (the files of a folder), then close.
function collectionNote(flow, edge) {
  const bearer = "Authorization: Bearer $PIPEWELL_API_KEY";
  const base = `${location.origin}/api/v1/flow/collection/$RUN_ID/${edge}`;
  const zip = {
    dialect: `collection-zip-${edge}`, title: `Native: a zip of ${edge}'s items`,
    note: "Submits this version, PUTs the zip to the edge's WaitingURL (a tar or .tar.gz " +
      "works too), then prints the run's ID. Needs jq.",
    text: [
      ...submitLines(flow, bearer),
      `PUT_URL=$(jq -r '.WaitingURLs[] | select(.Artifact.EdgeName == "${edge}") | .PutURL' <<<"$RUN")`,
      // An edge's name is letters, digits, '.', '_' and '-': a shell word as it is.
      `curl -T ${edge}.zip "$PUT_URL"`,
      "jq -r .ID <<<\"$RUN\"",
    ].join("\n"),
  };
  const items = {
    dialect: `collection-items-${edge}`, title: `Native: ${edge}'s items one by one`,
    note: `Each file of the folder ${edge}/ becomes an item named by its path there: ` +
      "a PutURL per name, a PUT each, then the collection is closed and the run starts. " +
      "Needs jq.",
    text: [
      ...submitLines(flow, bearer),
      "RUN_ID=$(jq -r .ID <<<\"$RUN\")",
      `NAMES=$(cd ${edge} && find . -type f | sed 's|^\\./||' | jq -R . | jq -sc '{Names: .}')`,
      `URLS=$(curl -s -X POST "${base}/items" -H "${bearer}" \\`,
      "  -H 'Content-Type: application/json' -d \"$NAMES\")",
      "for NAME in $(jq -r '.PutURLs | keys[]' <<<\"$URLS\"); do",
      `  curl -s -T ${edge}/"$NAME" "$(jq -r --arg n "$NAME" '.PutURLs[$n]' <<<"$URLS")"`,
      "done",
      `curl -s -X POST "${base}/close" -H "${bearer}"`,
    ].join("\n"),
  };
  return el("div", { class: "collection-note", "data-collection": edge },
    el("p", {},
      el("code", {}, edge), " is a collection: its WaitingURL takes a ",
      el("strong", {}, "zip or a tar"), " (.tar.gz too) of the items, which the service " +
      "expands into one item per file (junk such as __MACOSX/ skipped), and the nodes " +
      "reading it run once per item. Or put the items one by one: POST ",
      el("code", {}, `/api/v1/flow/collection/{run_id}/${edge}/items`), " with ",
      el("code", {}, '{"Names": [...]}'), " answers a PutURL per item; PUT each, then POST ",
      el("code", {}, `…/${edge}/close`), "."),
    commandCard(zip), commandCard(items));
}

// ------------------------------------------------------------------ Use via API

function showCommands(flow) {
  const area = $("api-input");
  const fileEdges = Object.keys(flow.entry_files || {});
  const collections = collectionEdges(flow);
  $("collection-notes").replaceChildren(...collections.map((edge) => collectionNote(flow, edge)));
  if (flow.entry_edges.length === 1 && fileEdges.length === 1) {
    // The input is a file: the commands read it from a path on the caller's machine.
    const types = flow.entry_files[fileEdges[0]];
    area.hidden = true;
    $("api-input-label").hidden = true;
    const field = $("api-file");
    $("api-file-label").hidden = false;
    $("api-file-takes").textContent = collections.includes(fileEdges[0])
      ? " (a zip or tar of the collection's items)"
      : types.length ? ` (it takes ${types.join(", ")})` : "";
    field.value = collections.includes(fileEdges[0]) ? `${fileEdges[0]}.zip` : sampleFile(types);
    const renderFile = () => $("commands").replaceChildren(
      ...fileCommands(flow, field.value.trim() || sampleFile(types), types).map(commandCard));
    field.addEventListener("input", renderFile);
    renderFile();
    return;
  }
  const render = () => {
    let input;
    try {
      input = JSON.parse(area.value);
      if (input === null || typeof input !== "object" || Array.isArray(input)) {
        throw new Error("the input is a JSON object");
      }
    } catch (error) {
      $("api-input-error").hidden = false;
      $("api-input-error").textContent = `Not a JSON object: ${error.message}`;
      return;
    }
    $("api-input-error").hidden = true;
    $("commands").replaceChildren(...commands(flow, input).map(commandCard));
  };
  area.value = JSON.stringify(sampleInput(flow.entry_edges, flow.entry_files || {}));
  area.addEventListener("input", render);
  render();
}

// ------------------------------------------------------------------ the run form

function flagInputs() {
  return [...$("flags").querySelectorAll("input[data-flag]")];
}

function showForm(flow) {
  const inputs = $("inputs");
  const collections = collectionEdges(flow);
  for (const edge of flow.entry_edges) {
    const collection = collections.includes(edge);
    inputs.append(el("div", { class: "field" },
      el("label", {}, edge),
      el("input", {
        type: "file", "data-edge": edge, "aria-label": `file for ${edge}`,
        accept: collection ? ".zip,.tar,.tgz,.tar.gz,application/zip,application/x-tar,application/gzip" : null,
      }),
      collection ? el("div", { class: "hint" }, "a collection: a zip or tar of its items") : null));
  }
  if (!flow.entry_edges.length) inputs.append(el("p", { class: "muted" }, "This flow takes no upload."));

  const defs = new Map((flow.NodeDefs || []).map((d) => [`${d.Publisher}/${d.Name}`, d]));
  const current = new Map((flow.Flow.Nodes || []).map((n) =>
    [n.ID, new Map((n.Flags || []).map((f) => [f.Name, String(f.Value)]))]));
  const reset = (profile = {}) => {
    for (const input of flagInputs()) {
      const { node, flag } = input.dataset;
      const fromProfile = profile[node] && profile[node][flag];
      input.value = fromProfile !== undefined ? String(fromProfile) : current.get(node).get(flag) || "";
    }
  };
  // What a flag takes, as the service checks it (Type, Values, Min, Max).
  const flagTakes = (declared) => {
    if (declared.Values) return `one of ${declared.Values.join(", ")}`;
    const type = declared.Type && declared.Type !== "string" ? declared.Type : "";
    const low = declared.Min ?? null, high = declared.Max ?? null;
    const range = low !== null && high !== null ? `${low} to ${high}`
      : low !== null ? `${low} or more` : high !== null ? `${high} or less` : "";
    return [type, range].filter(Boolean).join(", ");
  };
  for (const node of flow.nodes.filter((n) => n.flags.length)) {
    const def = defs.get(node.uses) || { Flags: [] };
    const set = el("fieldset", {}, el("legend", {}, `Flags of ${node.id} (${node.uses})`));
    for (const flag of node.flags) {
      const declared = (def.Flags || []).find((f) => f.Name === flag) || {};
      const hint = [declared.Description, flagTakes(declared)].filter(Boolean).join(" · ");
      set.append(el("div", { class: "field" },
        el("label", {}, flag),
        el("input", {
          "data-node": node.id, "data-flag": flag, "aria-label": `flag ${flag} of ${node.id}`,
          placeholder: declared.Default !== undefined && declared.Default !== null
            ? `default: ${declared.Default}` : "",
        }),
        hint ? el("div", { class: "hint" }, hint) : null));
    }
    $("flags").append(set);
  }
  const profiles = Object.keys(flow.configs || {});
  if (profiles.length) {
    const select = el("select", { id: "config", "aria-label": "config profile" },
      el("option", { value: "" }, "(none: the flow's own flags)"),
      ...profiles.map((id) => el("option", { value: id }, id)));
    select.addEventListener("change", () => reset(flow.configs[select.value] || {}));
    $("config-row").append(el("div", { class: "field" }, el("label", {}, "Config profile"), select));
  }
  reset();

  $("run-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("run-form").querySelector("button[type=submit]");
    button.disabled = true;
    $("run-errors").replaceChildren();
    try {
      location.assign(`/ui/runs/${enc(await runIt(flow))}`);
    } catch (error) {
      const details = error instanceof ApiError && error.body && error.body.errors
        ? error.body.errors.map((e) => el("li", {}, e.message)) : [];
      showError(error, $("run-errors"));
      if (details.length) $("run-errors").append(el("ul", { class: "error" }, ...details));
      button.disabled = false;
      $("run-progress").textContent = "";
    }
  });
}

async function runIt(flow) {
  const submission = { Flow: structuredClone(flow.Flow), NodeDefs: flow.NodeDefs };
  for (const input of flagInputs()) {
    const { node: nodeId, flag } = input.dataset;
    const node = submission.Flow.Nodes.find((n) => n.ID === nodeId);
    node.Flags = (node.Flags || []).filter((f) => f.Name !== flag);
    if (input.value !== "") node.Flags.push({ Name: flag, Value: input.value });
  }
  $("run-progress").textContent = "Starting…";
  const run = await api("/api/v1/flow/test", { method: "POST", json: submission });
  for (const input of $("inputs").querySelectorAll("input[type=file]")) {
    const file = input.files[0];
    const waiting = (run.WaitingURLs || []).find((w) => w.Artifact.EdgeName === input.dataset.edge);
    if (!file || !waiting) continue;
    // Another origin's URL (an s3 store): the run page says how to upload it.
    if (new URL(waiting.PutURL, location.href).origin !== location.origin) continue;
    $("run-progress").textContent = `Uploading ${file.name}…`;
    const response = await fetch(waiting.PutURL, { method: "PUT", body: file });
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      throw new Error(`upload of ${input.dataset.edge} failed: ${(body && body.message) || response.status}`);
    }
  }
  return run.ID;
}

// ------------------------------------------------------------------ start

async function start() {
  let flow;
  try {
    flow = await api(`/api/v1/flows/${enc(ref)}`);
  } catch (error) {
    showError(error);
    return;
  }
  $("flow-name").textContent = `${flow.name} · v${flow.version}`;
  document.title = `${flow.name} · Pipewell`;
  const facts = [
    ["graph_id", el("code", { id: "graph-id" }, flow.graph_id)],
    ["id", String(flow.id)],
    ["saved", formatTime(flow.created_at)],
    ["entry edges", flow.entry_edges.join(", ") || "none"],
    ["results", flow.terminal_edges.join(", ") || "none"],
  ];
  $("flow-facts").replaceChildren(...facts.map(([name, value]) =>
    el("div", {}, el("dt", {}, name), el("dd", {}, value))));
  drawGraph($("graph"), flow.Flow.Nodes || []).update(null);
  showForm(flow);
  showCommands(flow);
}

start();
