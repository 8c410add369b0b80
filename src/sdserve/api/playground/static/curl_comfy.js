// "Copy as ComfyUI workflow": a text-to-image job as ComfyUI's default graph (its API format),
// with the nodes ComfyUI has for the job's add-ons: VAELoader (VAE), CLIPSetLastLayer (clip
// skip), LatentUpscale(By) + a second KSampler (hires fix with a latent upscaler). What the
// graph cannot carry is named in a note (docs/api-comfyui.md has the node mapping).

import { notExpressed } from "./curl_fields.js";

// A1111's latent upscale modes ComfyUI has (docs/api-comfyui.md, LatentUpscale).
const LATENT_METHODS = { Latent: "bilinear", "Latent (bicubic)": "bicubic", "Latent (nearest-exact)": "nearest-exact" };

// ctx: {comfySampler: [sampler_name, scheduler] or null, comfyCheckpoint, vaeFile, arch}.
export function comfyGraph(p, seed, ctx, notes) {
  const method = p.hires && LATENT_METHODS[p.hires.upscaler];
  const can = ["VAE", "clip skip", ...(method ? ["hires fix"] : [])];
  notes.push(...notExpressed(p, "This ComfyUI graph", can));
  if (p.hires && !method) notes.push(`(ComfyUI's latent upscale has no ${p.hires.upscaler}; its graph would need an image upscaler pass.)`);
  const [sampler, scheduler] = ctx.comfySampler || ["euler", "normal"];
  const sampling = { seed, steps: p.steps, cfg: p.guidance, sampler_name: sampler, scheduler, denoise: 1 };
  const graph = {
    3: { class_type: "KSampler", inputs: { ...sampling, model: ["4", 0], positive: ["6", 0], negative: ["7", 0],
      latent_image: ["5", 0] } },
    4: { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: ctx.comfyCheckpoint } },
    5: { class_type: "EmptyLatentImage", inputs: { width: p.width, height: p.height, batch_size: 1 } },
    6: { class_type: "CLIPTextEncode", inputs: { text: p.prompt, clip: ["4", 1] } },
    7: { class_type: "CLIPTextEncode", inputs: { text: p.negative_prompt || "", clip: ["4", 1] } },
    8: { class_type: "VAEDecode", inputs: { samples: ["3", 0], vae: ["4", 2] } },
    9: { class_type: "SaveImage", inputs: { filename_prefix: "sdserve", images: ["8", 0] } },
  };
  if (p.clip_skip > 1) {
    // A1111's numbering -> ComfyUI's layer index (SDXL counts from its usual penultimate layer).
    const stop = -(p.clip_skip + (ctx.arch === "sdxl" ? 1 : 0));
    graph[10] = { class_type: "CLIPSetLastLayer", inputs: { stop_at_clip_layer: stop, clip: ["4", 1] } };
    graph[6].inputs.clip = ["10", 0];
    graph[7].inputs.clip = ["10", 0];
  }
  if (p.vae) {
    graph[11] = { class_type: "VAELoader", inputs: { vae_name: ctx.vaeFile || p.vae } };
    graph[8].inputs.vae = ["11", 0];
  }
  if (method) {
    const h = p.hires;
    graph[12] = !h.resize_x && !h.resize_y
      ? { class_type: "LatentUpscaleBy", inputs: { upscale_method: method, scale_by: h.scale, samples: ["3", 0] } }
      : { class_type: "LatentUpscale", inputs: { upscale_method: method, width: h.resize_x, height: h.resize_y,
        crop: "center", samples: ["3", 0] } };
    graph[13] = { class_type: "KSampler", inputs: { ...sampling, steps: h.steps || p.steps, denoise: h.strength,
      model: ["4", 0], positive: ["6", 0], negative: ["7", 0], latent_image: ["12", 0] } };
    graph[8].inputs.samples = ["13", 0];
    notes.push("ComfyUI's second KSampler runs its own schedule for the denoise (steps / denoise), "
      + "and rounds the upscaled latent its way, so the hires image may differ from the page's.");
  }
  return graph;
}
