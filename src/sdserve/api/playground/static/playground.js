// The playground page: a form over the native job API (POST /v1/jobs, its events, cancel),
// the input image and mask editor, and this session's results.

import { loadAddons } from "./addons.js";
import { api, ApiError, getKey, setKey, streamEvents } from "./api.js";
import { controlBody, loadControl, MissingImage, onModel as controlOnModel, reuseControl } from "./control.js";
import { DIALECTS, filesFor } from "./curl.js";
import { ImageEditor } from "./editor.js";
import { imageUpscalers, loadOptions, onModel as optionsOnModel, optionsBody, reuseOptions, setScheduler,
  vaeFile } from "./options.js";

const $ = (id) => document.getElementById(id);
const JOBS_STORE = "sdserve.playground.jobs";
const MAX_KEPT = 50;

const state = {
  config: null,
  models: new Map(),      // id -> catalog entry
  schedulers: new Map(),  // sdserve name -> A1111 label (or null)
  comfySamplers: new Map(),  // sdserve name -> ComfyUI [sampler_name, scheduler] (or null)
  job: null,              // the running job: {id, abort, done}
  inputs: new Map(),      // job id -> {image, mask, maskOpenai} data URLs, for "reuse" and curl files
};

const editor = new ImageEditor($("image-canvas"), $("mask-canvas"));

// -- small helpers ---------------------------------------------------------------------------

function task() {
  return document.querySelector('input[name="task"]:checked').value;
}

function setTask(value) {
  document.querySelector(`input[name="task"][value="${value}"]`).checked = true;
  onTaskChange();
}

function show(el, visible) {
  el.hidden = !visible;
}

function showError(el, message) {
  el.textContent = message || "";
  show(el, !!message);
}

function setStatus(text) {
  $("status").textContent = text;
}

function numberOrUndefined(id) {
  const raw = $(id).value.trim();
  return raw === "" ? undefined : Number(raw);
}

function randomSeed() {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the image could not be read"));
    img.src = src;
  });
}

function keptJobs() {
  try { return JSON.parse(sessionStorage.getItem(JOBS_STORE) || "[]"); } catch { return []; }
}

function keepJob(id) {
  try {
    const ids = keptJobs().filter((x) => x !== id);
    ids.push(id);
    sessionStorage.setItem(JOBS_STORE, JSON.stringify(ids.slice(-MAX_KEPT)));
  } catch { /* storage full or disabled: the gallery just won't survive a reload */ }
}

// -- start-up: config, key, catalog -----------------------------------------------------------

async function start() {
  try {
    const r = await fetch("/playground/config", { cache: "no-store" });
    if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
    state.config = await r.json();
  } catch (e) {
    showError($("page-error"), `The server's settings could not be read (${e.message}). Is sdserve running?`);
    return;
  }
  for (const s of state.config.schedulers) state.schedulers.set(s.name, s.a1111);
  for (const s of state.config.schedulers) state.comfySamplers.set(s.name, s.comfyui);
  if (state.config.auth_required) {
    show($("key-form"), true);
    $("api-key").value = getKey();
    if (!getKey()) {
      $("key-status").textContent = "Enter an API key to load the models.";
      $("api-key").focus();
      return;
    }
  }
  await loadCatalog();
}

async function loadCatalog() {
  let catalog;
  try {
    catalog = await api("/v1/catalog");
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      show($("key-form"), true);
      $("key-status").textContent = `Key not accepted: ${e.message}`;
      $("api-key").focus();
    } else {
      showError($("page-error"), `The model list could not be loaded: ${e.message}`);
    }
    return false;
  }
  if (state.config.auth_required) $("key-status").textContent = "Key accepted.";
  state.models = new Map(catalog.data.map((m) => [m.id, m]));
  // The add-on lists first: the form is usable once the model list shows.
  await loadOptions(state.config, state.models);
  await loadControl();
  const select = $("model");
  const previous = select.value;
  select.replaceChildren(...catalog.data.map((m) => {
    const opt = document.createElement("option");
    opt.value = m.id;
    const short = m.aliases.find((a) => !a.includes("/"));
    opt.textContent = (short || m.id) + (m.available ? "" : " (not downloaded)");
    return opt;
  }));
  if (previous && state.models.has(previous)) select.value = previous;
  onTaskChange();
  applyModelDefaults();
  await loadAddons();
  await restoreGallery();
  return true;
}

