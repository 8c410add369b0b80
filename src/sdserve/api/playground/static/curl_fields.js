// The add-on fields of a job (VAE, clip skip, tiling, hires fix, refiner, ControlNet units,
// IP-Adapter) in each dialect's own names for "copy as curl", and a note for each one a
// dialect has no field for. Control images are read from control-<i>.png, the image prompt
// from ip-adapter.png (the card links them).

import { b64File, dataUriList } from "./curl_shell.js";

const controlFile = (i) => `control-${i}.png`;
export const IP_ADAPTER_FILE = "ip-adapter.png";

// The files a job's add-ons read, with what each holds.
export function addonFiles(p) {
  const files = (p.control || []).map((u, i) => [controlFile(i), `the control image of ControlNet unit ${i + 1}`]);
  if (p.ip_adapter) files.push([IP_ADAPTER_FILE, "the IP-Adapter's image prompt"]);
  return files;
}

// Which add-ons a job uses, by the name the notes give them.
function used(p) {
  return {
    VAE: !!p.vae, "clip skip": p.clip_skip > 1, "seamless tiling": !!p.tiling, "hires fix": !!p.hires,
    "SDXL refiner": !!p.refiner, ControlNet: !!(p.control && p.control.length), "IP-Adapter": !!p.ip_adapter,
  };
}

// A note naming what of ``p`` a dialect cannot express (``can``: the names it can), or none.
export function notExpressed(p, dialect, can = []) {
  const missing = Object.entries(used(p)).filter(([name, on]) => on && !can.includes(name)).map(([name]) => name);
  return missing.length ? [`${dialect} has no field for ${missing.join(", ")}: this command runs without `
    + `${missing.length > 1 ? "them" : "it"}, so the image differs.`] : [];
}

function defined(obj) {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== null && v !== undefined));
}

// -- sdserve's own API: the fields as they are ------------------------------------------------

export function nativeFields(p) {
  return {
    vae: p.vae || undefined, clip_skip: p.clip_skip > 1 ? p.clip_skip : undefined, tiling: p.tiling || undefined,
    hires: p.hires ? defined(p.hires) : undefined, refiner: p.refiner || undefined,
    control: p.control && p.control.length
      ? p.control.map((u, i) => ({ ...defined(u), image: b64File(controlFile(i)) })) : undefined,
    ip_adapter: p.ip_adapter ? { ...p.ip_adapter, image: b64File(IP_ADAPTER_FILE) } : undefined,
  };
}

// -- AUTOMATIC1111 (and its ControlNet extension) ---------------------------------------------

const A1111_MODES = { balanced: "Balanced", prompt: "My prompt is more important", control: "ControlNet is more important" };
const A1111_RESIZE = { just_resize: "Just Resize", crop_and_resize: "Crop and Resize", resize_and_fill: "Resize and Fill" };

// Fields for the A1111 body and its override_settings. ``vaeFile``: the VAE's file name.
export function a1111Fields(p, vaeFile) {
  const body = {};
  const settings = {};
  if (p.vae) settings.sd_vae = vaeFile || p.vae;
  if (p.clip_skip > 1) settings.CLIP_stop_at_last_layers = p.clip_skip;
  if (p.tiling) body.tiling = true;
  if (p.hires) {
    Object.assign(body, {
      enable_hr: true, hr_scale: p.hires.scale, hr_resize_x: p.hires.resize_x, hr_resize_y: p.hires.resize_y,
      hr_upscaler: p.hires.upscaler, hr_second_pass_steps: p.hires.steps || 0, denoising_strength: p.hires.strength,
    });
  }
  if (p.refiner) Object.assign(body, { refiner_checkpoint: p.refiner.model, refiner_switch_at: p.refiner.switch_at });
  const units = (p.control || []).map((u, i) => ({
    enabled: true, module: u.preprocessor, model: u.model, weight: u.weight, image: b64File(controlFile(i)),
    resize_mode: A1111_RESIZE[u.resize_mode], processor_res: u.processor_res,
    threshold_a: u.threshold_a ?? -1, threshold_b: u.threshold_b ?? -1,
    guidance_start: u.guidance_start, guidance_end: u.guidance_end, control_mode: A1111_MODES[u.control_mode],
    pixel_perfect: false,
  }));
  // The extension's IP-Adapter is a unit whose module is an ip-adapter one; weight = scale.
  if (p.ip_adapter) {
    units.push({ enabled: true, module: "ip-adapter-auto", model: p.ip_adapter.model, weight: p.ip_adapter.scale,
      image: b64File(IP_ADAPTER_FILE) });
  }
  if (units.length) body.alwayson_scripts = { controlnet: { args: units } };
  return { body, settings };
}

// -- ModelsLab --------------------------------------------------------------------------------

// sdserve's preprocessor -> ModelsLab's controlnet_type (auto_hint makes that hint).
const MODELSLAB_TYPES = { canny: "canny", scribble_xdog: "scribble", lineart_standard: "lineart", tile_resample: "tile",
  inpaint: "inpaint", blur_gaussian: "blur", threshold: "threshold", invert: "invert" };

export function modelslabFields(p, notes) {
  const body = {};
  notes.push(...notExpressed(p, "ModelsLab", ["VAE", "clip skip", "ControlNet", "IP-Adapter"]));
  if (p.vae) body.vae = p.vae;
  if (p.clip_skip > 1) body.clip_skip = p.clip_skip;
  const units = p.control || [];
  if (units.length) {
    const pres = units.map((u) => u.preprocessor);
    const hint = pres.every((x) => x !== "none");
    if (!hint && pres.some((x) => x !== "none")) {
      notes.push("ModelsLab's auto_hint applies to every unit or none: the units run without their preprocessors.");
    }
    if (units.some((u) => u.guidance_start !== 0 || u.guidance_end !== 1)) {
      notes.push("ModelsLab has no guidance start/end: its ControlNets act over every step, so the image differs.");
    }
    Object.assign(body, {
      controlnet_model: units.map((u) => u.model).join(","),
      controlnet_conditioning_scale: units.map((u) => u.weight).join(","),
      control_image: units.length === 1 ? b64File(controlFile(0)) : dataUriList(units.map((_, i) => controlFile(i))),
      guess_mode: units[0].control_mode === "control" ? "yes" : "no",
    });
    if (hint) Object.assign(body, { auto_hint: "yes", controlnet_type: pres.map((x) => MODELSLAB_TYPES[x] || x).join(",") });
  }
  if (p.ip_adapter) {
    Object.assign(body, { ip_adapter_id: p.ip_adapter.model, ip_adapter_scale: p.ip_adapter.scale,
      ip_adapter_image: b64File(IP_ADAPTER_FILE) });
  }
  return body;
}
