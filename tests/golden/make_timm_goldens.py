"""Golden files from timm, so CI (where timm cannot import: it needs torchvision) still checks our
names and numbers against timm's own output. Regenerate them in two steps, from the repo root:

    python tests/golden/make_timm_goldens.py inputs          # the project's venv: our source files
    TIMM_PY=/work/timmvenv/bin/python                         # a venv with timm (and torchvision)
    $TIMM_PY tests/golden/make_timm_goldens.py timm           # timm reads them, writes its answers

A venv for the second step, beside the project's (timm's torchvision does not import next to the
project's CPU torch): `python3 -m venv /work/timmvenv && /work/timmvenv/bin/pip install torch
torchvision timm`. The files were made with timm 1.0.31, torch 2.14.1.

What is stored (tests/golden/, ~100 KB):
- timm_models.json: per model case (timm name and keyword arguments), timm's state-dict names and
  shapes, which of them are parameters, and its logits on a fixed input with every parameter
  set by `fill` (a function of the parameter's name, so our model, with the same names, gets the
  same values without storing them).
- timm_inputs.npz (step 1): tiny checkpoints in Google's layouts (old opt/target, big_vision
  unscanned and scanned) and Microsoft's Swin layout, made from our canonical weights.
- timm_outputs.npz (step 2): the state dicts timm's own loaders make of them (`_load_weights`,
  swin's `checkpoint_filter_fn`).
The second step imports only numpy, torch and timm, never the project.
"""
import json
import sys
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

VIT_SMALL = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)
SWIN_TINY = dict(img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 4], num_classes=10)
# The cases of tests/test_torch_model.py and tests/test_swin_torch.py's test_state_dict_loads_strictly_into_timm.
MODEL_CASES = {
    "vit": ("vit_base_patch16_224", VIT_SMALL),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", VIT_SMALL),
    "vit_map_no_cls": ("vit_base_patch16_224", dict(VIT_SMALL, global_pool="map", class_token=False)),
    "vit_avg": ("vit_base_patch16_224", dict(VIT_SMALL, global_pool="avg")),
    "swin": ("swin_tiny_patch4_window7_224", SWIN_TINY),
    "swin_deep": ("swin_tiny_patch4_window7_224", dict(SWIN_TINY, depths=[2, 2, 2], num_heads=[2, 2, 4])),
    "swin_no_qkv_bias": ("swin_tiny_patch4_window7_224", dict(SWIN_TINY, qkv_bias=False)),
    "swin_base_window8": ("swin_base_patch4_window12_384", dict(SWIN_TINY, window_size=8, img_size=64)),
}
# Tiny ViT for the Google-layout files timm's _load_weights reads (no_embed_class: big_vision's).
GOOGLE_VIT = dict(img_size=8, patch_size=4, embed_dim=12, depth=2, num_heads=3, num_classes=10)
GOOGLE_CASES = {"pre_linen_opt_target": {}, "big_vision_unscanned": dict(no_embed_class=True),
                "big_vision_scanned": dict(no_embed_class=True)}
SWIN_FILTER = dict(SWIN_TINY, embed_dim=8, depths=[2, 2, 2], num_heads=[1, 2, 2])  # 3 stages: patch merging moves


def fill(name: str, shape) -> np.ndarray:
    """A parameter's value from its name alone: N(0, 0.2^2), seeded by the name's CRC-32."""
    return (0.2 * np.random.default_rng(zlib.crc32(name.encode())).standard_normal(tuple(shape))).astype(np.float32)


def image_batch(kw: dict) -> np.ndarray:
    """The fixed input, NCHW in [-1, 1]."""
    size, chans = kw["img_size"], kw.get("in_chans", 3)
    return np.random.default_rng(0).uniform(-1, 1, (2, chans, size, size)).astype(np.float32)


def make_inputs() -> None:
    """Step 1, the project's venv: our writers' files for timm to read."""
    sys.path.insert(0, str(HERE.parents[1]))
    from tests.checkpoint_factories import as_big_vision, as_microsoft_swin, as_opt_target, random_canonical
    from vit_common import get_config

    builders = {"pre_linen_opt_target": as_opt_target,
                "big_vision_unscanned": lambda w: as_big_vision(w, scanned=False),
                "big_vision_scanned": as_big_vision}
    arrays = {}
    for case, extra in GOOGLE_CASES.items():
        w = random_canonical(get_config("vit_base_patch16_224", **GOOGLE_VIT, **extra), seed=1)
        arrays.update({f"{case}|{k}": v for k, v in builders[case](w).items()})
    cfg = get_config("swin_tiny_patch4_window7_224", **SWIN_FILTER)
    ms = as_microsoft_swin(random_canonical(cfg, seed=2), cfg)
    arrays.update({f"swin_ms|{k}": np.asarray(v) for k, v in ms.items()})
    np.savez_compressed(HERE / "timm_inputs.npz", **arrays)


def make_timm_answers() -> None:
    """Step 2, a venv with timm: timm's models and loaders on the inputs."""
    import tempfile

    import timm
    import torch
    from timm.models.swin_transformer import checkpoint_filter_fn
    from timm.models.vision_transformer import _load_weights

    models = {}
    for case, (name, kw) in MODEL_CASES.items():
        model = timm.create_model(name, pretrained=False, **kw).eval()
        params = dict(model.named_parameters())
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(torch.from_numpy(fill(k, p.shape)))
            logits = model(torch.from_numpy(image_batch(kw))).numpy()
        models[case] = dict(model=name, kwargs=kw, state_dict={k: list(v.shape) for k, v in model.state_dict().items()},
                            parameters=sorted(params), logits=logits.tolist())
    (HERE / "timm_models.json").write_text(json.dumps(dict(timm=timm.__version__, torch=torch.__version__,
                                                           cases=models), indent=1) + "\n")
    with np.load(HERE / "timm_inputs.npz") as f:
        inputs = {k: f[k] for k in f.files}
    out = {}
    for case, extra in GOOGLE_CASES.items():
        model = timm.create_model("vit_base_patch16_224", pretrained=False, **GOOGLE_VIT, **extra)
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "google.npz"
            np.savez(src, **{k.split("|", 1)[1]: v for k, v in inputs.items() if k.startswith(case + "|")})
            _load_weights(model, str(src))
        out.update({f"{case}|{k}": v.numpy() for k, v in model.state_dict().items()})
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, **SWIN_FILTER)
    ms = {k.split("|", 1)[1]: torch.from_numpy(v) for k, v in inputs.items() if k.startswith("swin_ms|")}
    out.update({f"swin_ms|{k}": v.numpy() for k, v in checkpoint_filter_fn({"model": ms}, model).items()})
    np.savez_compressed(HERE / "timm_outputs.npz", **out)


if __name__ == "__main__":
    {"inputs": make_inputs, "timm": make_timm_answers}[sys.argv[1]]()
