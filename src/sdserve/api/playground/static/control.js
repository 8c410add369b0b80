// ControlNet units and the IP-Adapter: the native request's `control` list and `ip_adapter`
// (docs/controlnet.md). Preprocessors come from the server's /controlnet/module_list, a unit's
// preview from POST /controlnet/detect (the same code the job runs), ControlNets and
// IP-Adapters from GET /v1/addons, offered only for the chosen model's family
// (GET /playground/addon-families).

import { api } from "./api.js";

const $ = (id) => document.getElementById(id);
const MAX_UNITS = 4;  // engine/control.py's limit
const MAX_SIDE = 2048;  // control images are sent at most this large (the engine resizes them anyway)

const state = { modules: [], controlnets: [], ipAdapters: [], families: { controlnet: {}, ip_adapter: {} }, arch: null };

// An uploaded file as a PNG data URL (any format the browser reads; big ones scaled down).
export async function fileToPng(file) {
  const url = URL.createObjectURL(file);
  try {
    const img = await new Promise((resolve, reject) => {
      const i = new Image();
      i.onload = () => resolve(i);
      i.onerror = () => reject(new Error(`${file.name} could not be read as an image`));
      i.src = url;
    });
    const scale = Math.min(1, MAX_SIDE / Math.max(img.naturalWidth, img.naturalHeight));
    const c = document.createElement("canvas");
    c.width = Math.max(1, Math.round(img.naturalWidth * scale));
    c.height = Math.max(1, Math.round(img.naturalHeight * scale));
    c.getContext("2d").drawImage(img, 0, 0, c.width, c.height);
    return c.toDataURL("image/png");
  } finally {
    URL.revokeObjectURL(url);
  }
}

// -- lists ------------------------------------------------------------------------------------

export async function loadControl() {
  let addons;
  try {
    addons = (await api("/v1/addons")).data;
    state.families = await api("/playground/addon-families");
    // The IP-Adapter modules are not preprocessors of a ControlNet unit (the IP-Adapter section is).
    state.modules = (await api("/controlnet/module_list")).module_list.filter((m) => !m.startsWith("ip-adapter"));
  } catch {
    addons = [];
  }
  state.controlnets = addons.filter((a) => a.kind === "controlnet").map((a) => a.name);
  state.ipAdapters = addons.filter((a) => a.kind === "ip_adapter").map((a) => a.name);
  $("sec-control").hidden = !state.controlnets.length || !state.modules.length;
  $("sec-ipadapter").hidden = !state.ipAdapters.length;
}

// The names of ``kind`` for the model's family. A file whose header does not say its family is
// offered too (the job checks it when it loads), after the known ones, those whose name
// mentions SDXL first for an SDXL model and last for others.
function ofFamily(kind, names) {
  const family = (n) => state.families[kind][n];
  const xl = (n) => /sdxl|_xl\b/i.test(n) === (state.arch === "sdxl");
  const known = names.filter((n) => !state.arch || family(n) === state.arch);
  const unknown = names.filter((n) => state.arch && !family(n));
  return [...known, ...unknown.filter(xl), ...unknown.filter((n) => !xl(n))];
}

export function onModel(model) {
  state.arch = model ? model.arch : null;
  const nets = ofFamily("controlnet", state.controlnets);
  for (const unit of units()) fill(unit.querySelector(".unit-model"), nets);
  $("control-none").hidden = nets.length > 0;
  $("control-add").disabled = !nets.length || units().length >= MAX_UNITS;
  const ipas = ofFamily("ip_adapter", state.ipAdapters);
  fill($("ipa-model"), ipas);
  $("ipa-on").disabled = !ipas.length;
  if (!ipas.length) $("ipa-on").checked = false;
  syncIpa();
}

function fill(select, names) {
  const keep = select.value;
  select.replaceChildren(...names.map((n) => new Option(n, n)));
  if (names.includes(keep)) select.value = keep;
}

// -- units ------------------------------------------------------------------------------------

function units() {
  return [...$("control-units").children];
}

function renumber() {
  units().forEach((u, i) => { u.querySelector(".unit-no").textContent = String(i + 1); });
  $("control-add").disabled = units().length >= MAX_UNITS || !ofFamily("controlnet", state.controlnets).length;
  $("sec-control-on").textContent = units().length ? `${units().length} unit${units().length > 1 ? "s" : ""}` : "";
}

function changed() {
  $("gen-form").dispatchEvent(new Event("change"));  // the cost quote follows
}

