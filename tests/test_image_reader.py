"""Issue 24 (2): one reader (vit_common.predict.preprocess.read_image) for vit-predict and folder:
datasets reads every Pillow mode as its pixels are, each mode checked against a numpy reference of
the 8-bit array it must give; EXIF orientation applied; an unreadable mode refused by name."""
import io
import re

import numpy as np
import pytest
from PIL import Image

from vit_common.predict.preprocess import ImageError, probe_image, read_image, to_eight_bit
from vit_data.sources import load_source

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (6, 7), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, (6, 7), dtype=np.uint8)


def over_white(color, alpha):
    """Independent reference: round(c * a/255 + 255 * (1 - a/255)) in float64."""
    a = alpha.astype(np.float64)[..., None] / 255 if color.ndim == 3 else alpha.astype(np.float64) / 255
    return np.round(color * a + 255 * (1 - a)).astype(np.uint8)


def luma(rgb):
    """ITU-R 601-2, as Pillow's L (its fixed-point rounding: within 1 of this)."""
    return rgb.astype(np.float64) @ [0.299, 0.587, 0.114]


def saved(image: Image.Image, tmp_path, name: str, **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return path


def cases(tmp_path):
    """(name, file, expected 8-bit array, read as, tolerance): each tolerance > 0 is Pillow's own
    integer arithmetic (fixed-point YCbCr and luma), not ours."""
    bits = GRAY > 127
    pal = np.array([[255, 0, 0], [0, 128, 255], [10, 200, 30], [90, 90, 90]], np.uint8)
    idx = RNG.integers(0, 4, (6, 7)).astype(np.uint8)
    p = Image.fromarray(idx, "P")
    p.putpalette(pal.reshape(-1).tolist())
    pt = p.copy()
    pt.info["transparency"] = 2
    expected_pt = pal[idx].copy()
    expected_pt[idx == 2] = 255
    cmyk = RNG.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    expected_cmyk = np.round((255.0 - cmyk[..., :3]) * (255.0 - cmyk[..., 3:]) / 255).astype(np.uint8)
    ycc = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8).astype(np.float64)
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 128, ycc[..., 2] - 128
    expected_ycc = np.clip(np.round(np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)),
                           0, 255).astype(np.uint8)
    x16 = RNG.integers(0, 65536, (6, 7)).astype(np.uint16)
    expected16 = np.round(x16 * 255.0 / 65535).astype(np.uint8)
    x32 = RNG.integers(0, 2**31 - 1, (6, 7)).astype(np.int32)
    f = RNG.random((6, 7)).astype(np.float32)
    return [
        ("1", saved(Image.fromarray(bits), tmp_path, "1.png"), bits.astype(np.uint8) * 255, "L", 0),
        ("L", saved(Image.fromarray(GRAY), tmp_path, "l.png"), GRAY, "L", 0),
        ("L as RGB", saved(Image.fromarray(GRAY), tmp_path, "l2.png"), np.stack([GRAY] * 3, -1), "RGB", 0),
        ("LA", saved(Image.fromarray(np.stack([GRAY, ALPHA], -1), "LA"), tmp_path, "la.png"), over_white(GRAY, ALPHA),
         "L", 0),
        ("P", saved(p, tmp_path, "p.png"), pal[idx], "RGB", 0),
        ("P with transparency", saved(pt, tmp_path, "pt.png", transparency=2), expected_pt, "RGB", 0),
        ("RGB", saved(Image.fromarray(RGB), tmp_path, "rgb.png"), RGB, "RGB", 0),
        ("RGB as L", saved(Image.fromarray(RGB), tmp_path, "rgb2.png"), luma(RGB), "L", 1),
        ("RGBA", saved(Image.fromarray(np.dstack([RGB, ALPHA]), "RGBA"), tmp_path, "rgba.png"), over_white(RGB, ALPHA),
         "RGB", 0),
        ("CMYK", saved(Image.fromarray(cmyk, "CMYK"), tmp_path, "cmyk.tif"), expected_cmyk, "RGB", 0),
        ("YCbCr", saved(Image.fromarray(ycc.astype(np.uint8), "YCbCr"), tmp_path, "ycc.tif"), expected_ycc, "RGB", 1),
        ("I;16", saved(Image.fromarray(x16), tmp_path, "i16.png"), expected16, "L", 0),
        ("I;16B", saved(Image.frombytes("I;16B", (7, 6), x16.astype(">u2").tobytes()), tmp_path, "i16b.tif"),
         expected16, "L", 0),
        ("I", saved(Image.fromarray(x32, "I"), tmp_path, "i32.tif"), np.round(x32 * 255.0 / (2**31 - 1)).astype(np.uint8),
         "L", 0),
        ("F", saved(Image.fromarray(f, "F"), tmp_path, "f.tif"), np.round(f.astype(np.float64) * 255).astype(np.uint8),
         "L", 0),
    ]


