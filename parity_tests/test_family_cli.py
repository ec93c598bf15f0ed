"""Each later family through the command lines: a timm state dict with no config -> vit-convert
(architecture read off the shapes, the family's preprocessing recorded) -> vit-predict (both
twins on one row per attention-map reader), whose saved features match the float64 reference on
the same pixels."""
import numpy as np
import pytest
from PIL import Image

from parity_tests import reference
from parity_tests.harness import FLOAT32_TOL, rel_error
from vit_common import TIMM, get_config, read_checkpoint, save_safetensors
from vit_common.cli.vit_convert import main as vit_convert
from vit_common.cli.vit_predict import main as vit_predict
from vit_common.predict.preprocess import load_image, options_from_meta, preprocess
from tests.checkpoint_factories import random_canonical

IMAGENET_MEAN = [0.485, 0.456, 0.406]
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
# preset -> (the activation vit-convert is told, where no weight can say it; the mean recorded;
#            what the attention maps read)
FAMILIES = {
    "deit3_small_patch16_224": (None, IMAGENET_MEAN, "class token"),
    "vit_small_patch14_dinov2": (None, IMAGENET_MEAN, "class token"),
    "vit_small_patch14_reg4_dinov2": (None, IMAGENET_MEAN, "class token"),
    "vit_base_patch16_clip_224": (None, OPENAI_MEAN, "class token"),
    "vit_base_patch16_clip_quickgelu_224": ("quick_gelu", OPENAI_MEAN, "class token"),
    "vit_base_patch16_siglip_224": (None, 0.5, "MAP probe"),
    "vit_base_patch32_siglip_256": ("gelu_tanh", 0.5, "MAP probe"),  # SigLIP 2
    "vit_base_patch16_siglip_gap_224": (None, 0.5, "mean of all tokens"),
    "aimv2_large_patch14_224": (None, OPENAI_MEAN, "mean of all tokens"),
}

# vit-predict in the JAX twin on one row per attention-map reader (class token with a classifier,
# MAP probe, mean of the tokens, both feature models): the other rows differ from these in what
# vit-convert reads or is told, which the PyTorch run checks, and their options' JAX parity is
# the grid's (test_forward_parity.py).
JAX_ROWS = ("deit3_small_patch16_224", "vit_base_patch16_siglip_224", "aimv2_large_patch14_224")


def tiny(name: str):
    """48 wide, 2 blocks, a 4x4 patch grid; a 10-class head where the preset has one."""
    preset = get_config(name)
    return get_config(name, img_size=4 * preset.patch_size, embed_dim=48, depth=2, num_heads=3,
                      num_classes=preset.num_classes and 10)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    y, x = np.mgrid[:50, :70]
    path = tmp_path_factory.mktemp("img") / "ramp.png"
    Image.fromarray(np.stack([x * 3, y * 5, (x + y) % 32 * 8], -1).astype(np.uint8)).save(path)
    return path


def reference_features(weights, cfg, pixels):
    """The pooled features of the float64 reference: its logits through an identity head."""
    c = cfg.embed_dim
    identity = {k: v for k, v in weights.items() if not k.startswith("head/")}
    identity.update({"head/kernel": np.eye(c), "head/bias": np.zeros(c)})
    return reference.forward(identity, cfg.replace(num_classes=c), pixels)[0]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_convert_then_predict_in_both_twins(name, image, tmp_path, capsys):
    act, mean, query = FAMILIES[name]
    cfg = tiny(name)
    weights = random_canonical(cfg)
    save_safetensors(tmp_path / "timm.safetensors", TIMM.export(weights, cfg))  # timm's names, no config
    argv = [str(tmp_path / "timm.safetensors"), str(tmp_path / "model.npz"), "--num-heads", "3"]
    assert vit_convert(argv + (["--act-layer", act] if act else [])) == 0
    printed = capsys.readouterr().out
    ckpt = read_checkpoint(tmp_path / "model.npz")
    assert ckpt.config.mlp_dim == cfg.mlp_dim
    assert ckpt.config == cfg.replace(mlp_ratio=ckpt.config.mlp_ratio)  # every option read back, or told
    assert f"act_layer={cfg.act_layer}" in printed
    assert ckpt.meta["preprocess"]["mean"] == mean  # the family's, recorded

    pixels = preprocess([load_image(image)], cfg.img_size, **options_from_meta(ckpt.meta))
    want = reference_features(weights, cfg, pixels)
    for framework in ("torch", "jax") if name in JAX_ROWS else ("torch",):
        features, png = tmp_path / f"{framework}.npy", tmp_path / f"{framework}-maps" / f"{image.stem}.png"
        assert vit_predict(["--checkpoint", str(tmp_path / "model.npz"), "--framework", framework,
                            "--save-features", str(features), "--attention-map", str(png.parent), str(image)]) == 0
        printed = capsys.readouterr().out
        assert rel_error(np.load(features), want) <= FLOAT32_TOL, framework
        assert png.is_file() and (query == "mean of all tokens") == ("pools by averaging its patch tokens" in printed)
        assert ("printing each image's embedding" in printed) == (not cfg.num_classes)  # or classes
