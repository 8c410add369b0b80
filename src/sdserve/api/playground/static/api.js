// Talking to sdserve: the API key, JSON calls to the native API, and job events.
//
// Events come over fetch() rather than EventSource because EventSource cannot send an
// Authorization header, and servers with keys need one.

const KEY_STORE = "sdserve.playground.key";

export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field || null;
  }
}

export function getKey() {
  try { return sessionStorage.getItem(KEY_STORE) || ""; } catch { return ""; }
}

export function setKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORE, key); else sessionStorage.removeItem(KEY_STORE);
  } catch { /* storage disabled: the key lives only in the field */ }
}

function headers(extra = {}) {
  const h = { ...extra };
  const key = getKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  let field = null;
  try {
    const body = await response.json();
    const err = body.error || {};
    if (err.message) message = err.message;
    field = err.field || null;
  } catch { /* not JSON: keep the status line */ }
  return new ApiError(response.status, message, field);
}

// A JSON call; resolves with the parsed body, rejects with ApiError (status, message, field).
export async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, signal, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "the server cannot be reached");
  }
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

// Reads /v1/jobs/{id}/events and calls onEvent({event, data}) for each Server-Sent Event until
// the stream ends. Resolves when it ends; rejects if it cannot be read.
export async function streamEvents(jobId, onEvent, signal) {
  const response = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/events`,
    { headers: headers({ Accept: "text/event-stream" }), signal, cache: "no-store" });
  if (!response.ok) throw await errorOf(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let carry = "";  // a "\r" that may be the first half of a "\r\n" split across chunks
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    let text = carry + value;
    carry = text.endsWith("\r") ? "\r" : "";
    if (carry) text = text.slice(0, -1);
    buffer += text.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const ev = parseBlock(block);
      if (ev) onEvent(ev);
    }
  }
}

function parseBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;  // keep-alive comments
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "event") event = value;
    else if (name === "data") data.push(value);
  }
  if (!data.length) return null;
  const text = data.join("\n");
  try { return { event, data: JSON.parse(text) }; } catch { return { event, data: text }; }
}
