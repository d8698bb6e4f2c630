from __future__ import annotations

import io
import random

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from desktop.encode import PNG_SIGNATURE, encode_jpeg, encode_png, encode_png_pillow


def screenlike(width: int = 321, height: int = 203, seed: int = 7) -> Image.Image:
    """Flat areas, sharp edges and noisy text-like blocks, like a screen."""
    rng = random.Random(seed)
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:] = (240, 240, 240)
    for _ in range(40):
        x, y = rng.randrange(width - 20), rng.randrange(height - 10)
        arr[y:y + rng.randrange(2, 10), x:x + rng.randrange(2, 20)] = [rng.randrange(256) for _ in range(3)]
    arr[50:60, 10:300] = np.random.default_rng(seed).integers(0, 256, (10, 290, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_png_decodes_to_the_same_pixels(mode: str) -> None:
    img = screenlike().convert(mode)
    data = encode_png(img)
    assert data.startswith(PNG_SIGNATURE)
    assert imagecodecs.png_check(data)
    back = Image.open(io.BytesIO(data))
    back.load()
    assert back.mode == mode and back.size == img.size
    assert np.array_equal(np.asarray(back), np.asarray(img))
    # libpng (a second, independent decoder) agrees.
    assert np.array_equal(imagecodecs.png_decode(data), np.asarray(img))


def test_png_of_other_modes_is_rgb() -> None:
    img = screenlike().convert("P")
    back = Image.open(io.BytesIO(encode_png(img)))
    assert back.mode == "RGB"
    assert np.array_equal(np.asarray(back), np.asarray(img.convert("RGB")))


def test_png_tiny_and_odd_sizes() -> None:
    for size in [(1, 1), (1, 9), (9, 1), (1366, 3)]:
        img = Image.new("RGB", size, (1, 2, 3))
        back = Image.open(io.BytesIO(encode_png(img)))
        assert back.size == size and back.getpixel((size[0] - 1, size[1] - 1)) == (1, 2, 3)


def test_pillow_reference_encoder_agrees() -> None:
    img = screenlike()
    a = np.asarray(Image.open(io.BytesIO(encode_png(img))))
    b = np.asarray(Image.open(io.BytesIO(encode_png_pillow(img))))
    assert np.array_equal(a, b)


def test_jpeg_decodes_close_to_the_original() -> None:
    img = Image.new("RGB", (64, 48), (200, 30, 60))
    data = encode_jpeg(img, quality=60)
    back = Image.open(io.BytesIO(data))
    assert back.format == "JPEG" and back.size == (64, 48)
    r, g, b = back.convert("RGB").getpixel((32, 24))  # type: ignore[misc]
    assert abs(r - 200) < 8 and abs(g - 30) < 8 and abs(b - 60) < 8
    assert len(encode_jpeg(screenlike(), quality=90)) > len(encode_jpeg(screenlike(), quality=20))


def test_jpeg_rejects_bad_quality() -> None:
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(Image.new("RGB", (4, 4)), quality=0)
