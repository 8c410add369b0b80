"""Settings from defaults, the TOML file, SDSERVE_* environment variables and CLI overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdserve.config import Settings, load_settings

TOML = """
port = 9001
api_keys = ["from-file"]
max_body_mb = 8

[[models]]
id = "dreamshaper-8"
source = "Lykon/dreamshaper-8"
aliases = ["ds8"]
steps = 25
guidance = 7.0
scheduler = "dpmpp_2m_karras"

[[models]]
id = "my-merge"
source = "/models/my-merge.safetensors"
arch = "sdxl"
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SDSERVE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "sdserve.toml"
    path.write_text(TOML)
    return path


def test_defaults() -> None:
    s = load_settings()
    assert (s.host, s.port, s.demo, s.api_keys, s.models) == ("127.0.0.1", 8000, False, [], [])
    assert s.max_body_bytes == 50 * 1024 * 1024
    assert s.demo_dir == Path("data") / "demo-models"


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDSERVE_PORT", "9100")
    monkeypatch.setenv("SDSERVE_DEMO", "true")
    monkeypatch.setenv("SDSERVE_DATA_DIR", "/srv/sd")
    monkeypatch.setenv("SDSERVE_MAX_BODY_MB", "1.5")
    s = load_settings()
    assert (s.port, s.demo, s.data_dir, s.max_body_mb) == (9100, True, Path("/srv/sd"), 1.5)
    assert s.max_body_bytes == int(1.5 * 1024 * 1024)


@pytest.mark.parametrize(("value", "keys"), [
    ("k1", ["k1"]),
    ("k1,k2", ["k1", "k2"]),
    (" k1 , k2 ,", ["k1", "k2"]),  # as the README documents: SDSERVE_API_KEYS=key1,key2
    ('["k1", "k,2"]', ["k1", "k,2"]),  # JSON for keys that contain commas
])
def test_api_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, keys: list[str]) -> None:
    monkeypatch.setenv("SDSERVE_API_KEYS", value)
    assert load_settings().api_keys == keys
    assert Settings().api_keys == keys


def test_toml_file_with_models(config_file: Path) -> None:
    s = load_settings(config_file)
    assert (s.port, s.api_keys, s.max_body_mb, s.config_file) == (9001, ["from-file"], 8, config_file)
    assert [m.id for m in s.models] == ["dreamshaper-8", "my-merge"]
    ds8, merge = s.models
    assert (ds8.arch, ds8.aliases, ds8.steps, ds8.guidance, ds8.scheduler) == ("sd15", ["ds8"], 25, 7.0, "dpmpp_2m_karras")
    assert (merge.arch, merge.source) == ("sdxl", "/models/my-merge.safetensors")


def test_config_file_from_the_environment(monkeypatch: pytest.MonkeyPatch, config_file: Path) -> None:
    monkeypatch.setenv("SDSERVE_CONFIG_FILE", str(config_file))
    assert load_settings().port == 9001


def test_precedence_flag_over_env_over_file(monkeypatch: pytest.MonkeyPatch, config_file: Path) -> None:
    assert load_settings(config_file).port == 9001  # file over default
    monkeypatch.setenv("SDSERVE_PORT", "9100")
    s = load_settings(config_file)
    assert s.port == 9100  # env over file
    assert s.api_keys == ["from-file"]  # what env does not set still comes from the file
    assert load_settings(config_file, port=9200).port == 9200  # flag over env
    assert load_settings(config_file, port=None).port == 9100  # a flag not given is no override


def test_user_models_join_the_catalog(config_file: Path) -> None:
    from sdserve.compose import build_catalog

    cat = build_catalog(load_settings(config_file))
    ds8 = cat.get("ds8")
    assert ds8.id == "dreamshaper-8" and ds8.source.repo == "Lykon/dreamshaper-8"
    assert (ds8.defaults.steps, ds8.defaults.guidance, ds8.defaults.scheduler) == (25, 7.0, "dpmpp_2m_karras")
    assert ds8.defaults.width == 512  # unset: the family's native size
    merge = cat.get("my-merge")
    assert merge.arch == "sdxl" and merge.source.is_single_file and merge.defaults.width == 1024
    assert cat.get("sdxl").id == "@cf/stabilityai/stable-diffusion-xl-base-1.0"  # built-ins stay


def test_duplicate_model_ids_are_an_error_that_says_how_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "dup.toml"
    path.write_text('[[models]]\nid = "a"\nsource = "o/a"\n[[models]]\nid = "a"\nsource = "o/b"\n')
    with pytest.raises(ValueError) as e:
        load_settings(path)
    assert "'a'" in str(e.value) and "unique id" in str(e.value)


@pytest.mark.parametrize(("text", "words"), [
    ("port = [", "not valid TOML"),
    ("prot = 8000", "prot"),  # a typo is an error, not silently ignored
    ("port = 70000", "port"),
    ("max_body_mb = 0", "max_body_mb"),
    ('dtype = "fp8"', "dtype"),
    ('[[models]]\nid = "x"\nsource = "o/x"\narch = "sd3"\n', "arch"),
    ('[[models]]\nid = "x"\n', "source"),
])
def test_bad_config_files_are_value_errors_naming_the_problem(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        load_settings(path)
    assert words in str(e.value)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_bad_environment_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDSERVE_PORT", "eighty")
    with pytest.raises(ValueError, match="port"):
        load_settings()