$("key-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  setKey($("api-key").value.trim());
  $("key-status").textContent = "Checking…";
  await loadCatalog();
});

// -- model and task ---------------------------------------------------------------------------

function currentModel() {
  return state.models.get($("model").value);
}

function onTaskChange() {
  const t = task();
  // Models that cannot do this task stay listed but cannot be chosen.
  let firstOk = null;
  for (const opt of $("model").options) {
    const m = state.models.get(opt.value);
    opt.disabled = !m || !m.tasks.includes(t);
    if (!opt.disabled && firstOk === null) firstOk = opt.value;
  }
  const sel = $("model").selectedOptions[0];
  if ((!sel || sel.disabled) && firstOk !== null) {
    $("model").value = firstOk;
    applyModelDefaults();
  }
  const imageTask = t !== "txt2img";
  show($("image-section"), imageTask);
  show($("mask-tools"), t === "inpaint");
  $("mask-canvas").classList.toggle("active", t === "inpaint");
  for (const id of ["width", "height"]) $(id).disabled = imageTask;
  optionsOnModel(currentModel(), t);
  if (imageTask && editor.loaded) {
    $("width").value = editor.width;
    $("height").value = editor.height;
  } else if (!imageTask) {
    const m = currentModel();
    if (m) { $("width").value = m.defaults.width; $("height").value = m.defaults.height; }
  }
  describeModel();
}

function applyModelDefaults() {
  const m = currentModel();
  if (!m) return;
  if (task() === "txt2img") {
    $("width").value = m.defaults.width;
    $("height").value = m.defaults.height;
  }
  $("steps").value = m.defaults.steps;
  $("guidance").value = m.defaults.guidance;
  $("strength").value = m.defaults.strength;
  $("strength-out").value = m.defaults.strength;
  setScheduler(m.defaults.scheduler);
  optionsOnModel(m, task());
  controlOnModel(m);
  describeModel();
}

function describeModel() {
  const m = currentModel();
  if (!m) { $("model-info").textContent = ""; return; }
  const d = m.defaults;
  const tasks = m.tasks.map((t) => ({ txt2img: "text to image", img2img: "image to image", inpaint: "inpaint" }[t]));
  $("model-info").textContent = `${m.id}: ${m.description} Does ${tasks.join(", ")}. Defaults: ${d.width}×${d.height}, ` +
    `${d.steps} steps, guidance ${d.guidance}, ${d.scheduler}.` + (m.available ? "" : " Weights missing: run `sdserve pull`.");
  quoteSoon();  // the defaults just changed the fields without an input event
}

for (const radio of document.querySelectorAll('input[name="task"]')) radio.addEventListener("change", onTaskChange);
$("model").addEventListener("change", applyModelDefaults);

// -- input image and mask ---------------------------------------------------------------------

function maxSide() {
  const m = currentModel();
  return m ? Math.max(m.defaults.width, m.defaults.height) : 512;
}

async function useImage(src, label) {
  const img = await loadImage(src);
  const size = editor.setImage(img, maxSide());
  show($("editor"), true);
  $("width").value = size.width;
  $("height").value = size.height;
  const scaled = size.width !== size.originalWidth || size.height !== size.originalHeight
    ? ` (scaled from ${size.originalWidth}×${size.originalHeight})` : "";
  $("image-info").textContent = `${label}: ${size.width}×${size.height}${scaled}. The result has this size.`;
}

$("image-file").addEventListener("change", async () => {
  const file = $("image-file").files[0];
  if (!file) return;
  const url = URL.createObjectURL(file);
  try {
    await useImage(url, file.name);
    showError($("form-error"), "");
  } catch (e) {
    showError($("form-error"), `${file.name}: ${e.message}`);
  } finally {
    URL.revokeObjectURL(url);
  }
});

