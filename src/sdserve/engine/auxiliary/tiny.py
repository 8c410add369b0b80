"""Tiny random-weight auxiliary models in the real on-disk formats (for the tests and demo
mode): a safety checker, a GPT-2 prompt extender and a BLIP captioner, each loadable with
``from_pretrained`` exactly as the hub models are. Tokenizers are written here, no download.

The random weights are steered only where a test or a demo user needs a visible outcome:
- the checker's first concept points from the CLEAN sample's image embedding to the FLAGGED
  sample's (the other concepts can never fire), its threshold between the two, where the tiny
  diffusion models' images (low-contrast grey noise) score: FLAGGED is flagged and CLEAN is not, deterministically, and the
  tiny diffusion models' images (noise around that grey) fall on either side;
- the language models' output layers favour whole words, so prompts and captions read as
  words (random ones) rather than byte soup.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .specs import AUX_KINDS, AuxKind
from .tiny_annotators import write_depth, write_detector, write_dpt, write_pose

__all__ = ["write_tiny_aux", "safety_samples", "TINY_WORDS"]

_SEED = 1234
_WIDTH = 32
_THRESHOLD = 0.06
# The words the tiny language models say (GPT-2 byte-level forms get a leading "Ġ").
TINY_WORDS = ("highly", "detailed", "cinematic", "lighting", "sharp", "focus", "trending", "artstation",
              "digital", "painting", "concept", "art", "intricate", "soft", "volumetric", "matte", "octane",
              "render", "golden", "hour", "a", "photo", "of", "cat", "tree", "house", "sky", "red", "blue")


def safety_samples() -> tuple[Image.Image, Image.Image]:
    """(FLAGGED, CLEAN): the two images the tiny checker is built to tell apart."""
    flagged = Image.new("RGB", (64, 64), (250, 250, 250))
    clean = Image.new("RGB", (64, 64), (10, 10, 10))
    return flagged, clean


# The real models' architectures (CLIP ViT-L/14 checker, GPT-2 small), for `sdserve bench`.
_FULL_VISION = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                "image_size": 224, "patch_size": 14}
_FULL_GPT2 = {"n_embd": 768, "n_layer": 12, "n_head": 12}


def _safety_checker(folder: Path, full_size: bool = False) -> None:
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(_SEED)
    small = {"hidden_size": _WIDTH, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    vision = _FULL_VISION if full_size else {**small, "image_size": 32, "patch_size": 8}
    config = CLIPConfig(text_config={**small, "vocab_size": 99, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
                        vision_config=vision, projection_dim=768 if full_size else 16)
    checker = StableDiffusionSafetyChecker(config).eval()
    side = int(vision["image_size"])
    processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    flagged, clean = safety_samples()
    with torch.no_grad():
        pixels = processor(images=[flagged, clean], return_tensors="pt").pixel_values
        e = torch.nn.functional.normalize(checker.visual_projection(checker.vision_model(pixels)[1]))
        direction = torch.nn.functional.normalize((e[0] - e[1])[None])[0]
        # cos(FLAGGED) = -cos(CLEAN) > 0 along this direction; grey scores in between.
        checker.concept_embeds[0] = direction
        # Measured: the tiny sd15 model's images score -0.01 to 0.08 along it (the samples
        # +-0.36), so about half of them are flagged.
        # Full size (bench): halfway, whatever the margin; tiny: the measured split, checked.
        threshold = 0.0 if full_size else _THRESHOLD
        assert full_size or float(e[1].dot(direction)) + 0.1 < threshold < float(e[0].dot(direction)) - 0.1
        checker.concept_embeds_weights.fill_(2.0)  # a cosine never exceeds 1: these never fire
        checker.concept_embeds_weights[0] = threshold
        checker.special_care_embeds_weights.fill_(2.0)
    checker.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))


def _gpt2(folder: Path, full_size: bool = False) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    from ..tiny import _bytes_to_unicode

    alphabet = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges: list[str] = []
    words = ["Ġ" + w for w in TINY_WORDS] + [","]
    for w in words:  # each word built by merges of its prefixes, as byte-level BPE does
        for i in range(2, len(w) + 1):
            if w[:i] not in vocab:
                merges.append(f"{w[:i - 1]} {w[i - 1]}")
                vocab[w[:i]] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = GPT2Tokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    torch.manual_seed(_SEED)
    eos = vocab["<|endoftext|>"]
    arch: dict[str, Any] = _FULL_GPT2 if full_size else {"n_embd": _WIDTH, "n_layer": 2, "n_head": 4}
    config = GPT2Config(vocab_size=len(vocab), n_positions=256, **arch, bos_token_id=eos, eos_token_id=eos,
                        tie_word_embeddings=False)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        # The final norm's bias gives every hidden state a shared direction; the output rows
        # of whole words (and the end) point along it, every other token against it.
        bias = torch.nn.functional.normalize(torch.randn(config.n_embd), dim=0) * 4
        model.transformer.ln_f.bias.copy_(bias)
        model.transformer.ln_f.weight.mul_(0.25)
        favoured = torch.full((len(vocab),), -6.0)
        for w in words:
            favoured[vocab[w]] = 1.0 + torch.rand(1).item()
        favoured[vocab[","]] = 1.5
        favoured[eos] = 0.5
        # In units of the shared direction's length squared: logits of about 1 to 2 nats.
        model.lm_head.weight.add_(favoured[:, None] * bias[None, :] / bias.dot(bias))
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))


def _blip(folder: Path, full_size: bool = False) -> None:
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    tokens = specials + list(TINY_WORDS)
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n")
    tok = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")
    torch.manual_seed(_SEED)
    small = {"hidden_size": _WIDTH, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = BlipConfig(
        vision_config={**small, "image_size": 32, "patch_size": 8},
        text_config={**small, "vocab_size": len(tokens), "encoder_hidden_size": _WIDTH, "max_position_embeddings": 64,
                     "bos_token_id": tokens.index("[DEC]"), "pad_token_id": 0, "sep_token_id": tokens.index("[SEP]"),
                     "eos_token_id": tokens.index("[SEP]")},
    )
    model = BlipForConditionalGeneration(config).eval()
    with torch.no_grad():
        head = model.text_decoder.cls.predictions
        boost = torch.full((len(tokens),), -5.0)
        boost[len(specials):] = 0.0
        boost[tokens.index("[SEP]")] = -1.0
        # Larger output weights: the image (through cross-attention) picks the words.
        head.decoder.weight.mul_(60)
        head.decoder.bias.copy_(boost)
        head.bias.copy_(boost)
    model.save_pretrained(str(folder))
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    processor.save_pretrained(str(folder))


_WRITERS = {"safety-checker": _safety_checker, "enhancer": _gpt2, "captioner": _blip,
            # the ControlNet annotators (engine.auxiliary.tiny_annotators)
            "depth": write_depth, "depth-midas": write_dpt, "pose": write_pose, "person-detector": write_detector}


def write_tiny_aux(root: Path, kinds: tuple[AuxKind, ...] = AUX_KINDS,
                   force: bool = False, full_size: bool = False) -> list[Path]:
    """Write each tiny auxiliary model under ``root/<kind>``; complete folders are kept
    unless ``force``. ``full_size``: the real checker and enhancer architectures (random
    weights, tiny vocabulary), for measuring what they cost; the captioner and the ControlNet
    annotators stay tiny."""
    done = []
    for kind in kinds:
        folder = Path(root) / kind
        if force or not (folder / "config.json").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            _WRITERS[kind](folder, full_size)
        done.append(folder)
    return done
