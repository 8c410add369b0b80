"""Torch-free add-on resolution and listing: tags merged with explicit LoRAs, hashes, ModelsLab's
comma lists, embedding words, and .pt shapes read without running the pickle."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
import zipfile
from pathlib import Path

import pytest

from sdserve.engine.addon_files import AddonFolders
from sdserve.engine.addon_info import embedding_info, lora_metadata
from sdserve.engine.addon_refs import embedding_words, lora_hash, resolve_addons
from sdserve.engine.params import GenerationParams, LoraRef
from sdserve.errors import BadInput


def _safetensors(path: Path, tensors: dict[str, list[int]], meta: dict[str, str] | None = None) -> None:
    header: dict[str, object] = {}
    offset = 0
    for name, shape in tensors.items():
        n = 4
        for s in shape:
            n *= s
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    if meta:
        header["__metadata__"] = meta
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x01" * offset)


@pytest.fixture
def folders(tmp_path: Path) -> AddonFolders:
    _safetensors(tmp_path / "Lora" / "detail.safetensors", {"lora_unet_x.lora_down.weight": [4, 8]},
                 {"ss_output_name": "detail_v2", "ss_tag_frequency": '{"a": 1}'})
    _safetensors(tmp_path / "Lora" / "style" / "ink.safetensors", {"lora_unet_x.lora_down.weight": [4, 8]})
    _safetensors(tmp_path / "embeddings" / "EasyNeg.safetensors", {"emb_params": [3, 32]})
    _safetensors(tmp_path / "embeddings" / "xl_neg.safetensors", {"clip_l": [2, 32], "clip_g": [2, 48]})
    return AddonFolders(tmp_path)


def _p(prompt: str, **kw) -> GenerationParams:  # type: ignore[no-untyped-def]
    return GenerationParams(model="m", prompt=prompt, prompt_syntax="a1111", **kw)


def test_tags_and_explicit_loras_merge_sorted_once(folders: AddonFolders) -> None:
    p = resolve_addons(_p("a <lora:ink:0.5> b", negative_prompt="<lora:detail:-1>",
                          loras=(LoraRef(name="style/ink", weight=0.5),)), folders)
    assert [(r.name, r.weight) for r in p.loras] == [("detail", -1.0), ("style/ink", 0.5)]
    assert resolve_addons(p, folders) == p
    with pytest.raises(BadInput) as e:
        resolve_addons(_p("a <lora:ink:0.7>", loras=(LoraRef(name="ink", weight=0.5),)), folders)
    assert e.value.field == "prompt"
    for bad in ("a <lora:detail:nan>", "a <lora:detail:1e9>", "a <lora:detail:1:0.5:8>", "a <lora:detail:dyn=8>",
                "a <lora:../x:1>"):
        with pytest.raises(BadInput):
            resolve_addons(_p(bad), folders)
    # Plain text: the tag is words.
    assert resolve_addons(GenerationParams(model="m", prompt="a <lora:nope:1>"), folders).loras == ()


def test_lora_hash_is_a1111_addnet_hash(folders: AddonFolders) -> None:
    f = folders.find("lora", "detail", field="loras")
    data = f.path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    assert lora_hash(f) == hashlib.sha256(data[8 + n:]).hexdigest()
    assert lora_metadata(f) == {"ss_output_name": "detail_v2", "ss_tag_frequency": {"a": 1}}


def test_embedding_words_are_whole_words_any_case(folders: AddonFolders) -> None:
    assert embedding_words("x, easyneg, (EasyNeg:1.2) easynegx", ["EasyNeg"]) == ["EasyNeg", "EasyNeg"]
    p = resolve_addons(_p("a cat", negative_prompt="easyneg, blurry"), folders)
    assert [e.name for e in p.embeddings] == ["EasyNeg"]
    with pytest.raises(BadInput) as e:  # named explicitly but not used in a prompt
        resolve_addons(_p("a cat", embeddings=(p.embeddings[0].model_copy(update={"sha256": ""}),)), folders)
    assert e.value.field == "embeddings"


def test_embedding_info_from_headers_and_inert_pickles(folders: AddonFolders, tmp_path: Path) -> None:
    one = embedding_info(folders.find("embedding", "EasyNeg", field="e"))
    xl = embedding_info(folders.find("embedding", "xl_neg", field="e"))
    assert one is not None and (one.vectors, one.shape, one.sdxl) == (3, 32, False)
    assert xl is not None and (xl.vectors, xl.shape, xl.sdxl) == (2, 80, True)

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (tmp_path / "pwned",))

    evil = tmp_path / "embeddings" / "evil.pt"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"string_to_param": {"*": Evil()}}))
    folders.refresh("embedding")
    assert embedding_info(folders.find("embedding", "evil", field="e")) is None
    assert not (tmp_path / "pwned").exists()


def test_modelslab_lora_lists() -> None:
    from sdserve.api.dialects.modelslab.adapter import lora_refs
    from sdserve.api.dialects.modelslab.protocol import GenerateRequest

    def refs(**kw):  # type: ignore[no-untyped-def]
        return [(r.name, r.weight) for r in lora_refs(GenerateRequest(prompt="x", **kw))]

    assert refs(lora_model="b, a", lora_strength="0.5,0.7") == [("a", 0.7), ("b", 0.5)]
    assert refs(lora_model="a,b", lora_strength=0.6) == [("a", 0.6), ("b", 0.6)]
    assert refs(lora_model="a") == [("a", 1.0)]
    for bad in ({"lora_strength": "1"}, {"lora_model": "a", "lora_strength": "x"},
                {"lora_model": "a", "lora_strength": "nan"}):
        with pytest.raises(BadInput) as e:
            lora_refs(GenerateRequest(prompt="x", **bad))
        assert e.value.field == "lora_strength"
