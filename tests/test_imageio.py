"""Odd inputs get the documented behaviour: converted correctly, or refused with a clear error."""
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from leukedge.errors import ImageError
from leukedge.imageio import MAX_PIXELS, decode_image, load_image


@pytest.fixture(scope="module")
def smear(smear_paths):
    return smear_paths["Pre"][0]


def _save(img: Image.Image, path, fmt, **kw):
    img.save(path, fmt, **kw)
    return path


def test_real_smear_is_rgb_uint8(smear):
    img = load_image(smear)
    assert img.dtype == np.uint8 and img.shape == (224, 224, 3)
    assert 50 < img.mean() < 250


def test_grayscale_becomes_three_equal_channels(tmp_path, smear):
    gray = Image.open(smear).convert("L")
    img = load_image(_save(gray, tmp_path / "g.png", "PNG"))
    assert img.shape == (224, 224, 3)
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])
    assert np.array_equal(img[..., 0], np.asarray(gray))


def test_rgba_is_composited_on_white(tmp_path, smear):
    rgb = np.asarray(Image.open(smear).convert("RGB"))
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:50, :50] = 0  # transparent corner
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    img = load_image(_save(rgba, tmp_path / "a.png", "PNG"))
    assert np.all(img[:50, :50] == 255)
    assert np.array_equal(img[100:, 100:], rgb[100:, 100:])


def test_16bit_tiff_is_scaled_to_8bit(tmp_path, smear):
    gray8 = np.asarray(Image.open(smear).convert("L"))
    gray16 = (gray8.astype(np.uint16) * 257)
    path = tmp_path / "x16.tif"
    Image.fromarray(gray16).save(path, "TIFF")
    assert Image.open(path).mode.startswith("I;16")
    img = load_image(path)
    assert img.dtype == np.uint8
    assert np.abs(img[..., 0].astype(int) - gray8.astype(int)).max() <= 1


def test_palette_png_is_converted(tmp_path, smear):
    pal = Image.open(smear).convert("RGB").convert("P", palette=Image.ADAPTIVE, colors=64)
    img = load_image(_save(pal, tmp_path / "p.png", "PNG"))
    expected = np.asarray(pal.convert("RGB"))
    assert np.array_equal(img, expected)


def test_exif_orientation_is_applied(tmp_path, smear):
    src = Image.open(smear).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW when displayed
    path = tmp_path / "rot.jpg"
    src.crop((0, 0, 224, 160)).save(path, "JPEG", exif=exif, quality=95)
    img = load_image(path)
    assert img.shape[:2] == (224, 160)  # width/height swapped by the orientation tag


@pytest.mark.parametrize("content,match", [
    (b"", "empty file"),
    (b"this is a text file, not an image\n" * 10, "not an image"),
])
def test_non_images_are_refused(tmp_path, content, match):
    p = tmp_path / "bad.jpg"
    p.write_bytes(content)
    with pytest.raises(ImageError, match=match):
        load_image(p)


def test_truncated_jpeg_is_refused(tmp_path, smear):
    data = smear.read_bytes()
    p = tmp_path / "trunc.jpg"
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="truncated or corrupt|cannot decode"):
        load_image(p)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    # A tiny PNG file that claims a huge canvas: refused from the header, not decoded.
    side = int(np.sqrt(MAX_PIXELS)) + 100
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, "PNG")
    with pytest.raises(ImageError, match="megapixels|too large"):
        decode_image(buf.getvalue(), "bomb.png")


def test_missing_and_folder_paths(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)


def test_imageio_imports_no_tensorflow():
    code = "import leukedge, leukedge.imageio, leukedge.preprocess, leukedge.spec, leukedge.runtime, sys; " \
           "print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