$("strength").addEventListener("input", () => { $("strength-out").value = $("strength").value; });
$("brush").addEventListener("input", () => {
  editor.brush = Number($("brush").value);
  $("brush-out").value = $("brush").value;
});
for (const radio of document.querySelectorAll('input[name="brush-mode"]')) {
  radio.addEventListener("change", () => { editor.erase = radio.checked && radio.value === "erase"; });
}
$("mask-clear").addEventListener("click", () => editor.clearMask());
$("mask-fill").addEventListener("click", () => editor.fillMask());
$("mask-invert").addEventListener("click", () => editor.invertMask());

// -- seed -------------------------------------------------------------------------------------

$("dice").addEventListener("click", () => { $("seed").value = randomSeed(); });
$("seed-clear").addEventListener("click", () => { $("seed").value = ""; });
$("keep-seed").addEventListener("click", () => { $("seed").value = $("used-seed").value; });

function showUsedSeed(seed) {
  $("used-seed").value = String(seed);
  show($("keep-seed"), true);
}

// -- generate, progress, cancel ---------------------------------------------------------------

const FIELD_INPUTS = {
  prompt: "prompt", negative_prompt: "negative-prompt", width: "width", height: "height", steps: "steps",
  guidance: "guidance", seed: "seed", strength: "strength", model: "model", image: "image-file", mask: "brush",
  scheduler: "sampler", vae: "vae", clip_skip: "clip-skip", tiling: "tiling", "hires.scale": "hires-scale",
  "hires.resize_x": "hires-x", "hires.resize_y": "hires-y", "hires.upscaler": "hires-upscaler", "hires.steps": "hires-steps",
  "hires.strength": "hires-strength", "refiner.model": "refiner-model", "refiner.switch_at": "refiner-switch",
  "ip_adapter.model": "ipa-model", "ip_adapter.scale": "ipa-scale", "ip_adapter.image": "ipa-file",
};
// A ControlNet unit's field (control[i].weight) -> that unit's control.
const UNIT_INPUTS = { model: ".unit-model", preprocessor: ".unit-pre", weight: ".unit-weight", image: ".unit-file",
  guidance_start: ".unit-start", guidance_end: ".unit-end", control_mode: ".unit-mode" };

// The control a field name refers to (its collapsed section opened), or null.
function inputFor(field) {
  if (!field) return null;
  let el = FIELD_INPUTS[field] ? $(FIELD_INPUTS[field]) : null;
  const unit = /^control\[(\d+)\]\.(\w+)/.exec(field);
  if (unit) el = $("control-units").children[Number(unit[1])]?.querySelector(UNIT_INPUTS[unit[2]] || ".unit-model") || null;
  const section = el && el.closest("details");
  if (section) section.open = true;
  return el;
}

function requestBody() {
  const t = task();
  const body = {
    model: $("model").value,
    prompt: $("prompt").value,
    negative_prompt: $("negative-prompt").value,
    steps: numberOrUndefined("steps"),
    guidance: numberOrUndefined("guidance"),
    seed: numberOrUndefined("seed"),
    ...optionsBody(),
  };
  let control;
  try {
    control = controlBody();
  } catch (e) {
    if (e instanceof MissingImage) throw new ApiError(400, "choose its image first", e.message);
    throw e;
  }
  Object.assign(body, control.body);
  // The control images, kept for "copy as curl"'s files.
  const extra = control.images.control.length || control.images.ipAdapter ? control.images : {};
  if (t === "txt2img") {
    body.width = numberOrUndefined("width");
    body.height = numberOrUndefined("height");
    return { body, inputs: Object.keys(extra).length ? extra : null };
  }
  if (!editor.loaded) throw new ApiError(400, "choose an input image first", "image");
  if (t === "inpaint" && !editor.hasMask()) {
    throw new ApiError(400, "paint the area to repaint on the image (or press Fill all)", "mask");
  }
  const inputs = { image: editor.imageDataURL(), ...extra };
  Object.assign(body, { width: editor.width, height: editor.height, strength: Number($("strength").value), image: inputs.image });
  if (t === "inpaint") {
    inputs.mask = editor.maskDataURL();
    inputs.maskOpenai = editor.maskAlphaDataURL();
    body.mask = inputs.mask;
  }
  return { body, inputs };
}

// -- cost before sending: POST /v1/cost checks the request as a submit would, queues nothing --

let quoting = null;  // the AbortController of the quote in flight
let quoteTimer = 0;

