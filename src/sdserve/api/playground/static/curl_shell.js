// Shell assembly for "copy as curl": quoting, and JSON bodies that carry files (base64 or
// byte arrays) assembled in a pipe, because a base64 image can exceed the argument limit.

// Single-quoted for a POSIX shell.
export function sq(text) {
  return "'" + String(text).replace(/'/g, "'\\''") + "'";
}

// Placeholders for file contents inside a JSON body: a file as base64, as a byte array, or
// several files as one string of comma-separated data: URIs (ModelsLab's image lists).
export const b64File = (name) => `\u0000b64:${name}\u0000`;
export const bytesFile = (name) => `\u0000bytes:${name}\u0000`;
export const dataUriList = (names) => `\u0000uris:${names.join("|")}\u0000`;
const PLACEHOLDER = /"\\u0000(b64|bytes|uris):([^\\]+)\\u0000"/;

const TO_BASE64 = (name) => `base64 < ${name} | tr -d '\\n'`;
// A file as a JSON array of byte values (Workers AI's form), with POSIX od and awk.
const TO_BYTES = (name) => `od -An -v -tu1 ${name} | awk '{for (i = 1; i <= NF; i++) printf "%s%s", (n++ ? "," : ""), $i}'`;
const OPEN = { b64: '"', uris: '"', bytes: "[" };
const CLOSE = { b64: '"', uris: '"', bytes: "]" };

// The shell steps that print a placeholder's contents (without its quotes or brackets).
function contents(kind, name) {
  if (kind === "b64") return [TO_BASE64(name)];
  if (kind === "bytes") return [TO_BYTES(name)];
  return name.split("|").flatMap((file, i) => [`printf '%s' '${i ? "," : ""}data:image/png;base64,'`, TO_BASE64(file)]);
}

export function lines(parts) {
  return parts.join(" \\\n  ");
}

// curl that POSTs ``body`` as JSON; with file placeholders the body is assembled in a pipe.
export function postJson(url, body, headers, tail) {
  const json = JSON.stringify(body);
  const hdrs = ["-H 'Content-Type: application/json'", ...headers.map((h) => `-H ${sq(h)}`)];
  if (!PLACEHOLDER.test(json)) {
    return lines([`curl -s -X POST ${sq(url)}`, ...hdrs, `-d ${sq(json)}`]) + tail;
  }
  const steps = [];
  let rest = json;
  let m;
  while ((m = PLACEHOLDER.exec(rest))) {
    const [whole, kind, name] = m;
    steps.push(`printf '%s' ${sq(rest.slice(0, m.index) + OPEN[kind])}`, ...contents(kind, name));
    rest = CLOSE[kind] + rest.slice(m.index + whole.length);
  }
  steps.push(`printf '%s' ${sq(rest)}`);
  return `{ ${steps.join("\n  ")}\n} | ` + lines([`curl -s -X POST ${sq(url)}`, ...hdrs, "--data-binary @-"]) + tail;
}

