// What every page shares: the API key, calls to the API, events, elements, formats.
//
// Everything shown comes from users (flow names, node ids, log lines), so elements
// are only ever given text (textContent, setAttribute), never markup.

const KEY_NAME = "pipewell.api-key";

// ------------------------------------------------------------------ the API key

// The tab's sessionStorage by default (gone with the tab); localStorage only when
// the user asks to be remembered. Pages are static: the key never reaches the server
// but as the Authorization header of the API calls below.
export function storedKey() {
  return sessionStorage.getItem(KEY_NAME) || localStorage.getItem(KEY_NAME) || "";
}

function storeKey(key, remember) {
  forgetKey();
  (remember ? localStorage : sessionStorage).setItem(KEY_NAME, key);
  showKeyState();
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_NAME);
  localStorage.removeItem(KEY_NAME);
  showKeyState();
}

function showKeyState() {
  const state = document.getElementById("key-state");
  if (!state) return;
  state.replaceChildren();
  if (!storedKey()) return;
  const forget = el("button", { type: "button", class: "link" }, "forget");
  forget.addEventListener("click", () => {
    forgetKey();
    location.reload();
  });
  state.append("API key set · ", forget);
}

let pendingKey = null;

// Resolves once the user has entered a key in the page's prompt (one prompt at a time).
function askForKey(refused) {
  if (pendingKey) return pendingKey;
  pendingKey = new Promise((resolve) => {
    const input = el("input", {
      type: "password", name: "api-key", autocomplete: "off", spellcheck: "false",
      placeholder: "64 hex characters", "aria-label": "API key", required: "",
    });
    const remember = el("input", { type: "checkbox", name: "remember" });
    const form = el("form", { id: "key-prompt", class: "card key-prompt" },
      el("h2", {}, "API key"),
      el("p", {}, refused
        ? "The service refused that key (unknown or revoked). Enter another one."
        : "This Pipewell asks for an API key. It is kept in this tab only, unless you " +
          "tick the box, and sent as Authorization: Bearer with each API call."),
      el("div", { class: "row" }, input,
        el("label", { class: "check" }, remember, "Remember in this browser"),
        el("button", { type: "submit", class: "primary" }, "Use key")));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      storeKey(input.value.trim(), remember.checked);
      form.remove();
      pendingKey = null;
      resolve();
    });
    document.querySelector("main").prepend(form);
    input.focus();
  });
  return pendingKey;
}

// ------------------------------------------------------------------ calls

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

// fetch() on this origin with the key; a 401 asks for a key and tries again.
export async function apiFetch(path, options = {}) {
  let refused = false;
  for (;;) {
    const headers = new Headers(options.headers || {});
    const key = storedKey();
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const response = await fetch(path, { ...options, headers });
    if (response.status !== 401) return response;
    refused = Boolean(key);
    await askForKey(refused);
  }
}