async function quote() {
  if (quoting) quoting.abort();
  let body;
  try {
    ({ body } = requestBody());
  } catch {
    $("cost").textContent = "";  // not complete yet (no input image, no mask)
    return;
  }
  if (!body.model) return;
  quoting = new AbortController();
  try {
    // The prompt does not change the cost; an empty one would only be refused for itself.
    const quoted = { ...body, prompt: body.prompt || "x" };
    const q = await api("/v1/cost", { method: "POST", body: quoted, signal: quoting.signal });
    const left = q.compute_left === null ? "" : ` (${q.compute_left} left)`;
    $("cost").textContent = `Cost: ${q.cost} compute units${left}`;
  } catch (e) {
    if (e.name === "AbortError") return;
    $("cost").textContent = e.field ? `Not allowed: ${e.field}: ${e.message}` : `Cost unknown: ${e.message}`;
  }
}

function quoteSoon() {
  clearTimeout(quoteTimer);
  quoteTimer = setTimeout(quote, 250);
}

$("gen-form").addEventListener("input", quoteSoon);
$("gen-form").addEventListener("change", quoteSoon);

function reportError(e) {
  const input = inputFor(e.field);
  showError($("form-error"), e.field ? `${e.field}: ${e.message}` : e.message);
  if (input) input.focus();
}

function setRunning(running) {
  $("generate").disabled = running;
  $("cancel").disabled = !running;
  $("gen-form").setAttribute("aria-busy", String(running));
}

const progress = $("progress");

function resetProgress() {
  progress.max = 1;
  progress.value = 0;
  progress.dataset.events = "0";
  progress.dataset.steps = "0";
  progress.dataset.previews = "0";
}

function countEvent(kind) {
  progress.dataset[kind] = String(Number(progress.dataset[kind] || 0) + 1);
}

function showStage(src, isPreview) {
  const img = $("stage-img");
  img.src = src;
  img.alt = isPreview ? "Preview of the image being made" : "The generated image";
  img.classList.toggle("preview", isPreview);
  show(img, true);
  show($("stage-empty"), false);
}

async function generate() {
  showError($("form-error"), "");
  if (!$("prompt").value.trim()) {
    reportError(new ApiError(400, "write what to generate", "prompt"));
    return;
  }
  let body;
  let inputs;
  try {
    ({ body, inputs } = requestBody());
  } catch (e) {
    reportError(e);
    return;
  }
  setRunning(true);
  resetProgress();
  // One column (phones): bring the progress bar and previews into view.
  if (matchMedia("(max-width: 899px)").matches) $("output-h").scrollIntoView({ behavior: "smooth", block: "start" });
  progress.removeAttribute("value");  // indeterminate while queued
  setStatus("Submitting…");
  let job;
  try {
    job = await api("/v1/jobs", { method: "POST", body });
  } catch (e) {
    setRunning(false);
    setStatus("Not started");
    progress.value = 0;
    if (e.status === 401) { show($("key-form"), true); $("key-status").textContent = `Key not accepted: ${e.message}`; }
    reportError(e);
    return;
  }
  if (inputs) state.inputs.set(job.id, inputs);
  await follow(job);
}

// A submitted job followed to its end: events, else polling; then the result's card.
async function follow(job) {
  const abort = new AbortController();
  state.job = { id: job.id, abort, started: performance.now() };
  let final = null;
  try {
    await streamEvents(job.id, (ev) => { final = onEvent(ev) || final; }, abort.signal);
  } catch (e) {
    if (e.name !== "AbortError") setStatus(`Lost the event stream (${e.message}); checking the job…`);
  }
  if (!final) final = await pollUntilDone(job.id);
  finish(final);
}

function onEvent({ event, data }) {
  countEvent("events");
  switch (event) {
    case "queued":
      setStatus(`Queued: position ${data.position}`);
      return null;
    case "started":
      progress.max = data.total || 1;
      progress.value = data.step || 0;
      setStatus(`Running: step ${data.step}/${data.total}`);
      return null;
    case "step":
      countEvent("steps");
      progress.max = data.total;
      progress.value = data.step;
      setStatus(`Running: step ${data.step}/${data.total}`);
      if (data.preview) {
        countEvent("previews");
        showStage(data.preview, true);
      }
      return null;
    case "succeeded":
    case "failed":
    case "canceled":
      return data;
    default:
      return null;
  }
}

