"""vit_common.predict.preprocess and vit_common.predict.attention_maps (numpy, Pillow, matplotlib; no framework)."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vit_common.predict.attention_maps import attention_rollout, figure_size, last_layer_cls_attention, save_attention_png
from vit_common.predict.preprocess import ImageError, load_image, options_from_meta, preprocess, resize_and_crop


def coordinate_image(width: int, height: int) -> Image.Image:
    """Red = column, green = row: every pixel says where it came from."""
    y, x = np.mgrid[:height, :width]
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], -1).astype(np.uint8))


# Preprocessing ------------------------------------------------------------------------------------
def test_shapes_dtype_and_range():
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((50, 80), (90, 40))]
    images[0].paste((255, 255, 255), (40, 0, 80, 50))  # black | white halves: both extremes survive
    images[0].paste((0, 0, 0), (0, 0, 40, 50))
    x = preprocess(images, 32)
    assert x.shape == (2, 32, 32, 3) and x.dtype == np.float32
    assert x.min() >= -1 and x.max() <= 1
    assert np.isclose(x[0].min(), -1) and np.isclose(x[0].max(), 1)


def test_center_crop_keeps_the_middle():
    # 64 px at crop_pct 0.5 and img_size 32: no resize, the crop is columns/rows 16..47.
    x = preprocess(coordinate_image(64, 64), 32, crop_pct=0.5, interpolation="nearest")
    to_pixels = lambda v: np.rint((v + 1) * 127.5)
    assert to_pixels(x[0, 0, 0, :2]).tolist() == [16, 16]
    assert to_pixels(x[0, -1, -1, :2]).tolist() == [47, 47]


@pytest.mark.parametrize("size", [(128, 64), (64, 128)])
def test_shorter_side_resized_then_center_cropped(size):
    # A white central square flanked by red: after the crop only white remains.
    w, h = size
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[..., 0] = 255
    s = min(w, h)
    pixels[(h - s) // 2:(h + s) // 2, (w - s) // 2:(w + s) // 2] = 255
    x = preprocess(Image.fromarray(pixels), 32, crop_pct=1.0, interpolation="nearest")
    assert np.all(x == 1.0)


def test_resize_rule_matches_timm():
    # 224 / 0.875 = 256: the shorter side goes to 256 before the 224 crop.
    crop = resize_and_crop(coordinate_image(512, 256), 224)
    assert crop.size == (224, 224)


def test_grayscale_and_mean_std():
    gray = Image.new("RGB", (40, 40), (128, 128, 128))
    x = preprocess(gray, 16, in_chans=1)
    assert x.shape == (1, 16, 16, 1)
    np.testing.assert_allclose(x, 128 / 127.5 - 1, atol=1e-6)
    x = preprocess(gray, 16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    np.testing.assert_allclose(x, (128 / 255 - 0.5) / 0.25, atol=1e-5)
    with pytest.raises(ValueError, match="both mean and std"):
        preprocess(gray, 16, mean=0.5)
    with pytest.raises(ValueError, match="3 values but the model takes 1"):
        preprocess(gray, 16, mean=(0.5,) * 3, std=(0.2,) * 3, in_chans=1)


def test_options_from_meta_passes_only_preprocessing_keys():
    meta = {"preprocess": {"crop_pct": 1.0, "mean": [0.5] * 3, "std": [0.5] * 3, "resize": "nope"}, "x": 1}
    assert options_from_meta(meta) == {"crop_pct": 1.0, "mean": [0.5] * 3, "std": [0.5] * 3}
    assert options_from_meta({}) == {}


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(ImageError, match="missing.png does not exist"):
        load_image(tmp_path / "missing.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="junk.png is not readable"):
        load_image(junk)
    Image.new("L", (5, 7)).save(tmp_path / "gray.png")
    loaded = load_image(tmp_path / "gray.png")
    assert loaded.mode == "RGB" and loaded.size == (5, 7)


# Attention maps ---------------------------------------------------------------------------------
def looking_at(token: int, batch=2, heads=3, tokens=5) -> np.ndarray:
    """Every query of every head attends only to `token`."""
    a = np.zeros((batch, heads, tokens, tokens), np.float32)
    a[..., token] = 1
    return a


def test_rollout_of_uniform_attention_is_uniform():
    t = 1 + 4
    uniform = np.full((1, 2, t, t), 1 / t, np.float32)
    rollout = attention_rollout([uniform] * 3, 1, 2)
    assert rollout.shape == (1, 2, 2)
    np.testing.assert_allclose(rollout, rollout.mean(), rtol=1e-6)
    assert rollout.min() > 0


def test_rollout_of_identity_without_class_token_is_uniform():
    identity = np.broadcast_to(np.eye(6, dtype=np.float32), (2, 2, 6, 6))
    np.testing.assert_allclose(attention_rollout([identity] * 4, 0, (2, 3)), 1 / 6, rtol=1e-6)


def test_rollout_concentrates_on_the_attended_patch():
    # One patch (token 3 = grid cell (1, 0) after the class token) draws all attention. With the
    # residual, layer 1 gives the class token 1/2 on it, layer 2 gives 1/2 + 1/2 * 1/2 = 3/4.
    for layers, share in ((1, 0.5), (2, 0.75)):
        rollout = attention_rollout([looking_at(3)] * layers, 1, 2)
        expected = np.zeros((2, 2, 2), np.float32)
        expected[:, 1, 0] = share
        np.testing.assert_allclose(rollout, expected, atol=1e-7)


def test_rollout_reads_past_two_prefix_tokens():
    rollout = attention_rollout([looking_at(5, tokens=6)] * 2, 2, 2)  # class + distillation token
    assert np.unravel_index(rollout[0].argmax(), (2, 2)) == (1, 1)


def test_last_layer_maps_pick_the_class_token_row():
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, 7, 7)).astype(np.float32)
    maps = last_layer_cls_attention([np.zeros_like(a), a], 1, (2, 3))
    assert maps.shape == (2, 3, 2, 3)
    np.testing.assert_array_equal(maps, a[:, :, 0, 1:].reshape(2, 3, 2, 3))
    no_cls = last_layer_cls_attention([a[..., 1:, 1:]], 0, (2, 3))
    np.testing.assert_allclose(no_cls, a[:, :, 1:, 1:].mean(axis=2).reshape(2, 3, 2, 3), rtol=1e-6)


def test_grid_that_does_not_fit_is_an_error():
    with pytest.raises(ValueError, match="does not fit 1 prefix tokens"):
        attention_rollout([looking_at(1)], 1, 3)


@pytest.mark.parametrize("heads,channels", [(3, 3), (8, 1)])
def test_png_written_atomically_and_readable(tmp_path, heads, channels):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 48, channels), dtype=np.uint8)
    path = tmp_path / "maps.png"
    save_attention_png(image, rng.random((3, 3)), rng.random((heads, 3, 3)), path, title="a test")
    with Image.open(path) as png:
        assert png.format == "PNG"
        width, height = png.size
    assert figure_size(heads)[0] >= 650
    assert abs(width - figure_size(heads)[0]) <= 1 and abs(height - figure_size(heads)[1]) <= 1
    assert [p.name for p in tmp_path.iterdir()] == ["maps.png"]  # no temporary file left behind


def test_common_modules_import_no_framework():
    code = ("import sys, vit_common.predict.preprocess, vit_common.predict.attention_maps, vit_common.cli.vit_predict; "
            "assert not {'jax', 'torch'} & set(sys.modules), sorted({'jax', 'torch'} & set(sys.modules))")
    subprocess.run([sys.executable, "-c", code], check=True)
