"""The Workers AI happy path through the real app and engine (more in test_workers_ai*)."""

from PIL import Image
import io


def test_txt2img_returns_png(client):
    r = client.post("/ai/run/@cf/stabilityai/stable-diffusion-xl-base-1.0",
                    json={"prompt": "a lighthouse", "width": 256, "height": 256, "num_steps": 2, "seed": 1})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.size == (256, 256)
    assert "Seed: 1" in img.text["parameters"]