async function pollUntilDone(id) {
  for (;;) {
    try {
      const job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
      if (["succeeded", "failed", "canceled"].includes(job.status)) return job;
      if (job.progress) {
        progress.max = job.progress.total;
        progress.value = job.progress.step;
      }
    } catch (e) {
      if (e.status === 404 || e.status === 401) return { id, status: "failed", error: { message: e.message }, outputs: [] };
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function finish(job) {
  const seconds = ((performance.now() - state.job.started) / 1000).toFixed(1);
  state.job = null;
  setRunning(false);
  if (job.status === "succeeded") {
    progress.max = 1;
    progress.value = 1;
    const out = job.outputs[0];
    showStage(out.url, false);
    if (job.params.task === "upscale") {
      setStatus(`Upscaled in ${seconds} s`);  // an upscale has no seed
    } else {
      showUsedSeed(out.seed);
      setStatus(`Done in ${seconds} s, seed ${out.seed}`);
    }
    keepJob(job.id);
    addCards(job);
  } else if (job.status === "canceled") {
    progress.value = 0;
    setStatus("Canceled");
  } else {
    progress.value = 0;
    setStatus("Failed");
    reportError(new ApiError(0, job.error ? job.error.message : "the job failed", job.error && job.error.field));
  }
}

$("gen-form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (!state.job) generate();
});

$("cancel").addEventListener("click", async () => {
  if (!state.job) return;
  setStatus("Canceling…");
  try {
    await api(`/v1/jobs/${encodeURIComponent(state.job.id)}`, { method: "DELETE" });
  } catch (e) {
    reportError(e);
  }
});

// -- the session's results --------------------------------------------------------------------

const LABELS = { txt2img: "text to image", img2img: "image to image", inpaint: "inpaint", upscale: "upscale" };

function paramRows(p, seed) {
  if (p.task === "upscale") {
    return [["Task", "upscale"], ["Size", `${p.width}×${p.height}`], ["Upscaler", p.upscale.upscaler]];
  }
  const rows = [
    ["Model", p.model], ["Task", LABELS[p.task] || p.task], ["Size", `${p.width}×${p.height}`],
    ["Steps", p.steps], ["Guidance", p.guidance], ["Scheduler", p.scheduler], ["Seed", seed],
  ];
  if (p.task !== "txt2img") rows.push(["Strength", p.strength]);
  if (p.negative_prompt) rows.push(["Negative", p.negative_prompt]);
  if (p.vae) rows.push(["VAE", p.vae]);
  if (p.clip_skip > 1) rows.push(["Clip skip", p.clip_skip]);
  if (p.tiling) rows.push(["Tiling", "seamless"]);
  if (p.hires) {
    const [w, h] = outputSize(p);
    rows.push(["Hires fix", `${w}×${h}, ${p.hires.upscaler}, strength ${p.hires.strength}` +
      (p.hires.steps ? `, ${p.hires.steps} steps` : "")]);
  }
  if (p.refiner) rows.push(["Refiner", `${p.refiner.model} from ${p.refiner.switch_at}`]);
  (p.control || []).forEach((u, i) => rows.push([`ControlNet ${i + 1}`,
    `${u.model}, ${u.preprocessor}, weight ${u.weight}, ${u.guidance_start}–${u.guidance_end}, ${u.control_mode}`]));
  if (p.ip_adapter) rows.push(["IP-Adapter", `${p.ip_adapter.model}, scale ${p.ip_adapter.scale}`]);
  return rows;
}

// The image's size: the request's, or the hires pass's target (engine/hires.py, A1111's rule).
function outputSize(p) {
  const h = p.hires;
  if (!h) return [p.width, p.height];
  const { width: w, height: ht } = p;
  let up;
  let out;
  if (!h.resize_x && !h.resize_y) { up = [Math.trunc(w * h.scale), Math.trunc(ht * h.scale)]; out = up; }
  else if (!h.resize_y) { up = [h.resize_x, Math.trunc((h.resize_x * ht) / w)]; out = up; }
  else if (!h.resize_x) { up = [Math.trunc((h.resize_y * w) / ht), h.resize_y]; out = up; }
  else {
    up = w / ht < h.resize_x / h.resize_y ? [h.resize_x, Math.trunc((h.resize_x * ht) / w)]
      : [Math.trunc((h.resize_y * w) / ht), h.resize_y];
    out = [h.resize_x, h.resize_y];
  }
  return up.map((side, i) => Math.trunc(side / 8) * 8 - 8 * Math.trunc((side - out[i]) / 8));
}

function addCards(job, { append = false } = {}) {
  for (const out of job.outputs) {
    if (!out.url) continue;  // expired
    const card = makeCard(job, out);
    if (append) $("gallery").append(card); else $("gallery").prepend(card);
  }
  show($("gallery-empty"), $("gallery").children.length === 0);
}

function makeCard(job, out) {
  const p = job.params;
  const node = $("card-template").content.firstElementChild.cloneNode(true);
  node.dataset.job = job.id;
  node.dataset.seed = out.seed;
  const img = node.querySelector(".card-img");
  img.src = out.url;
  img.alt = `Generated: ${p.prompt}`;
  [img.width, img.height] = outputSize(p);
  node.querySelector(".card-link").href = out.url;
  node.querySelector(".card-prompt").textContent = p.prompt;
  const dl = node.querySelector(".card-params");
  for (const [k, v] of paramRows(p, out.seed)) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = String(v);
    dl.append(dt, dd);
  }
  const ext = (out.content_type.split("/")[1] || "png").replace("jpeg", "jpg");
  const download = node.querySelector(".card-download");
  download.href = out.url;
  download.download = `sdserve-${out.seed}.${ext}`;
  node.querySelector(".card-reuse").addEventListener("click", () => reuse(job, out.seed));
  node.querySelector(".card-reuse").hidden = p.task === "upscale";  // nothing to generate again
  setUpUpscale(node, out);
  node.querySelector(".card-input").addEventListener("click", async () => {
    if (task() === "txt2img") setTask("img2img");
    try {
      await useImage(out.url, `Result ${out.seed}`);
      $("image-section").scrollIntoView({ behavior: "smooth", block: "start" });
      $("prompt").focus({ preventScroll: true });
    } catch (e) {
      showError($("form-error"), `That image could not be used: ${e.message}`);
    }
  });
  if (p.task === "upscale") node.querySelector(".curl").hidden = true;  // the snippets are for generations
  else setUpCurl(node, job, out);
  return node;
}

async function reuse(job, seed) {
  const p = job.params;
  if (state.models.has(p.model)) $("model").value = p.model;
  setTask(p.task);
  $("prompt").value = p.prompt;
  $("negative-prompt").value = p.negative_prompt || "";
  $("steps").value = p.steps;
  $("guidance").value = p.guidance;
  $("seed").value = seed;
  if (p.strength != null) { $("strength").value = p.strength; $("strength-out").value = p.strength; }
  const inputs = state.inputs.get(job.id);
  controlOnModel(currentModel());  // the model may have changed without a change event
  reuseOptions(p);
  reuseControl(p, inputs);
  if (p.task !== "txt2img" && inputs) {
    await useImage(inputs.image, "Input of that result");
    if (inputs.mask) {
      const mask = await loadImage(inputs.mask);
      restoreMask(mask);
    }
  } else if (p.task !== "txt2img") {
    $("image-info").textContent = "That result's input image is not kept after a reload: choose it again.";
  }
  if (p.task === "txt2img") { $("width").value = p.width; $("height").value = p.height; }
  describeModel();
  $("prompt").focus();
}

// "Upscale" on a result: an upscale job (POST /v1/upscale) with the chosen upscaler (the
// server's list, GET /sdapi/v1/upscalers; first an upscaler model where there is one) and
// factor; its result becomes a card of its own.
function setUpUpscale(node, out) {
  const names = imageUpscalers();
  const select = node.querySelector(".card-upscaler");
  select.replaceChildren(...names.map((n) => new Option(n, n)));
  select.value = names.find((n) => !["Lanczos", "Nearest"].includes(n)) || "Lanczos";
  node.querySelector(".card-upscale").addEventListener("click", () => {
    if (!state.job) upscaleResult(out, select.value, Number(node.querySelector(".card-scale").value) || 2);
  });
}

async function upscaleResult(out, upscaler, scale) {
  showError($("form-error"), "");
  let job;
  try {
    const blob = await (await fetch(out.url)).blob();
    const image = await new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
    setRunning(true);
    resetProgress();
    setStatus(`Submitting an upscale (${upscaler}, ${scale}×)…`);
    job = await api("/v1/upscale", { method: "POST", body: { image, upscaler, scale } });
  } catch (e) {
    setRunning(false);
    setStatus("Not started");
    reportError(e);
    return;
  }
  await follow(job);
}

function restoreMask(maskImg) {
  // Back from white-on-black to painted strokes.
  const c = document.createElement("canvas");
  c.width = editor.width;
  c.height = editor.height;
  const ctx = c.getContext("2d");
  ctx.drawImage(maskImg, 0, 0, c.width, c.height);
  const px = ctx.getImageData(0, 0, c.width, c.height);
  const m = editor.mask.getContext("2d");
  const out = m.createImageData(c.width, c.height);
  for (let i = 0; i < px.data.length; i += 4) {
    out.data[i] = 255; out.data[i + 1] = 40; out.data[i + 2] = 100; out.data[i + 3] = px.data[i];
  }
  m.putImageData(out, 0, 0);
}

function setUpCurl(node, job, out) {
  const select = node.querySelector(".curl-dialect");
  select.replaceChildren(...DIALECTS.map((d) => new Option(d.label, d.id)));
  const text = node.querySelector(".curl-text");
  const notes = node.querySelector(".curl-notes");
  const files = node.querySelector(".curl-files");
  const render = () => {
    const dialect = DIALECTS.find((d) => d.id === select.value);
    const model = state.models.get(job.params.model);
    const ctx = {
      origin: location.origin, key: getKey(), modelDefaults: model ? model.defaults : null,
      a1111Sampler: state.schedulers.get(job.params.scheduler) || null,
      comfySampler: state.comfySamplers.get(job.params.scheduler) || null,
      comfyCheckpoint: (state.config.comfyui_checkpoints || {})[job.params.model] || job.params.model,
      comfyRefiner: job.params.refiner && ((state.config.comfyui_checkpoints || {})[job.params.refiner.model] || job.params.refiner.model),
      vaeFile: vaeFile(job.params.vae), arch: model ? model.arch : null,
    };
    const { command, notes: warnings } = dialect.build(job.params, out.seed, ctx);
    text.value = command;
    text.rows = Math.min(16, command.split("\n").length + 1);
    notes.textContent = warnings.join(" ");
    renderFiles(files, job, select.value);
  };
  select.addEventListener("change", render);
  node.querySelector("details").addEventListener("toggle", (e) => { if (e.target.open) render(); });
  node.querySelector(".curl-copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text.value);
    } catch {
      text.select();
      document.execCommand("copy");  // plain-http pages have no async clipboard
    }
    notes.textContent = "Copied.";
  });
}

function renderFiles(container, job, dialect) {
  const needed = filesFor(job.params, dialect);
  container.replaceChildren();
  if (!needed.length) return;
  const inputs = state.inputs.get(job.id);
  container.append("Reads ");
  needed.forEach(([name, what], i) => {
    if (i) container.append(", ");
    const src = inputs && ({ "input.png": inputs.image, "mask.png": inputs.mask, "mask-openai.png": inputs.maskOpenai,
      "ip-adapter.png": inputs.ipAdapter }[name] || (/^control-(\d+)\.png$/.test(name) && inputs.control?.[Number(name.slice(8, -4))]));
    if (src) {
      const a = document.createElement("a");
      a.href = src;
      a.download = name;
      a.textContent = name;
      container.append(a, ` (${what})`);
    } else {
      container.append(`${name} (${what}; not kept after a reload)`);
    }
  });
  container.append(" from the current directory.");
}

async function restoreGallery() {
  if ($("gallery").children.length) return;
  for (const id of keptJobs().reverse()) {
    try {
      const job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
      if (job.status === "succeeded") addCards(job, { append: true });
    } catch { /* gone (expired, or another key's): skip it */ }
  }
}

start();
