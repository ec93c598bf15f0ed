"""vit_common.predict.preprocess and vit_common.predict.attention_maps (numpy, Pillow, matplotlib; no framework)."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vit_common.predict.attention_maps import attention_rollout, figure_size, last_layer_cls_attention, save_attention_png
from vit_common.predict.defaults import resolve_preprocess
from vit_common.predict.preprocess import (ImageError, describe, load_image, options_from_meta, preprocess,
                                           resize_and_crop)


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
    # 224 / 0.875 = 256: the shorter side goes to 256 before the 224 crop. Here it is 256 already,
    # so the crop is the image's central 224 x 224 window, pixel for pixel (coordinates mod 256).
    image = coordinate_image(512, 256)
    crop = resize_and_crop(image, 224)
    assert crop.size == (224, 224)
    np.testing.assert_array_equal(np.asarray(crop), np.asarray(image)[16:240, 144:368])
    # A resize: 56 / 0.875 = 64, so 200 x 100 -> 128 x 64, then the crop at (36, 4). Nearest
    # neighbour takes source pixel floor((i + 0.5) * 100 / 64) along each axis.
    crop = np.asarray(resize_and_crop(coordinate_image(200, 100), 56, interpolation="nearest"))
    source = lambda i: np.floor((i + 0.5) * 100 / 64).astype(np.uint8)
    np.testing.assert_array_equal(crop[..., 0], np.broadcast_to(source(36 + np.arange(56)), (56, 56)))
    np.testing.assert_array_equal(crop[..., 1], np.broadcast_to(source(4 + np.arange(56))[:, None], (56, 56)))


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
    meta = {"preprocess": {"crop_pct": 1.0, "mean": [0.5] * 3, "std": [0.5] * 3, "in_chans": 3, "colour": "x"}, "x": 1}
    assert options_from_meta(meta) == {"crop_pct": 1.0, "mean": [0.5] * 3, "std": [0.5] * 3}
    full = {"color_mode": "L", "resize": "center_square", "crop_pct": 1.0, "interpolation": "bilinear",
            "mean": [0.5], "std": [0.5]}
    assert options_from_meta({"preprocess": full}) == full
    assert options_from_meta({}) == {}


@pytest.mark.parametrize("size,mode", [((30, 24), "L"), ((24, 30), "RGB"), ((8, 8), "L"), ((5, 13), "RGB"),
                                       ((64, 64), "RGB")])
def test_center_square_is_exactly_what_training_evaluates(size, mode):
    from vit_data.augment import prepare_record

    rng = np.random.default_rng(1)
    channels = 1 if mode == "L" else 3
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
    ours = resize_and_crop(image, 8, resize="center_square", crop_pct=1.0, interpolation="bilinear")
    np.testing.assert_array_equal(np.asarray(ours).reshape(8, 8, channels), prepare_record(pixels, 8, channels))


def test_loader_records_what_it_evaluates_with():
    from vit_data.loader import _mean_std, eval_preprocess

    assert eval_preprocess(1) == {"color_mode": "L", "resize": "center_square", "crop_pct": 1.0,
                                  "interpolation": "bilinear", "mean": [0.5], "std": [0.5]}
    imagenet = eval_preprocess(3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert imagenet["color_mode"] == "RGB" and imagenet["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert _mean_std([0.5] * 3, [0.5] * 3, 3) == (None, None)  # [-1, 1], computed one way everywhere
    with pytest.raises(ValueError, match="3 values but the loader makes 1"):
        _mean_std([0.5] * 3, [0.5] * 3, 1)


def test_half_mean_and_std_is_the_minus_one_to_one_range_bit_for_bit():
    rng = np.random.default_rng(2)
    image = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    default = preprocess(image, 8, crop_pct=1.0)
    np.testing.assert_array_equal(preprocess(image, 8, crop_pct=1.0, mean=0.5, std=0.5), default)
    np.testing.assert_array_equal(preprocess(image, 8, crop_pct=1.0, mean=[0.5] * 3, std=[0.5] * 3), default)
    assert default.min() >= -1 and default.max() <= 1


def test_squash_keeps_the_whole_image():
    # A 64x32 image, left half black, right half white: squashed to 8x8, both halves stay.
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, 32:] = 255
    x = preprocess(Image.fromarray(pixels), 8, resize="squash", crop_pct=1.0, interpolation="nearest")
    assert np.all(x[0, :, :4] == -1) and np.all(x[0, :, 4:] == 1)
    with pytest.raises(ValueError, match="crop_pct must be 1"):
        preprocess(Image.fromarray(pixels), 8, resize="squash", crop_pct=0.9)
    with pytest.raises(ValueError, match="unknown resize rule"):
        preprocess(Image.fromarray(pixels), 8, resize="stretch")


def test_color_mode_converts_first_and_must_fit_the_model():
    red = Image.new("RGB", (16, 16), (255, 0, 0))
    x = preprocess(red, 8, color_mode="L", in_chans=1, crop_pct=1.0)
    np.testing.assert_allclose(x, 76 / 127.5 - 1, atol=1e-6)  # ITU-R 601-2 luma of pure red: 76
    with pytest.raises(ValueError, match="converts images to 'L'"):
        preprocess(red, 8, color_mode="L", in_chans=3)


def test_description_names_every_choice():
    text = describe({"color_mode": "L", "resize": "center_square", "crop_pct": 1.0, "interpolation": "bilinear",
                     "mean": [0.5], "std": [0.5]}, 8, 1)
    assert text == "grayscale (L); central square (crop_pct 1.0) resized to 8x8 (bilinear); pixels in [-1, 1] (mean = std = 0.5)"
    text = describe({"crop_pct": 0.9, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, 224, 3)
    assert "RGB; shorter side to 248 (bicubic), central 224x224 crop (crop_pct 0.9)" in text
    assert "mean [0.485, 0.456, 0.406]" in text


# Family defaults ----------------------------------------------------------------------------------
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
OPENAI_MEAN, OPENAI_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]  # timm's OPENAI_CLIP_*


def _cfg(**kw):
    from vit_common import get_config

    return get_config(kw.pop("name", "vit_tiny_patch16_224"), **kw)


def test_recorded_preprocessing_wins_and_old_records_stay_readable():
    old = {"crop_pct": 0.9, "interpolation": "bicubic", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    options, origin = resolve_preprocess({"preprocess": old, "source_layout": "canonical"}, _cfg())
    assert options == old and origin == "recorded in the checkpoint"
    # Missing "resize" means timm's shorter-side rule, as vit-predict always applied it.
    x = preprocess(coordinate_image(64, 32), 16, **options)
    assert x.shape == (1, 16, 16, 3)
    with pytest.raises(ValueError, match="must be a mapping"):
        resolve_preprocess({"preprocess": [1, 2]}, _cfg())


@pytest.mark.parametrize("meta,model,cfg_kw,expected", [
    ({"source_layout": "big_vision"}, None, {}, dict(resize="squash", crop_pct=1.0, interpolation="bilinear", mean=0.5)),
    ({"source_layout": "linen"}, None, {}, dict(resize="squash", mean=0.5)),
    ({"source_layout": "hf"}, None, {}, dict(resize="squash", mean=0.5)),
    ({"source_layout": "timm"}, None, {}, dict(resize="shorter_side", crop_pct=0.9, interpolation="bicubic", mean=0.5)),
    ({"source_layout": "timm"}, "vit_base_patch16_384", {"img_size": 384}, dict(crop_pct=1.0, mean=0.5)),
    ({"source_layout": "timm"}, "deit_small_patch16_224", {}, dict(crop_pct=0.9, mean=[0.485, 0.456, 0.406])),
    ({"source_layout": "timm"}, None, {"name": "deit_tiny_distilled_patch16_224"}, dict(mean=[0.485, 0.456, 0.406])),
    ({"source_layout": "timm", "architecture": "deit_small_patch16_224"}, None, {},  # a timm name's weights alone
     dict(mean=[0.485, 0.456, 0.406])),
    ({"source_layout": "canonical", "source": "train.py digits (jax)"}, None, {},
     dict(resize="center_square", crop_pct=1.0, interpolation="bilinear")),
    ({"source_layout": "torch_run"}, None, {}, dict(resize="center_square")),
    ({"source_layout": "swin_canonical"}, None, {}, dict(resize="shorter_side", crop_pct=0.875, mean=0.5)),
    ({"source_layout": "hf_swin"}, None, {}, dict(resize="squash", interpolation="bicubic", std=[0.229, 0.224, 0.225])),
    # The later families, as timm's pretrained_cfg of each name's default tag gives them:
    ({"source_layout": "timm"}, "deit3_small_patch16_224", {"name": "deit3_small_patch16_224"},
     dict(crop_pct=0.9, mean=IMAGENET_MEAN, interpolation="bicubic")),
    ({"source_layout": "timm"}, "deit3_base_patch16_384", {"name": "deit3_base_patch16_384"},
     dict(crop_pct=1.0, mean=IMAGENET_MEAN)),
    ({"source_layout": "timm", "architecture": "vit_small_patch14_dinov2"}, None, {"name": "vit_small_patch14_dinov2"},
     dict(resize="shorter_side", crop_pct=1.0, mean=IMAGENET_MEAN, std=IMAGENET_STD)),
    ({"source_layout": "timm"}, "vit_base_patch16_clip_224", {"name": "vit_base_patch16_clip_224"},
     dict(crop_pct=0.95, mean=OPENAI_MEAN)),
    ({"source_layout": "timm"}, "vit_base_patch32_clip_224", {"name": "vit_base_patch32_clip_224"}, dict(crop_pct=0.9)),
    ({"source_layout": "timm"}, "vit_large_patch14_clip_336", {"name": "vit_large_patch14_clip_336"},
     dict(resize="squash", crop_pct=1.0, mean=0.5, std=0.5)),
    ({"source_layout": "timm"}, "vit_base_patch16_clip_quickgelu_224", {"name": "vit_base_patch16_clip_quickgelu_224"},
     dict(crop_pct=1.0, mean=OPENAI_MEAN, std=OPENAI_STD)),
    ({"source_layout": "timm"}, "vit_base_patch16_siglip_384", {"name": "vit_base_patch16_siglip_384"},
     dict(crop_pct=0.9, mean=0.5, std=0.5)),
    ({"source_layout": "timm"}, "vit_so400m_patch14_siglip_gap_896", {"name": "vit_so400m_patch14_siglip_gap_896"},
     dict(crop_pct=1.0, mean=0.5)),
    ({"source_layout": "timm"}, "aimv2_large_patch14_224", {"name": "aimv2_large_patch14_224"},
     dict(crop_pct=1.0, mean=OPENAI_MEAN, interpolation="bicubic")),
    # No name: the options only a family uses say which (a state dict read by its shapes).
    ({"source_layout": "timm"}, None, {"name": "vit_small_patch14_reg4_dinov2"}, dict(crop_pct=1.0, mean=IMAGENET_MEAN)),
    ({"source_layout": "timm"}, None, {"name": "vit_base_patch16_clip_224"}, dict(crop_pct=1.0, mean=OPENAI_MEAN)),
    ({"source_layout": "timm"}, None, {"name": "aimv2_large_patch14_224"}, dict(mean=OPENAI_MEAN)),
    ({"source_layout": "timm"}, None, {"name": "deit3_small_patch16_384"}, dict(crop_pct=1.0, mean=IMAGENET_MEAN)),
    # A canonical .npz of a family Google never released gets that family's; SigLIP's is big_vision's.
    ({"source_layout": "canonical"}, None, {"name": "vit_base_patch16_clip_224"}, dict(mean=OPENAI_MEAN)),
    ({"source_layout": "big_vision"}, None, {"name": "vit_base_patch16_siglip_224"}, dict(resize="squash", mean=0.5)),
    # transformers folders of the later families: their image processors' transforms.
    ({"source_layout": "hf_dinov2"}, None, {"name": "vit_small_patch14_dinov2"}, dict(crop_pct=0.875, mean=IMAGENET_MEAN)),
    ({"source_layout": "hf_clip"}, None, {"name": "vit_base_patch16_clip_224"}, dict(crop_pct=1.0, mean=OPENAI_MEAN)),
    ({"source_layout": "hf_siglip"}, None, {"name": "vit_base_patch16_siglip_224"}, dict(mean=0.5, std=0.5)),
    ({"source_layout": "hf_aimv2"}, None, {"name": "aimv2_large_patch14_224"}, dict(crop_pct=1.0, mean=OPENAI_MEAN)),
])
def test_family_defaults(meta, model, cfg_kw, expected):
    options, origin = resolve_preprocess(meta, _cfg(**cfg_kw), model)
    assert origin.startswith("family default: ")
    assert {k: options[k] for k in expected} == expected


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
    assert load_image(tmp_path / "gray.png", "L").mode == "L"


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
    code = ("import sys, vit_common.predict.preprocess, vit_common.predict.defaults, vit_common.predict.attention_maps, "
            "vit_common.cli.vit_predict; "
            "assert not {'jax', 'torch'} & set(sys.modules), sorted({'jax', 'torch'} & set(sys.modules))")
    subprocess.run([sys.executable, "-c", code], check=True)
