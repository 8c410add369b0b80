// Generation options beyond the basics, each one field of the native job request
// (docs/api: POST /v1/jobs): the sampler and schedule type (`scheduler`), VAE (`vae`), clip
// skip (`clip_skip`), seamless tiling (`tiling`), hires fix (`hires`) and the SDXL refiner
// (`refiner`). Every list comes from the server: the scheduler names from /playground/config,
// VAEs from GET /v1/addons, upscalers from A1111's /sdapi/v1/upscalers and latent-upscale-modes,
// refiner checkpoints from the catalog.

import { api } from "./api.js";

const $ = (id) => document.getElementById(id);

// The engine's schedule suffixes as A1111 labels its schedule types (docs/a1111.md).
const SCHEDULE_LABELS = {
  karras: "Karras", exponential: "Exponential", beta: "Beta", linspace: "Uniform / Normal",
  leading: "DDIM (leading)", trailing: "SGM Uniform / Simple (trailing)",
};

const state = { schedulers: [], models: new Map(), builtinUpscalers: [], vaeFiles: new Map() };

function option(value, text) {
  return new Option(text, value);
}

function group(label, options) {
  const g = document.createElement("optgroup");
  g.label = label;
  g.append(...options);
  return g;
}

// -- sampler and schedule type: the engine's <sampler>[_<schedule>] names ----------------------

function fillSamplers(schedulers) {
  state.schedulers = schedulers;
  const seen = new Map();  // sampler -> A1111 label of its own-schedule entry
  for (const s of schedulers) if (!s.schedule) seen.set(s.sampler, s.a1111);
  $("sampler").replaceChildren(...[...seen].map(([name, label]) =>
    option(name, label && label !== name ? `${name} (${label})` : name)));
}

function fillSchedules(keep) {
  const sampler = $("sampler").value;
  const schedules = state.schedulers.filter((s) => s.sampler === sampler && s.schedule).map((s) => s.schedule);
  $("schedule").replaceChildren(option("", "The model's own"),
    ...schedules.map((k) => option(k, `${k} (${SCHEDULE_LABELS[k] || k})`)));
  $("schedule").value = schedules.includes(keep) ? keep : "";
}

// The engine name the two pickers make.
export function schedulerName() {
  const sampler = $("sampler").value;
  const schedule = $("schedule").value;
  return schedule ? `${sampler}_${schedule}` : sampler;
}

// Sets both pickers from an engine name (a model's default, a reused job's scheduler).
export function setScheduler(name) {
  const entry = state.schedulers.find((s) => s.name === name);
  if (!entry) return;
  $("sampler").value = entry.sampler;
  fillSchedules(entry.schedule);
}

$("sampler").addEventListener("change", () => fillSchedules($("schedule").value));

// -- lists from the server --------------------------------------------------------------------

async function listOr(path, fallback) {
  try { return await api(path); } catch { return fallback; }
}

// Fills every picker; ``models``: the catalog entries (for the refiner checkpoints).
export async function loadOptions(config, models) {
  state.models = models;
  fillSamplers(config.schedulers);
  const addons = (await listOr("/v1/addons", { data: [] })).data;
  const vaes = addons.filter((a) => a.kind === "vae");
  state.vaeFiles = new Map(vaes.map((a) => [a.name, a.filename]));
  $("vae").replaceChildren(option("", "The model's own"), ...vaes.map((a) => option(a.name, a.name)));

  // Latent modes upscale the latents; the others the decoded image (docs/upscaling.md).
  const latent = (await listOr("/sdapi/v1/latent-upscale-modes", [{ name: "Latent" }])).map((m) => m.name);
  const fallback = ["None", "Lanczos", "Nearest", ...addons.filter((a) => a.kind === "upscaler").map((a) => a.name)]
    .map((name) => ({ name }));
  const images = (await listOr("/sdapi/v1/upscalers", fallback)).map((u) => u.name).filter((n) => n !== "None");
  state.builtinUpscalers = images;
  $("hires-upscaler").replaceChildren(group("Latent (upscale the latents)", latent.map((n) => option(n, n))),
    group("Image upscalers", images.map((n) => option(n, n))));
  $("hires-upscaler").value = latent[0];
}

// A VAE's file name (what A1111's sd_vae lists and ComfyUI's VAELoader takes).
export function vaeFile(name) {
  return name ? state.vaeFiles.get(name) || name : null;
}

// The image upscalers (built-in and files), for a result's "Upscale".
export function imageUpscalers() {
  return state.builtinUpscalers;
}

// -- per model: the refiner is offered for SDXL models only ----------------------------------