// A new unit (settings from ``from``, a job's unit, when given); returns its element.
export function addUnit(from = null, image = null) {
  const node = $("unit-template").content.firstElementChild.cloneNode(true);
  const pre = node.querySelector(".unit-pre");
  pre.replaceChildren(...state.modules.map((m) => new Option(m, m)));
  fill(node.querySelector(".unit-model"), ofFamily("controlnet", state.controlnets));
  if (from) {
    pre.value = from.preprocessor;
    node.querySelector(".unit-model").value = from.model;
    node.querySelector(".unit-weight").value = from.weight;
    node.querySelector(".unit-start").value = from.guidance_start;
    node.querySelector(".unit-end").value = from.guidance_end;
    node.querySelector(".unit-mode").value = from.control_mode;
  }
  if (image) setUnitImage(node, image);
  node.querySelector(".unit-file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    try {
      setUnitImage(node, await fileToPng(file));
      status(node, "");
    } catch (err) {
      status(node, err.message);
    }
    changed();
  });
  node.querySelector(".unit-detect").addEventListener("click", () => preview(node));
  pre.addEventListener("change", () => { node.querySelector(".unit-preview").hidden = true; });
  node.querySelector(".unit-remove").addEventListener("click", () => { node.remove(); renumber(); changed(); });
  $("control-units").append(node);
  renumber();
  return node;
}

function setUnitImage(node, dataUrl) {
  node.dataset.image = dataUrl;
  const thumb = node.querySelector(".unit-thumb");
  thumb.src = dataUrl;
  thumb.hidden = false;
  node.querySelector(".unit-preview").hidden = true;
}

function status(node, text) {
  node.querySelector(".unit-status").textContent = text;
}

// The preprocessor's output for the unit's image, from the server (POST /controlnet/detect).
async function preview(node) {
  if (!node.dataset.image) { status(node, "Choose a control image first."); return; }
  const module = node.querySelector(".unit-pre").value;
  status(node, `Running ${module}…`);
  try {
    const out = await api("/controlnet/detect", { method: "POST", body: {
      controlnet_module: module, controlnet_input_images: [node.dataset.image.split(",", 2)[1]] } });
    const img = node.querySelector(".unit-preview");
    img.src = `data:image/png;base64,${out.images[0]}`;
    img.hidden = false;
    status(node, `What ${module} makes of it (the model sees this, resized to the image).`);
  } catch (e) {
    status(node, `Preview failed: ${e.message}`);
  }
}

$("control-add").addEventListener("click", () => { addUnit(); changed(); });

// -- IP-Adapter -------------------------------------------------------------------------------

function syncIpa() {
  $("ipa-fields").disabled = !$("ipa-on").checked;
  $("sec-ipadapter-on").textContent = $("ipa-on").checked ? "on" : "";
}

export function setIpaImage(dataUrl) {
  $("ipa-file").dataset.image = dataUrl || "";
  $("ipa-thumb").src = dataUrl || "";
  $("ipa-thumb").hidden = !dataUrl;
}

$("ipa-on").addEventListener("change", syncIpa);
$("ipa-scale").addEventListener("input", () => { $("ipa-scale-out").value = $("ipa-scale").value; });
$("ipa-file").addEventListener("change", async () => {
  const file = $("ipa-file").files[0];
  if (file) setIpaImage(await fileToPng(file));
  changed();
});

// -- the request fields -----------------------------------------------------------------------

export class MissingImage extends Error {}

// {control, ip_adapter} for the native request, and the images for "copy as curl"'s files.
// Throws MissingImage (with the field) when a unit or the IP-Adapter has no image yet.
export function controlBody() {
  const body = {};
  const images = { control: [], ipAdapter: null };
  const list = units();
  if (list.length && !$("sec-control").hidden) {
    body.control = list.map((node, i) => {
      if (!node.dataset.image) throw new MissingImage(`control[${i}].image`);
      images.control.push(node.dataset.image);
      // An emptied number field is its default (weight 1, start 0, end 1), not 0.
      const num = (cls, dflt) => { const v = node.querySelector(cls).value.trim(); return v === "" ? dflt : Number(v); };
      return {
        model: node.querySelector(".unit-model").value, preprocessor: node.querySelector(".unit-pre").value,
        weight: num(".unit-weight", 1), control_mode: node.querySelector(".unit-mode").value,
        guidance_start: num(".unit-start", 0), guidance_end: num(".unit-end", 1), image: node.dataset.image,
      };
    });
  }
  if ($("ipa-on").checked && !$("ipa-on").disabled) {
    const image = $("ipa-file").dataset.image;
    if (!image) throw new MissingImage("ip_adapter.image");
    images.ipAdapter = image;
    body.ip_adapter = { model: $("ipa-model").value, scale: Number($("ipa-scale").value), image };
  }
  return { body, images };
}

// Back into the form from a job's params; ``kept``: its images while the page is open.
export function reuseControl(p, kept) {
  for (const u of units()) u.remove();
  (p.control || []).forEach((unit, i) => addUnit(unit, kept?.control?.[i] || null));
  renumber();
  $("ipa-on").checked = !!p.ip_adapter && !$("ipa-on").disabled;
  if (p.ip_adapter) {
    $("ipa-model").value = p.ip_adapter.model;
    $("ipa-scale").value = p.ip_adapter.scale;
    $("ipa-scale-out").value = p.ip_adapter.scale;
    setIpaImage(kept?.ipAdapter || null);
  }
  syncIpa();
}