// The answer's JSON, or an ApiError carrying the service's message.
export async function api(path, { method = "GET", json, signal } = {}) {
  const options = { method, signal };
  if (json !== undefined) {
    options.headers = { "Content-Type": "application/json" };
    options.body = JSON.stringify(json);
  }
  const response = await apiFetch(path, options);
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = (body && body.message) || text || `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message, body);
  }
  return body;
}

// Server-Sent Events read through fetch, because EventSource cannot send the
// Authorization header. onEvent(name, data) for each event; reconnects (the stream
// starts again with the run as it stands) until an "end" event or a refusal.
export async function followEvents(path, onEvent, onState = () => {}) {
  let delay = 500;
  for (;;) {
    let response;
    try {
      response = await apiFetch(path, { headers: { Accept: "text/event-stream" } });
    } catch {
      response = null; // the service is unreachable: try again
    }
    if (response && !response.ok) {
      throw new ApiError(response.status, (await response.text()) || response.statusText);
    }
    if (response) {
      onState("live");
      delay = 500;
      if (await readStream(response.body, onEvent)) return;
    }
    onState("reconnecting");
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 5000);
  }
}

// True once an "end" event was read.
async function readStream(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let name = "message";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += value;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, "");
        buffer = buffer.slice(newline + 1);
        if (line === "") {
          if (data.length) {
            onEvent(name, JSON.parse(data.join("\n")));
            if (name === "end") return true;
          }
          name = "message";
          data = [];
        } else if (line.startsWith("event:")) {
          name = line.slice(6).trim();
        } else if (line.startsWith("data:")) {
          data.push(line.slice(5).replace(/^ /, ""));
        } // ":" lines are keep-alives
      }
    }
  } catch {
    return false; // the connection broke: the caller reconnects
  } finally {
    reader.releaseLock();
  }
}

// The file name a download's Content-Disposition gives (the service's own, which
// carries the extension of the bytes' type), else null.
export function dispositionName(header) {
  const match = /filename="([^"]+)"/.exec(header || "");
  return match ? match[1] : null;
}

// Download a file of the API: a plain link without a key (the browser streams it,
// and names it as the service's Content-Disposition says); with a key, fetched with
// its header into memory first, as a link cannot send one, and named the same way.
export async function download(path, filename) {
  let href = path;
  let blobUrl = null;
  let name = filename;
  if (storedKey()) {
    const response = await apiFetch(path);
    if (!response.ok) throw new ApiError(response.status, await response.text());
    name = dispositionName(response.headers.get("Content-Disposition")) || filename;
    blobUrl = URL.createObjectURL(await response.blob());
    href = blobUrl;
  }
  const link = el("a", { href, download: name, hidden: "" });
  document.body.append(link);
  link.click();
  link.remove();
  if (blobUrl) setTimeout(() => URL.revokeObjectURL(blobUrl), 60_000);
}

// A link that downloads through download() when a key is needed.
export function downloadLink(path, filename, text) {
  const link = el("a", { href: path, download: filename, class: "download" }, text);
  link.addEventListener("click", (event) => {
    if (!storedKey()) return;
    event.preventDefault();
    download(path, filename).catch((error) => showError(error));
  });
  return link;
}

// ------------------------------------------------------------------ elements

// el("a", {href: "/x", class: "y"}, "text", child, ...): attributes and text only.
export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

const RUN_STATES = new Set(["STOPPED", "WAITING", "RUNNING", "COMPLETE", "ERROR"]);
const NODE_STATES = new Set(["IDLE", "READY", "RUNNING", "RETRYING", "COMPLETE", "ERROR", "STOPPED"]);

// A class name for a state the service sent; anything unexpected gets a neutral one.
export function stateClass(state) {
  return RUN_STATES.has(state) || NODE_STATES.has(state) ? `st-${state}` : "st-unknown";
}

export function badge(state) {
  return el("span", { class: `badge ${stateClass(state)}` }, state || "?");
}

export function showError(error, where = null) {
  const box = where || document.getElementById("errors");
  const message = error instanceof Error ? error.message : String(error);
  box.replaceChildren(el("p", { class: "error", role: "alert" }, message));
}

export function copyButton(getText) {
  const button = el("button", { type: "button", class: "copy" }, "Copy");
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(getText());
      button.textContent = "Copied";
    } catch {
      button.textContent = "Select and copy";
    }
    setTimeout(() => (button.textContent = "Copy"), 1500);
  });
  return button;
}

// ------------------------------------------------------------------ formats

export function formatTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "—";
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

export function formatClock(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.` +
    pad(date.getMilliseconds(), 3);
}

export function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

// From start to finish, or to now while unfinished.
export function duration(startedAt, finishedAt) {
  const start = Date.parse(startedAt);
  if (Number.isNaN(start)) return "—";
  const end = finishedAt ? Date.parse(finishedAt) : Date.now();
  return formatSeconds(Math.max(0, (end - start) / 1000));
}

export function pathPart(index) {
  // /ui/runs/<id>: the id as typed in the address, one segment.
  return decodeURIComponent(location.pathname.split("/")[index] || "");
}

export const enc = encodeURIComponent;

showKeyState();
