"""The A1111 fields applied by its routes rather than its adapter (see tests/unit/test_every_field.py):
styles from styles.csv, override_settings kept when not restored, prompt-styles listed."""

from __future__ import annotations

import json


def _txt2img(client, **body):  # type: ignore[no-untyped-def]
    return client.post("/sdapi/v1/txt2img", json={"prompt": "a kite", "width": 64, "height": 64, "steps": 1,
                                                   "seed": 3, **body})


def test_a1111_styles_apply_styles_csv(client, settings):
    (settings.data_dir / "styles.csv").write_text(
        'name,prompt,negative_prompt\n"Film","cinematic still of {prompt}, grain","blurry"\n"Sharp","sharp focus",\n',
        encoding="utf-8")
    try:
        listed = client.get("/sdapi/v1/prompt-styles").json()
        assert {s["name"] for s in listed} == {"Film", "Sharp"}
        r = _txt2img(client, styles=["Film", "Sharp"], negative_prompt="fog")
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert info["prompt"] == "cinematic still of a kite, grain, sharp focus"
        assert info["negative_prompt"] == "fog, blurry"
        assert info["infotexts"][0].startswith("cinematic still of a kite, grain, sharp focus\nNegative prompt: fog")
        bad = _txt2img(client, styles=["Noir"])
        assert bad.status_code == 400 and bad.json()["detail"].startswith("styles"), bad.text
    finally:
        (settings.data_dir / "styles.csv").unlink()


def test_a1111_overrides_stay_when_not_restored(client):
    r = _txt2img(client, override_settings={"CLIP_stop_at_last_layers": 2},
                 override_settings_restore_afterwards=False)
    assert r.status_code == 200, r.text
    assert client.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2
    assert json.loads(_txt2img(client).json()["info"])["clip_skip"] == 2
    _txt2img(client, override_settings={"CLIP_stop_at_last_layers": 1})  # restored afterwards (the default)
    assert client.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2
