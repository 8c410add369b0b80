"""Add-on folders: A1111's layout, names as users type them, and no way out of the folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdserve.engine.addon_files import AddonFolders
from sdserve.errors import BadInput


@pytest.fixture
def models(tmp_path: Path) -> Path:
    lora = tmp_path / "models" / "Lora"
    (lora / "style").mkdir(parents=True)
    (lora / "add_detail.safetensors").write_bytes(b"x" * 10)
    (lora / "style" / "ink.safetensors").write_bytes(b"y")
    (lora / "notes.txt").write_text("not a lora")
    (tmp_path / "models" / "LyCORIS").mkdir()
    (tmp_path / "models" / "LyCORIS" / "loha.safetensors").write_bytes(b"z")
    peft = lora / "peft_style"
    peft.mkdir()
    (peft / "adapter_config.json").write_text("{}")
    (peft / "adapter_model.safetensors").write_bytes(b"w")
    return tmp_path / "models"


def test_lists_files_of_a_kind_across_its_a1111_folders(models: Path) -> None:
    found = AddonFolders(models).files("lora")
    assert [f.name for f in found] == ["add_detail", "loha", "peft_style", "style/ink"]
    assert [f.stem for f in found] == ["add_detail", "loha", "peft_style", "ink"]
    assert found[2].is_dir and not found[0].is_dir
    assert found[0].size == 10
    assert AddonFolders(models).files("vae") == []


def test_finds_by_name_stem_or_file_name(models: Path) -> None:
    folders = AddonFolders(models)
    for name in ("style/ink", "ink", "ink.safetensors", "style/ink.safetensors"):
        assert folders.find("lora", name, field="loras").name == "style/ink"


def test_unknown_name_is_bad_input_naming_the_field_with_close_matches(models: Path) -> None:
    with pytest.raises(BadInput) as e:
        AddonFolders(models).find("lora", "add_detial", field="lora_model")
    assert e.value.field == "lora_model"
    assert "add_detail" in str(e.value)


def test_names_that_leave_the_folders_are_refused(models: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.safetensors"
    secret.write_bytes(b"s")
    os.symlink(secret, models / "Lora" / "linked.safetensors")
    folders = AddonFolders(models)
    for name in ("../secret", "/etc/passwd", "..\\secret", "C:/x", "", "style/../../secret"):
        with pytest.raises(BadInput):
            folders.find("lora", name, field="loras")
    assert "linked" not in [f.name for f in folders.files("lora")]
    with pytest.raises(BadInput):
        folders.find("lora", "linked", field="loras")


def test_a_file_copied_in_later_is_found_without_a_refresh(models: Path) -> None:
    folders = AddonFolders(models)
    assert len(folders.files("lora")) == 4
    (models / "Lora" / "new.safetensors").write_bytes(b"n")
    assert folders.find("lora", "new", field="loras").name == "new"


def test_a_kind_can_point_elsewhere(models: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "mine.pt").write_bytes(b"m")
    folders = AddonFolders(models, {"lora": [other]})
    assert [f.name for f in folders.files("lora")] == ["mine"]
    assert folders.home("lora") == other
    with pytest.raises(ValueError, match="unknown kind"):
        AddonFolders(models, {"loras": [other]})


def test_hash_is_the_files_sha256(models: Path) -> None:
    import hashlib

    f = AddonFolders(models).find("lora", "add_detail", field="loras")
    assert f.sha256() == hashlib.sha256(b"x" * 10).hexdigest()
