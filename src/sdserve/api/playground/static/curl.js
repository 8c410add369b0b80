// "Copy as curl": the same generation as a curl command in each dialect sdserve speaks.
//
// Every command carries the resolved parameters of the job (model id, size, steps, guidance,
// scheduler, the seed that was used), so it reproduces the same pixels. Input images are
// read from files next to the command (input.png, mask.png; OpenAI's edits take a mask whose
// transparent pixels mark the area to repaint: mask-openai.png). Bodies that carry an image
// are piped into curl: a base64 image is too long for one command-line argument.

import { a1111Fields, addonFiles, modelslabFields, nativeFields, notExpressed } from "./curl_fields.js";
import { comfyGraph } from "./curl_comfy.js";
import { b64File, bytesFile, lines, postJson, sq } from "./curl_shell.js";

const DECODE = (path) => ` \\\n  | jq -r ${sq(path)} | base64 -d > out.png`;

function limit(notes, ok, text) {
  if (!ok) notes.push(text);
}

// p: the job's params (as GET /v1/jobs/{id} shows them), seed: the image's seed.
// ctx: {origin, key, a1111Sampler (label or null), modelDefaults}.
export const DIALECTS = [
  {
    id: "native",
    label: "sdserve jobs (/v1/jobs)",
    build(p, seed, ctx) {
      const body = {
        model: p.model, prompt: p.prompt, negative_prompt: p.negative_prompt || undefined,
        width: p.width, height: p.height, steps: p.steps, guidance: p.guidance, seed,
        scheduler: p.scheduler, strength: p.task === "txt2img" ? undefined : p.strength,
        image: p.task === "txt2img" ? undefined : b64File("input.png"),
        mask: p.task === "inpaint" ? b64File("mask.png") : undefined,
        ...nativeFields(p),
      };
      const auth = ctx.key ? [`Authorization: Bearer ${ctx.key}`] : [];
      const command = postJson(`${ctx.origin}/v1/jobs`, body, auth, "");
      const follow = `# The answer is the queued job; follow it with\n#   curl -N ${ctx.origin}/v1/jobs/JOB_ID/events` +
        `${ctx.key ? " -H 'Authorization: Bearer …'" : ""}\n# the image is at outputs[0].url when it has succeeded.`;
      return { command: `${command}\n${follow}`, notes: [] };
    },
  },
  {
    id: "workers_ai",
    label: "Cloudflare Workers AI",
    build(p, seed, ctx) {
      const notes = [];
      limit(notes, p.steps <= 20, `Workers AI allows at most 20 steps; this request (${p.steps}) will be refused.`);
      limit(notes, [p.width, p.height].every((s) => s >= 256 && s <= 2048),
        "Workers AI takes widths and heights of 256–2048; this size will be refused.");
      limit(notes, p.scheduler === ctx.modelDefaults?.scheduler,
        `Workers AI has no scheduler field: it uses the model's default, not ${p.scheduler}.`);
      notes.push(...notExpressed(p, "Workers AI"));
      const body = {
        prompt: p.prompt, negative_prompt: p.negative_prompt || undefined, width: p.width, height: p.height,
        num_steps: p.steps, guidance: p.guidance, seed,
        strength: p.task === "txt2img" ? undefined : p.strength,
        image_b64: p.task === "txt2img" ? undefined : b64File("input.png"),
        mask: p.task === "inpaint" ? bytesFile("mask.png") : undefined,
      };
      const auth = ctx.key ? [`Authorization: Bearer ${ctx.key}`] : [];
      return { command: postJson(`${ctx.origin}/ai/run/${p.model}`, body, auth, " -o out.png"), notes };
    },
  },
  {
    id: "openai",
    label: "OpenAI Images",
    build(p, seed, ctx) {
      const notes = [];
      limit(notes, p.scheduler === ctx.modelDefaults?.scheduler,
        `The OpenAI dialect has no scheduler field: it uses the model's default, not ${p.scheduler}.`);
      notes.push(...notExpressed(p, "The OpenAI dialect"));
      const auth = ctx.key ? [`-H ${sq(`Authorization: Bearer ${ctx.key}`)}`] : [];
      if (p.task === "txt2img") {
        const body = {
          model: p.model, prompt: p.prompt, negative_prompt: p.negative_prompt || undefined,
          size: `${p.width}x${p.height}`, n: 1, seed, steps: p.steps, guidance: p.guidance, response_format: "b64_json",
        };
        const cmd = lines([`curl -s -X POST ${sq(`${ctx.origin}/v1/images/generations`)}`,
          "-H 'Content-Type: application/json'", ...auth, `-d ${sq(JSON.stringify(body))}`]);
        return { command: cmd + DECODE(".data[0].b64_json"), notes };
      }
      const fields = [
        "-F image=@input.png", ...(p.task === "inpaint" ? ["-F mask=@mask-openai.png"] : []),
        `--form-string ${sq(`model=${p.model}`)}`, `--form-string ${sq(`prompt=${p.prompt}`)}`,
        ...(p.negative_prompt ? [`--form-string ${sq(`negative_prompt=${p.negative_prompt}`)}`] : []),
        `-F size=${p.width}x${p.height}`, `-F seed=${seed}`, `-F steps=${p.steps}`, `-F guidance=${p.guidance}`,
        `-F strength=${p.strength}`, "-F response_format=b64_json",
      ];
      const cmd = lines([`curl -s -X POST ${sq(`${ctx.origin}/v1/images/edits`)}`, ...auth, ...fields]);
      return { command: cmd + DECODE(".data[0].b64_json"), notes };
    },
  },
  {
    id: "a1111",
    label: "AUTOMATIC1111 (/sdapi/v1)",
    build(p, seed, ctx) {
      const notes = [];
      limit(notes, !!ctx.a1111Sampler,
        `A1111 has no sampler name for ${p.scheduler}; without sampler_name it uses Euler, so the image differs.`);
      const body = {
        prompt: p.prompt, negative_prompt: p.negative_prompt || "", width: p.width, height: p.height,
        steps: p.steps, cfg_scale: p.guidance, seed, sampler_name: ctx.a1111Sampler || undefined,
        batch_size: 1, n_iter: 1, override_settings: { sd_model_checkpoint: p.model },
      };
      const extra = a1111Fields(p, ctx.vaeFile);
      Object.assign(body, extra.body);
      Object.assign(body.override_settings, extra.settings);
      let route = "txt2img";
      if (p.task !== "txt2img") {
        route = "img2img";
        Object.assign(body, { init_images: [b64File("input.png")], denoising_strength: p.strength, resize_mode: 0 });
      }
      if (p.task === "inpaint") {
        // Whole-picture inpainting without blur, starting from the original pixels under the mask
        // (inpainting_fill 1; A1111's default 0 fills them first): what the other dialects do.
        Object.assign(body, { mask: b64File("mask.png"), mask_blur: 0, inpaint_full_res: false, inpainting_fill: 1 });
      }
      const auth = ctx.key ? [`Authorization: Bearer ${ctx.key}`] : [];
      return { command: postJson(`${ctx.origin}/sdapi/v1/${route}`, body, auth, DECODE(".images[0]")), notes };
    },
  },
  {
    id: "modelslab",
    label: "ModelsLab (/api/v3)",
    build(p, seed, ctx) {
      const notes = [];
      limit(notes, [p.width, p.height].every((s) => s <= 1024), "ModelsLab takes sizes up to 1024; this one will be refused.");
      limit(notes, p.steps <= 51, "ModelsLab allows at most 51 steps; this request will be refused.");
      limit(notes, p.guidance >= 1 && p.guidance <= 20,
        `ModelsLab takes guidance_scale 1–20; ${p.guidance} will be refused (leave it out for the model's default).`);
      notes.push("If the job outlasts the server's modelslab_wait_s, the answer is \"processing\": POST {\"key\": ...} to its fetch_result.");
      const route = { txt2img: "text2img", img2img: "img2img", inpaint: "inpaint" }[p.task];
      const body = {
        key: ctx.key || undefined, model_id: p.model, prompt: p.prompt, negative_prompt: p.negative_prompt || undefined,
        width: p.width, height: p.height, samples: 1, num_inference_steps: p.steps, guidance_scale: p.guidance,
        seed, scheduler: p.scheduler, strength: p.task === "txt2img" ? undefined : p.strength,
        init_image: p.task === "txt2img" ? undefined : b64File("input.png"),
        mask_image: p.task === "inpaint" ? b64File("mask.png") : undefined, base64: "yes",
        // ModelsLab's enhance_prompt defaults to yes: a server with a prompt enhancer would
        // rewrite the prompt, and this page's image is of the prompt as written.
        enhance_prompt: "no",
        ...modelslabFields(p, notes),
      };
      return { command: postJson(`${ctx.origin}/api/v3/${route}`, body, [], DECODE(".output[0]")), notes };
    },
  },
  {
    id: "comfyui",
    label: "ComfyUI workflow (/prompt)",
    build(p, seed, ctx) {
      const notes = [];
      if (p.task !== "txt2img") {
        return { command: "# The ComfyUI copy covers text-to-image jobs; use another dialect for this one.", notes };
      }
      limit(notes, !!ctx.comfySampler,
        `ComfyUI has no sampler_name/scheduler pair for ${p.scheduler}; euler/normal is written instead, so the image differs.`);
      limit(notes, !/[()[\]]/.test(`${p.prompt} ${p.negative_prompt || ""}`),
        "ComfyUI reads (word:1.2) weights its own way (see docs/api-comfyui.md), so a weighted prompt may differ.");
      const prompt = comfyGraph(p, seed, ctx, notes);
      const auth = ctx.key ? [`Authorization: Bearer ${ctx.key}`] : [];
      const key = ctx.key ? ` -H ${sq(`Authorization: Bearer ${ctx.key}`)}` : "";
      // Queue it, wait for its history entry (or follow ws://…/ws?clientId=…), then fetch the image.
      const queue = postJson(`${ctx.origin}/prompt`, { prompt }, auth, " | jq -r .prompt_id");
      const command = `pid=$(${queue})\n` +
        `until img=$(curl -s ${sq(`${ctx.origin}/history/`)}"$pid"${key} | jq -ce '.[].outputs["9"].images[0]'); ` +
        "do sleep 1; done\n" +
        `curl -s -G ${sq(`${ctx.origin}/view`)}${key} --data-urlencode "filename=$(jq -r .filename <<<"$img")" ` +
        "-d type=output -o out.png";
      return { command, notes };
    },
  },
];

// The files a command for the job ``p`` reads, with what each holds.
export function filesFor(p, dialect) {
  const addons = ["workers_ai", "openai", "comfyui"].includes(dialect) ? [] : addonFiles(p);
  if (p.task === "txt2img") return addons;
  const files = [["input.png", "the input image"]];
  if (p.task === "inpaint") files.push(dialect === "openai" ? ["mask-openai.png", "the mask, transparent = repaint"]
    : ["mask.png", "the mask, white = repaint"]);
  return [...files, ...addons];
}
