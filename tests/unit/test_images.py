"""Decoding caller images safely (every odd format becomes plain RGB or L, or a BadInput
naming the field) and encoding outputs with their parameters embedded."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from sdserve.errors import BadInput, PayloadTooLarge
from sdserve.images import decode_image, encode_image, infotext, sniff_content_type

LIMIT = 4096 * 4096


def _enc(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _noise(size: tuple[int, int] = (64, 64)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming ``width`` x ``height``, with no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# -- decode: what is refused -------------------------------------------------------------

@pytest.mark.parametrize(("data", "words"), [
    (b"", "empty"),
    (b"hello, not an image", "not a decodable image"),
    (b"\x89PNG\r\n\x1a\n", "not a decodable image"),  # signature only
    (_png_header_only(0, 16), "not a decodable image"),
])
def test_non_images_are_bad_input_naming_the_field(data: bytes, words: str) -> None:
    with pytest.raises(BadInput) as e:
        decode_image(data, "image_b64", LIMIT)
    assert type(e.value) is BadInput
    assert e.value.field == "image_b64" and words in e.value.message
    assert e.value.message.startswith("image_b64: ")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_images_are_bad_input(fmt: str) -> None:
    data = _enc(_noise(), fmt)
    with pytest.raises(BadInput) as e:
        decode_image(data[: len(data) // 2], "mask", LIMIT)
    # WebP's container states its length, so Pillow refuses it at open; the others fail on load.
    assert type(e.value) is BadInput and e.value.field == "mask"
    assert "truncated" in e.value.message or "not a decodable image" in e.value.message


@pytest.mark.parametrize(("width", "height"), [(5000, 5000), (100_000, 100_000), (2**31 - 1, 2**31 - 1)])
def test_decompression_bomb_is_refused_from_the_header(width: int, height: int) -> None:
    # Only the header exists: any attempt to decode pixels would fail differently (truncated),
    # so PayloadTooLarge proves the size was checked before decoding.
    with pytest.raises(PayloadTooLarge) as e:
        decode_image(_png_header_only(width, height), "image", LIMIT)
    assert e.value.status == 413 and e.value.field == "image"


def test_pixel_limit_is_the_configured_one() -> None:
    data = _enc(_noise((64, 64)))
    assert decode_image(data, "image", 64 * 64).size == (64, 64)
    with pytest.raises(PayloadTooLarge) as e:
        decode_image(data, "image", 64 * 64 - 1)
    assert "64x64" in e.value.message


# -- decode: what is converted -----------------------------------------------------------

def test_rgb_png_and_jpeg_decode_to_the_same_pixels_size() -> None:
    img = _noise((48, 32))
    png = decode_image(_enc(img), "image", LIMIT)
    assert png.mode == "RGB" and png.size == (48, 32)
    assert np.array_equal(np.asarray(png), np.asarray(img))  # PNG is lossless
    assert decode_image(_enc(img, "JPEG"), "image", LIMIT).size == (48, 32)


def test_cmyk_jpeg_becomes_rgb() -> None:
    out = decode_image(_enc(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"), "image", LIMIT)
    assert out.mode == "RGB"
    r, g, b = out.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60  # cyan 0, magenta+yellow full = red


def test_16_bit_greyscale_is_scaled_not_clipped() -> None:
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    data = _enc(Image.fromarray(ramp))
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = np.asarray(decode_image(data, "image", LIMIT))
    assert out.shape == (64, 64, 3)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    assert out[32, 0, 0] == ramp[32, 0] // 256 == 128  # mid-grey stays mid-grey
    assert np.asarray(decode_image(data, "mask", LIMIT, mode="L"))[32, 0] == 128


def test_palette_image_keeps_its_colours() -> None:
    pal = Image.new("RGB", (16, 16), (10, 200, 30)).quantize(4)
    assert pal.mode == "P"
    out = decode_image(_enc(pal), "image", LIMIT)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (10, 200, 30)


def test_rgba_is_composited_on_white() -> None:
    img = Image.new("RGBA", (16, 16), (255, 0, 0, 255))
    img.paste((0, 0, 255, 0), (0, 0, 8, 16))  # left half fully transparent
    out = decode_image(_enc(img), "image", LIMIT)
    assert out.mode == "RGB"
    assert out.getpixel((2, 2)) == (255, 255, 255) and out.getpixel((12, 2)) == (255, 0, 0)


def test_mask_mode_gives_single_channel() -> None:
    m = Image.new("RGB", (16, 16), (0, 0, 0))
    m.paste((255, 255, 255), (4, 4, 12, 12))
    out = decode_image(_enc(m), "mask", LIMIT, mode="L")
    assert out.mode == "L" and out.getpixel((8, 8)) == 255 and out.getpixel((0, 0)) == 0


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 3
    out = decode_image(buf.getvalue(), "image", LIMIT)
    assert out.mode == "RGB" and out.getpixel((8, 8)) == (255, 0, 0)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    out = decode_image(_enc(Image.new("RGB", (40, 20)), "JPEG", exif=exif.tobytes()), "image", LIMIT)
    assert out.size == (20, 40)


# -- encode ------------------------------------------------------------------------------

PARAMS = "a lighthouse\nNegative prompt: fog\nSteps: 2, Sampler: Euler, CFG scale: 7.5, Seed: 42, Size: 64x64"


def test_png_carries_parameters_in_a_text_chunk() -> None:
    data = encode_image(_noise(), "png", PARAMS)
    assert sniff_content_type(data) == "image/png"
    img = Image.open(io.BytesIO(data))
    assert img.text["parameters"] == PARAMS
    assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(_noise()))


@pytest.mark.parametrize(("fmt", "mime"), [("jpeg", "image/jpeg"), ("webp", "image/webp")])
def test_jpeg_and_webp_carry_parameters_in_exif_user_comment(fmt: str, mime: str) -> None:
    data = encode_image(_noise(), fmt, PARAMS)
    assert sniff_content_type(data) == mime
    img = Image.open(io.BytesIO(data))
    assert img.format == fmt.upper()
    comment = img.getexif().get_ifd(0x8769)[0x9286]
    # A1111's layout: charset marker, then UTF-16 big-endian text.
    assert comment.startswith(b"UNICODE\0")
    assert comment[8:].decode("utf-16-be") == PARAMS


def test_jpeg_accepts_rgba_by_dropping_alpha() -> None:
    data = encode_image(Image.new("RGBA", (8, 8), (1, 2, 3, 0)), "jpeg", "x")
    assert Image.open(io.BytesIO(data)).mode == "RGB"


def test_unknown_output_format_is_bad_input() -> None:
    with pytest.raises(BadInput) as e:
        encode_image(_noise(), "gif", "x")
    assert e.value.field == "output_format"


def test_sniff_content_type() -> None:
    assert sniff_content_type(b"GIF89a...") == "application/octet-stream"
    assert sniff_content_type(b"") == "application/octet-stream"


def test_infotext_is_a1111_style() -> None:
    summary = {"prompt": "a cat", "negative_prompt": "dog", "steps": 2, "guidance": 7.5, "width": 64,
               "height": 64, "model": "sd15", "task": "img2img", "strength": 0.6}
    text = infotext(summary, seed=42, sampler_label="DPM++ 2M", device="cpu", dtype="float32")
    first, second, third = text.split("\n")
    assert first == "a cat" and second == "Negative prompt: dog"
    for part in ("Steps: 2", "Sampler: DPM++ 2M", "CFG scale: 7.5", "Seed: 42", "Size: 64x64", "Model: sd15",
                 "Denoising strength: 0.6"):
        assert part in third
    txt2img = infotext({**summary, "task": "txt2img", "negative_prompt": ""}, 1, "Euler", "cpu", "float32")
    assert "Negative prompt" not in txt2img and "Denoising strength" not in txt2img