def test_every_mode_reads_as_its_numpy_reference(tmp_path):
    seen = set()
    for name, path, expected, mode, tol in cases(tmp_path):
        with Image.open(path) as im:
            seen.add(im.mode)
        got = np.asarray(read_image(path, mode)).astype(np.int64)
        assert got.shape == np.shape(expected), name
        assert np.abs(got - np.asarray(expected, np.float64)).max() <= tol, name
    assert {"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I;16B", "I", "F"} <= seen


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    """The issue: a 16-bit PNG became all 255. Its 8-bit twin (x * 257) must read back exactly."""
    path = saved(Image.fromarray(GRAY.astype(np.uint16) * 257), tmp_path, "g16.png")
    np.testing.assert_array_equal(np.asarray(read_image(path, "L")), GRAY)
    assert np.asarray(Image.open(path).convert("L")).min() == 255  # what plain Pillow convert gave


def test_i16b_in_memory_and_declared_bits():
    x = RNG.integers(0, 4096, (3, 5)).astype(np.uint16)  # 12-bit samples in 16-bit words: scaled by 16 bits
    image = Image.frombytes("I;16B", (5, 3), x.astype(">u2").tobytes())
    np.testing.assert_array_equal(np.asarray(to_eight_bit(image, "L")), np.round(x * 255.0 / 65535).astype(np.uint8))


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display", as phones write for a portrait photo
    path = tmp_path / "phone.jpg"
    Image.fromarray(RGB).save(path, exif=exif, quality=95)
    with Image.open(path) as raw:
        stored = np.asarray(raw.convert("RGB"))
    np.testing.assert_array_equal(np.asarray(read_image(path, "RGB")), np.rot90(stored, k=-1))


def test_unknown_mode_and_broken_file_are_refused_by_name(tmp_path):
    lab = saved(Image.new("LAB", (4, 4)), tmp_path, "lab.tif")
    for fn in (probe_image, read_image):
        with pytest.raises(ImageError, match=re.escape(f"image {lab} has Pillow mode 'LAB'")):
            fn(lab)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(ImageError, match=re.escape(f"image {broken} is not readable")):
        probe_image(broken)


def test_folder_dataset_reads_through_the_same_reader(tmp_path):
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            Image.fromarray(GRAY.astype(np.uint16) * 257).save(tmp_path / split / c / "x.png")
    source = load_source(f"folder:{tmp_path}", "train")
    assert source.in_chans == 1
    np.testing.assert_array_equal(source[0]["image"][..., 0], GRAY)


def test_equivalent_images_predict_the_same(tmp_path, capsys):
    """A 16-bit PNG, an EXIF-rotated JPEG and a palette PNG with transparency give the top-1 and
    the probabilities (1e-3) of their 8-bit RGB equivalents."""
    pytest.importorskip("torch")
    from tests.checkpoint_factories import random_canonical
    from vit_common.cli import vit_predict
    from vit_common.config import get_config
    from vit_common.formats import save_npz

    cfg = get_config("vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                     num_classes=4)
    weights = random_canonical(cfg)
    weights["head/kernel"] = weights["head/kernel"] * 30  # spread the probabilities
    save_npz(ckpt := tmp_path / "m.npz", weights, cfg, meta={"class_names": list("wxyz")})
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (24, 20), dtype=np.uint8)
    pairs = []
    Image.fromarray(gray.astype(np.uint16) * 257).save(a := tmp_path / "g16.png")
    Image.fromarray(np.stack([gray] * 3, -1)).save(b := tmp_path / "g16_rgb.png")
    pairs.append((a, b))
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 counter-clockwise to display
    Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(a := tmp_path / "phone.jpg", exif=exif)
    with Image.open(a) as raw:
        Image.fromarray(np.rot90(np.asarray(raw.convert("RGB")), k=1)).save(b := tmp_path / "phone_rgb.png")
    pairs.append((a, b))
    pal = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    idx = rng.integers(0, 16, (24, 20)).astype(np.uint8)
    p = Image.fromarray(idx, "P")
    p.putpalette(pal.reshape(-1).tolist())
    p.save(a := tmp_path / "logo.png", transparency=3)
    rgb = pal[idx].copy()
    rgb[idx == 3] = 255
    Image.fromarray(rgb).save(b := tmp_path / "logo_rgb.png")
    pairs.append((a, b))
    for a, b in pairs:
        assert vit_predict.main(["--checkpoint", str(ckpt), "--framework", "torch", "--top-k", "4", str(a), str(b)]) == 0
        rows = _predictions(capsys.readouterr().out)
        assert rows[str(a)][0][0] == rows[str(b)][0][0], a.name  # top-1
        pa, pb = dict(rows[str(a)]), dict(rows[str(b)])
        assert sorted(pa) == sorted(pb) == list("wxyz")
        np.testing.assert_allclose([pa[k] for k in "wxyz"], [pb[k] for k in "wxyz"], atol=1e-3)


def _predictions(text):
    out, current = {}, None
    for line in text.splitlines():
        if m := re.fullmatch(r"  (\d\.\d{4})  (.+)", line):
            out[current].append((m.group(2), float(m.group(1))))
        elif line.endswith(":") and not line.startswith(" "):
            current = line[:-1]
            out[current] = []
    return {k: [(n, p) for n, p in v] for k, v in out.items()}
