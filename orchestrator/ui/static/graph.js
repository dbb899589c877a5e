// A flow's DAG in SVG: a layered layout (each node's column is its longest path
// from the sources), drawn without any library.
//
// Vertices are the flow's nodes, plus one "input" per edge no node produces and
// one "output" per edge no node reads; each arc is labelled with its edge's name.

import { stateClass } from "./common.js";

const SVG = "http://www.w3.org/2000/svg";
const NODE = { width: 164, height: 60 };
const PORT = { width: 132, height: 40 };
const GAP_X = 104; // room for an edge's label between two columns
// A wide graph is shrunk to its box down to this scale, and scrolls beyond it.
const MIN_SCALE = 0.7;
const GAP_Y = 26;
const MARGIN = 16;

// The vertices and arcs of Flow.Nodes, each vertex with its column ("rank").
export function layout(nodes) {
  const producer = new Map();
  const consumers = new Map();
  const edgeNames = [];
  const seen = (edge) => {
    if (!consumers.has(edge)) {
      consumers.set(edge, []);
      edgeNames.push(edge);
    }
  };
  for (const node of nodes) {
    for (const input of node.Inputs || []) {
      seen(input.Edge);
      consumers.get(input.Edge).push(node.ID);
    }
    for (const output of node.Outputs || []) {
      seen(output.Edge);
      producer.set(output.Edge, node.ID);
    }
  }
  const vertices = new Map();
  for (const node of nodes) {
    vertices.set(`n:${node.ID}`, { key: `n:${node.ID}`, kind: "node", id: node.ID, uses: node.Uses });
  }
  const arcs = [];
  for (const edge of edgeNames) {
    let from = producer.has(edge) ? `n:${producer.get(edge)}` : null;
    if (from === null) {
      from = `i:${edge}`;
      vertices.set(from, { key: from, kind: "input", edge });
    }
    let targets = consumers.get(edge).map((id) => `n:${id}`);
    if (targets.length === 0) {
      const to = `o:${edge}`;
      vertices.set(to, { key: to, kind: "output", edge });
      targets = [to];
    }
    for (const to of targets) arcs.push({ from, to, edge });
  }
  rank(vertices, arcs);
  const columns = order(vertices, arcs);
  place(columns);
  return { vertices, arcs, columns, ...size(columns) };
}

// Longest path from the sources (Kahn's order); an input sits just left of its first reader.
function rank(vertices, arcs) {
  const incoming = new Map([...vertices.keys()].map((key) => [key, 0]));
  const out = new Map([...vertices.keys()].map((key) => [key, []]));
  for (const arc of arcs) {
    incoming.set(arc.to, incoming.get(arc.to) + 1);
    out.get(arc.from).push(arc.to);
  }
  for (const vertex of vertices.values()) vertex.rank = 0;
  const ready = [...vertices.keys()].filter((key) => incoming.get(key) === 0);
  let placed = 0;
  while (ready.length) {
    const key = ready.shift();
    placed += 1;
    for (const next of out.get(key)) {
      const vertex = vertices.get(next);
      vertex.rank = Math.max(vertex.rank, vertices.get(key).rank + 1);
      incoming.set(next, incoming.get(next) - 1);
      if (incoming.get(next) === 0) ready.push(next);
    }
  }
  if (placed < vertices.size) {
    // Not a DAG (the service refuses those): put what is left after the rest.
    const last = Math.max(...[...vertices.values()].map((v) => v.rank));
    for (const [key, count] of incoming) if (count > 0) vertices.get(key).rank = last + 1;
  }
  for (const vertex of vertices.values()) {
    if (vertex.kind !== "input") continue;
    const readers = out.get(vertex.key).map((key) => vertices.get(key).rank);
    if (readers.length) vertex.rank = Math.max(0, Math.min(...readers) - 1);
  }
}

// Columns of vertices, ordered by the mean position of their neighbours (a few sweeps
// each way), which keeps arcs from crossing in the usual flows.
function order(vertices, arcs) {
  const width = Math.max(0, ...[...vertices.values()].map((v) => v.rank)) + 1;
  const columns = Array.from({ length: width }, () => []);
  for (const vertex of vertices.values()) columns[vertex.rank].push(vertex);
  const neighbours = (vertex, side) =>
    arcs
      .filter((arc) => (side === "in" ? arc.to : arc.from) === vertex.key)
      .map((arc) => vertices.get(side === "in" ? arc.from : arc.to));
  const index = () => columns.forEach((column) => column.forEach((v, i) => (v.index = i)));
  index();
  for (let sweep = 0; sweep < 4; sweep++) {
    const side = sweep % 2 === 0 ? "in" : "out";
    const ranks = side === "in" ? [...columns.keys()] : [...columns.keys()].reverse();
    for (const r of ranks) {
      const weight = new Map();
      for (const vertex of columns[r]) {
        const around = neighbours(vertex, side);
        const mean = around.length
          ? around.reduce((sum, v) => sum + v.index / Math.max(1, columns[v.rank].length), 0) /
            around.length
          : vertex.index / Math.max(1, columns[r].length);
        weight.set(vertex.key, mean);
      }
      columns[r].sort((a, b) => weight.get(a.key) - weight.get(b.key) || a.index - b.index);
      index();
    }
  }
  return columns;
}

