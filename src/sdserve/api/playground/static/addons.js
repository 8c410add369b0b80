// LoRAs and textual-inversion embeddings on the playground: picked from GET /v1/addons and
// written into the prompt as A1111's UI does (<lora:name:weight>, an embedding's name as a
// word), so the prompt alone says what ran and every "copy as curl" dialect that reads A1111
// syntax carries it (docs/addons.md).

import { api } from "./api.js";

const $ = (id) => document.getElementById(id);

function option(value, text) {
  const opt = document.createElement("option");
  opt.value = value;
  opt.textContent = text;
  return opt;
}

function group(label, items) {
  const g = document.createElement("optgroup");
  g.label = label;
  g.append(...items);
  return g;
}

// Fill the picker; hidden when the server has no add-ons (or the listing fails).
export async function loadAddons() {
  const row = $("addon-row");
  let listed;
  try {
    listed = (await api("/v1/addons")).data;
  } catch {
    row.hidden = true;
    return;
  }
  const loras = listed.filter((a) => a.kind === "lora");
  const embeddings = listed.filter((a) => a.kind === "embedding");
  const pick = $("addon-pick");
  pick.replaceChildren(option("", "Add a LoRA or embedding…"));
  if (loras.length) pick.append(group("LoRA (weight applies)", loras.map((a) => option(`lora:${a.name}`, a.name))));
  if (embeddings.length) pick.append(group("Embeddings", embeddings.map((a) => option(`embedding:${a.name}`, a.name))));
  row.hidden = !(loras.length || embeddings.length);
}

function addToPrompt() {
  const pick = $("addon-pick");
  const [kind, ...rest] = pick.value.split(":");
  const name = rest.join(":");
  if (!name) return;
  const weight = Number($("addon-weight").value || "1");
  const text = kind === "lora" ? `<lora:${name}:${Number.isFinite(weight) ? weight : 1}>` : name;
  const prompt = $("prompt");
  prompt.value = prompt.value.trim() ? `${prompt.value.trim()}, ${text}` : text;
  prompt.dispatchEvent(new Event("input", { bubbles: true }));
  pick.value = "";
}

$("addon-pick").addEventListener("change", addToPrompt);
