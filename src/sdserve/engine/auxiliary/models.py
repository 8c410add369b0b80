"""The auxiliary models loaded and run: each a thin wrapper over the library class that
does the work (diffusers' StableDiffusionSafetyChecker, transformers' causal LM and BLIP),
kept on the engine's device under the same memory budget as the diffusion models."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from ..memory import module_bytes
from .annotators import DepthEstimator, PersonDetector, PoseEstimator, load_depth, load_detector, load_pose
from .specs import AuxSpec, aux_folder

__all__ = ["AuxModel", "SafetyChecker", "Enhancer", "Captioner", "load_aux",
           "MAX_PROMPT_CHARS", "ENHANCE_NEW_TOKENS"]

# New tokens the enhancer may add to a prompt; MagicPrompt's own demo asks for about this.
ENHANCE_NEW_TOKENS = 48
# An enhanced prompt longer than this is not used (the original is, with a warning).
MAX_PROMPT_CHARS = 1000
# Sampling as MagicPrompt's card suggests: top-k with a mild temperature.
_TOP_K, _TEMPERATURE = 40, 0.9
CAPTION_NEW_TOKENS = 30


@dataclass
class SafetyChecker:
    """Flags images as NSFW: CLIP image embeddings near the checker's concept embeddings."""

    model: Any  # StableDiffusionSafetyChecker
    processor: Any  # CLIPImageProcessor
    device: torch.device
    dtype: torch.dtype

    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        """One flag per image, computed in one batch on the device."""
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt").pixel_values
        # The checker zeroes flagged entries of ``images``; the engine obscures them itself
        # (black, blur or pixelate), so it gets cheap placeholders.
        placeholders = [torch.zeros(1) for _ in images]
        with torch.inference_mode():
            _, flags = self.model(clip_input=pixels.to(self.device, self.dtype), images=placeholders)
        return [bool(f) for f in flags]

    def nbytes(self) -> int:
        return module_bytes(self.model)


class _GumbelSampler:
    """Top-k sampling with one seeded CPU generator per row (the Gumbel-max trick on top of
    greedy decoding): a row's prompt depends on its seed, not on what else is in the batch."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self.generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float() / _TEMPERATURE
        kth = torch.topk(scores, min(_TOP_K, scores.shape[-1]), dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
        u = torch.stack([torch.rand(scores.shape[-1], generator=g) for g in self.generators]).to(scores.device)
        return scores - torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-7)))


@dataclass
class Enhancer:
    """Extends prompts with a causal language model (a GPT-2-class prompt extender)."""

    model: Any  # AutoModelForCausalLM
    tokenizer: Any
    device: torch.device

    def enhance(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[str]:
        """One rewritten prompt per input, all in one batched ``generate``; row ``i`` is
        sampled from ``seeds[i]`` only. May return empty or over-long text: the caller checks."""
        from transformers import LogitsProcessorList

        tok = self.tokenizer
        tok.padding_side = "left"  # generation continues each row from its own end
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        batch = tok(list(prompts), return_tensors="pt", padding=True).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**batch, do_sample=False, num_beams=1, max_new_tokens=ENHANCE_NEW_TOKENS,
                                      logits_processor=LogitsProcessorList([_GumbelSampler(seeds)]),
                                      pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(out, skip_special_tokens=True)
        # One line, single spaces: the models emit newlines and runs of spaces between ideas.
        return [re.sub(r"\s+", " ", t.splitlines()[0] if t.strip() else "").strip() for t in texts]

    def nbytes(self) -> int:
        return module_bytes(self.model)


@dataclass
class Captioner:
    """Describes an image in words (BLIP image captioning), greedily: same image, same text."""

    model: Any  # BlipForConditionalGeneration
    processor: Any  # BlipProcessor
    device: torch.device
    dtype: torch.dtype

    def caption(self, image: Image.Image) -> str:
        inputs = self.processor(images=image.convert("RGB"), return_tensors="pt")
        pixels = inputs.pixel_values.to(self.device, self.dtype)
        with torch.inference_mode():
            out = self.model.generate(pixel_values=pixels, max_new_tokens=CAPTION_NEW_TOKENS, do_sample=False,
                                      num_beams=1)
        return str(self.processor.decode(out[0], skip_special_tokens=True)).strip()

    def nbytes(self) -> int:
        return module_bytes(self.model)


AuxModel = SafetyChecker | Enhancer | Captioner | DepthEstimator | PersonDetector | PoseEstimator
# The ControlNet annotators (engine.auxiliary.annotators), by kind.
_ANNOTATOR_LOADERS: dict[str, Callable[[str, torch.device, torch.dtype], AuxModel]] = {
    "depth": load_depth, "depth-midas": load_depth, "pose": load_pose, "person-detector": load_detector}


def load_aux(spec: AuxSpec, device: torch.device, dtype: torch.dtype) -> AuxModel:
    """``spec``'s model from disk (never the network) on ``device``. Raises BadInput naming
    `sdserve pull` when the weights are missing."""
    folder = str(aux_folder(spec))
    local: dict[str, Any] = {"local_files_only": True}
    if spec.kind in _ANNOTATOR_LOADERS:
        return _ANNOTATOR_LOADERS[spec.kind](folder, device, dtype)
    if spec.kind == "safety-checker":
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        checker = StableDiffusionSafetyChecker.from_pretrained(folder, dtype=dtype, **local)
        return SafetyChecker(checker.to(device).eval(), CLIPImageProcessor.from_pretrained(folder, **local),
                             device, dtype)
    if spec.kind == "enhancer":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # float32: a 16-bit LM's sampling would depend on rounding; GPT-2-class models are small.
        lm: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **local)
        return Enhancer(lm.to(device).eval(), AutoTokenizer.from_pretrained(folder, **local), device)
    from transformers import BlipForConditionalGeneration, BlipProcessor

    blip: Any = BlipForConditionalGeneration.from_pretrained(folder, dtype=dtype, **local)
    return Captioner(blip.to(device).eval(), BlipProcessor.from_pretrained(folder, **local), device, dtype)