function box(vertex) {
  return vertex.kind === "node" ? NODE : PORT;
}

function place(columns) {
  const heights = columns.map((column) =>
    column.reduce((sum, v) => sum + box(v).height, 0) + GAP_Y * Math.max(0, column.length - 1));
  const tallest = Math.max(0, ...heights);
  columns.forEach((column, r) => {
    let y = MARGIN + (tallest - heights[r]) / 2;
    for (const vertex of column) {
      const { width, height } = box(vertex);
      vertex.x = MARGIN + r * (NODE.width + GAP_X) + (NODE.width - width) / 2;
      vertex.y = y;
      vertex.width = width;
      vertex.height = height;
      y += height + GAP_Y;
    }
  });
}

function size(columns) {
  const tallest = Math.max(0, ...columns.flat().map((v) => v.y + v.height));
  return {
    width: MARGIN * 2 + columns.length * NODE.width + Math.max(0, columns.length - 1) * GAP_X,
    height: tallest + MARGIN,
  };
}

// ------------------------------------------------------------------ drawing

function svg(tag, attributes = {}, text = null) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  if (text !== null) element.textContent = text;
  return element;
}

// A mapped node's items (NodeState.Items): how many ended, failed and stopped, of how
// many (total null until its collection is complete; whole: what a bar is a share of).
export function itemsDone(items) {
  const counts = (items && items.Counts) || {};
  const failed = counts.ERROR || 0;
  const stopped = counts.STOPPED || 0;
  const done = (counts.COMPLETE || 0) + failed + stopped;
  const total = items && items.Total !== undefined && items.Total !== null ? items.Total : null;
  const known = Object.values(counts).reduce((sum, n) => sum + n, 0);
  return { done, failed, stopped, total, whole: Math.max(total ?? 0, known, 1) };
}