export function onModel(model, task) {
  const sdxl = !!model && model.arch === "sdxl";
  $("sec-refiner").hidden = !sdxl;
  const refiners = [...state.models.values()].filter((m) => m.arch === "sdxl" && m.id !== model?.id && m.tasks.includes("img2img"));
  const keep = $("refiner-model").value;
  $("refiner-model").replaceChildren(...refiners.map((m) => option(m.id, (m.aliases.find((a) => !a.includes("/")) || m.id)
    + (m.available ? "" : " (not downloaded)"))));
  if (refiners.some((m) => m.id === keep)) $("refiner-model").value = keep;
  if (!sdxl || !refiners.length) $("refiner-on").checked = false;
  $("refiner-on").disabled = !refiners.length;
  // Hires fix and the refiner are text-to-image passes.
  $("hires-on").disabled = task !== "txt2img";
  if (task !== "txt2img") { $("hires-on").checked = false; $("refiner-on").checked = false; }
  $("refiner-on").disabled ||= task !== "txt2img";
  syncEnabled();
}

function syncEnabled() {
  $("hires-fields").disabled = !$("hires-on").checked;
  $("refiner-fields").disabled = !$("refiner-on").checked;
  const byScale = document.querySelector('input[name="hires-by"]:checked').value === "scale";
  $("hires-scale-field").hidden = !byScale;
  $("hires-x-field").hidden = byScale;
  $("hires-y-field").hidden = byScale;
  // A closed section still says what it adds to the request.
  $("sec-model-on").textContent = [$("vae").value && "VAE", Number($("clip-skip").value) > 1 && "clip skip",
    $("tiling").checked && "tiling"].filter(Boolean).join(", ");
  $("sec-hires-on").textContent = $("hires-on").checked ? "on" : "";
  $("sec-refiner-on").textContent = $("refiner-on").checked ? "on" : "";
}

for (const id of ["hires-on", "refiner-on", "vae", "clip-skip", "tiling"]) $(id).addEventListener("change", syncEnabled);
for (const r of document.querySelectorAll('input[name="hires-by"]')) r.addEventListener("change", syncEnabled);
$("hires-strength").addEventListener("input", () => { $("hires-strength-out").value = $("hires-strength").value; });
$("refiner-switch").addEventListener("input", () => { $("refiner-switch-out").value = $("refiner-switch").value; });

// -- the request fields -----------------------------------------------------------------------

// A number field's value; an emptied one is its default (while typing, it is briefly empty).
function num(id) {
  const raw = $(id).value.trim();
  return Number(raw === "" ? $(id).defaultValue : raw);
}

// The native request's fields these controls set (only those that differ from the defaults).
export function optionsBody() {
  const body = { scheduler: schedulerName() || undefined };
  if ($("vae").value) body.vae = $("vae").value;
  if (num("clip-skip") > 1) body.clip_skip = num("clip-skip");
  if ($("tiling").checked) body.tiling = true;
  if ($("hires-on").checked && !$("hires-on").disabled) {
    const hires = { upscaler: $("hires-upscaler").value, strength: num("hires-strength") };
    if (document.querySelector('input[name="hires-by"]:checked').value === "scale") hires.scale = num("hires-scale");
    else Object.assign(hires, { resize_x: num("hires-x"), resize_y: num("hires-y") });
    if (num("hires-steps") > 0) hires.steps = num("hires-steps");
    body.hires = hires;
  }
  if ($("refiner-on").checked && !$("refiner-on").disabled && !$("sec-refiner").hidden) {
    body.refiner = { model: $("refiner-model").value, switch_at: num("refiner-switch") };
  }
  return body;
}

// Back into the form from a job's params ("Reuse these settings").
export function reuseOptions(p) {
  setScheduler(p.scheduler);
  $("vae").value = p.vae || "";
  $("clip-skip").value = p.clip_skip || 1;
  $("tiling").checked = !!p.tiling;
  $("hires-on").checked = !!p.hires;
  if (p.hires) {
    const bySize = p.hires.resize_x || p.hires.resize_y;
    document.querySelector(`input[name="hires-by"][value="${bySize ? "size" : "scale"}"]`).checked = true;
    $("hires-scale").value = p.hires.scale;
    $("hires-x").value = p.hires.resize_x;
    $("hires-y").value = p.hires.resize_y;
    $("hires-upscaler").value = p.hires.upscaler;
    $("hires-steps").value = p.hires.steps || 0;
    $("hires-strength").value = p.hires.strength;
    $("hires-strength-out").value = p.hires.strength;
  }
  $("refiner-on").checked = !!p.refiner;
  if (p.refiner) {
    $("refiner-model").value = p.refiner.model;
    $("refiner-switch").value = p.refiner.switch_at;
    $("refiner-switch-out").value = p.refiner.switch_at;
  }
  syncEnabled();
}