function clip(text, length) {
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

// Draw Flow.Nodes into `container`. Returns {update(run), select(nodeId)}:
// update colours each node by its state and links produced artifacts
// (onArtifact(edge) when one is clicked); onSelect(nodeId) when a node is chosen.
export function drawGraph(container, nodes, { onSelect = () => {}, onArtifact = () => {} } = {}) {
  const graph = layout(nodes);
  const root = svg("svg", {
    class: "graph",
    width: graph.width,
    height: graph.height,
    viewBox: `0 0 ${graph.width} ${graph.height}`,
    role: "group",
    "aria-label": "the flow's graph",
  });
  const defs = svg("defs");
  const marker = svg("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
  });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
  defs.append(marker);
  root.append(defs);

  const arcLayer = svg("g", { class: "arcs" });
  const labelLayer = svg("g", { class: "labels" });
  const vertexLayer = svg("g", { class: "vertices" });
  root.append(arcLayer, vertexLayer, labelLayer);
  container.replaceChildren(root);
  const fit = () => {
    const room = container.clientWidth - 2;
    const scale = room > 0 && graph.width > room ? Math.max(MIN_SCALE, room / graph.width) : 1;
    root.setAttribute("width", String(graph.width * scale));
    root.setAttribute("height", String(graph.height * scale));
  };
  fit();
  new ResizeObserver(fit).observe(container);

  const labels = [];
  for (const arc of graph.arcs) {
    const a = graph.vertices.get(arc.from);
    const b = graph.vertices.get(arc.to);
    const x1 = a.x + a.width;
    const y1 = a.y + a.height / 2;
    const x2 = b.x - 2;
    const y2 = b.y + b.height / 2;
    const dx = Math.max(30, (x2 - x1) / 2);
    arcLayer.append(svg("path", {
      d: `M ${x1} ${y1} C ${x1 + dx} ${y1}, ${x2 - dx} ${y2}, ${x2} ${y2}`,
      class: "arc", "marker-end": "url(#arrow)", "data-edge": arc.edge,
    }));
    const group = svg("g", { class: "edge-label", "data-edge": arc.edge });
    const text = svg("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 + 4, "text-anchor": "middle" },
      clip(arc.edge, 18));
    group.append(svg("title", {}, arc.edge), text);
    labelLayer.append(group);
    labels.push({ edge: arc.edge, group, text });
  }
  // A background behind each label, sized once the text is laid out.
  for (const label of labels) {
    const bounds = label.text.getBBox();
    label.group.prepend(svg("rect", {
      x: bounds.x - 4, y: bounds.y - 1, width: bounds.width + 8, height: bounds.height + 2,
      rx: 3, class: "label-bg",
    }));
    label.group.addEventListener("click", () => {
      if (label.group.classList.contains("available")) onArtifact(label.edge);
    });
  }

  const shapes = new Map();
  for (const vertex of graph.vertices.values()) {
    const group = svg("g", { class: `vertex ${vertex.kind}`, transform: `translate(${vertex.x} ${vertex.y})` });
    const rect = svg("rect", {
      width: vertex.width, height: vertex.height, rx: vertex.kind === "node" ? 8 : vertex.height / 2,
    });
    group.append(rect);
    let status;
    if (vertex.kind === "node") {
      group.setAttribute("data-node", vertex.id);
      group.setAttribute("tabindex", "0");
      group.setAttribute("role", "button");
      group.setAttribute("aria-label", `node ${vertex.id}`);
      const title = svg("text", { x: 12, y: 20, class: "title" }, clip(vertex.id, 19));
      const uses = svg("text", { x: 12, y: 36, class: "uses" }, clip(vertex.uses || "", 24));
      status = svg("text", { x: 12, y: 52, class: "status" }, "");
      group.append(svg("title", {}, `${vertex.id} (${vertex.uses})`), title, uses, status);
      // A mapped node's items: a thin bar along its foot, drawn once it has items.
      const foot = { x: 12, y: vertex.height - 5, height: 3 };
      const track = svg("g", { class: "items-bar", visibility: "hidden" });
      track.append(
        svg("rect", { ...foot, width: vertex.width - 24, rx: 1.5, class: "track" }),
        svg("rect", { ...foot, width: 0, class: "done" }),
        svg("rect", { ...foot, width: 0, class: "failed" }));
      group.append(track);
      const choose = () => onSelect(vertex.id);
      group.addEventListener("click", choose);
      group.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          choose();
        }
      });
    } else {
      group.setAttribute("data-port", vertex.edge);
      const kind = svg("text", { x: vertex.width / 2, y: 16, "text-anchor": "middle", class: "kind" },
        vertex.kind);
      const name = svg("text", { x: vertex.width / 2, y: 31, "text-anchor": "middle", class: "title" },
        clip(vertex.edge, 18));
      group.append(svg("title", {}, `${vertex.kind} ${vertex.edge}`), kind, name);
      if (vertex.kind === "output") {
        group.addEventListener("click", () => {
          if (group.classList.contains("available")) onArtifact(vertex.edge);
        });
      }
    }
    vertexLayer.append(group);
    shapes.set(vertex.key, { vertex, group, status });
  }

  return {
    // run: a FlowRun, or null for a flow that is not running (no states).
    update(run) {
      const artifacts = (run && run.Artifacts) || {};
      const waiting = new Set(((run && run.WaitingURLs) || []).map((w) => w.Artifact.EdgeName));
      for (const { vertex, group, status } of shapes.values()) {
        if (vertex.kind === "node") {
          const state = run && run.NodeState && run.NodeState[vertex.id];
          const name = state ? state.Status : "IDLE";
          group.setAttribute("class", `vertex node ${run ? stateClass(name) : "st-plain"}`);
          group.classList.toggle("selected", group.dataset.selected === "1");
          const items = state && state.Items;
          if (items) {
            const { done, failed, total, whole } = itemsDone(items);
            // The failed ones show in red on the bar: the text has room for the count only.
            status.textContent = `${name} · ${done}/${total === null ? "?" : total}`;
            const track = group.querySelector(".items-bar");
            const room = Number(track.querySelector(".track").getAttribute("width"));
            const ok = (room * (done - failed)) / whole;
            track.querySelector(".done").setAttribute("width", String(ok));
            track.querySelector(".failed").setAttribute("x", String(12 + ok));
            track.querySelector(".failed").setAttribute("width", String((room * failed) / whole));
            track.setAttribute("visibility", "visible");
            status.setAttribute("y", "49"); // room for the bar below it
          } else {
            status.textContent = run ? name + (state && state.Attempt > 1 ? ` · attempt ${state.Attempt}` : "") : "";
          }
        } else {
          const available = vertex.edge in artifacts;
          group.classList.toggle("available", available);
          group.classList.toggle("waiting", waiting.has(vertex.edge));
        }
      }
      for (const label of labels) {
        label.group.classList.toggle("available", label.edge in artifacts);
      }
    },
    select(nodeId) {
      for (const { vertex, group } of shapes.values()) {
        const chosen = vertex.kind === "node" && vertex.id === nodeId;
        group.dataset.selected = chosen ? "1" : "0";
        group.classList.toggle("selected", chosen);
      }
    },
  };
}

