"""Hugging Face transformers as an independent reference that runs everywhere.

timm needs torchvision, which cannot be imported beside the CPU torch build, so the timm
comparisons skip on CI. transformers is pure Python: its ViT, DeiT and Swin are written
independently of timm and of these twins. Each test builds an HF model with random weights,
saves it as the Hub does (save_pretrained -> model.safetensors), loads that file into both
twins through the normal checkpoint path and compares every output HF gives.
"""
import numpy as np
import pytest
import torch
import transformers  # a dev dependency: missing, this file fails rather than skip as timm's tests do
from safetensors.torch import save_file

import vit_jax
import vit_torch
from vit_common import read_checkpoint
from parity_tests.harness import FLOAT32_TOL, nhwc_to_nchw, random_images, rel_error, run_jax, run_torch

# Set where HF's defaults differ from these twins, or might change: ViT's LayerNorm eps (HF 1e-12,
# ours 1e-6; Swin's is 1e-5 in HF, timm and here); attention through SDPA returns no attention
# weights (eager does). 'gelu' is exact erf GELU in HF too.
COMMON = dict(hidden_act="gelu", qkv_bias=True, image_size=32, attn_implementation="eager")
VIT = dict(COMMON, layer_norm_eps=1e-6, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
           intermediate_size=192, patch_size=8)
SWIN = dict(COMMON, layer_norm_eps=1e-5, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4)
# Width 48 is no official width, so the head count cannot be inferred from fused HF shapes;
# Swin weights do not hold the image size (the reader would infer 16 px, the smallest that fits).
LOAD = {"vit": dict(num_heads=3), "deit": dict(num_heads=3), "vit_pooler": dict(num_heads=3),
        "swin": dict(img_size=32)}


def _build(case: str, seed: int = 0):
    torch.manual_seed(seed)
    if case == "vit":
        model = transformers.ViTForImageClassification(transformers.ViTConfig(**VIT, num_labels=10))
    elif case == "vit_pooler":  # ViTModel's pooler is the original ViT's pre-logits (Dense + tanh)
        model = transformers.ViTModel(transformers.ViTConfig(**VIT), add_pooling_layer=True)
    elif case == "deit":
        model = transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(**VIT, num_labels=10))
    elif case == "swin":
        model = transformers.SwinForImageClassification(transformers.SwinConfig(**SWIN, num_labels=10))
    else:
        raise ValueError(case)
    _perturb_(model, seed)
    return model.eval()


def _perturb_(model: torch.nn.Module, seed: int) -> None:
    """HF initialises biases to 0 and norms to 1; noise makes every entry carry signal. Swin's
    relative position bias tables get large noise so the index convention shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            scale = 0.5 if name.endswith("relative_position_bias_table") else 0.1
            p.add_(scale * torch.randn(p.shape, generator=g))


def _hf_outputs(model, images_nhwc: np.ndarray):
    # Swin: HF's patch merging ends a stage, timm's starts the next; ask for each stage's output
    # before its merging, which is where timm's stages end.
    swin = isinstance(model.config, transformers.SwinConfig)
    extra = {"output_hidden_states_before_downsampling": True} if swin else {}
    with torch.no_grad():
        return model(pixel_values=torch.from_numpy(nhwc_to_nchw(images_nhwc)), output_hidden_states=True,
                     output_attentions=True, **extra)


@pytest.fixture(scope="module", params=["vit", "vit_pooler", "deit", "swin"])
def hf_case(request, tmp_path_factory):
    case = request.param
    model = _build(case)
    path = tmp_path_factory.mktemp(case)
    model.save_pretrained(path)  # the Hub's names, as any downloaded checkpoint has them
    images = random_images(read_checkpoint(path / "model.safetensors", **LOAD[case]).config, 2)
    return case, model, path / "model.safetensors", images, _hf_outputs(model, images)


def _worst(ours, theirs) -> float:
    """Worst rel_error over paired tensors; np.max propagates NaN (Python's max may skip it)."""
    return float(np.max([rel_error(a, b) for a, b in zip(ours, theirs, strict=True)]))


def _errors(case: str, ours, theirs, checkpoint) -> dict[str, float]:
    if case == "swin":
        # HF's reshaped_hidden_states: the embeddings, then every stage's output as (B, C, H, W);
        # its attentions: the last block's of each stage.
        stages = [h.numpy().transpose(0, 2, 3, 1) for h in theirs.reshaped_hidden_states[1:]]
        errors = {"stages": _worst(ours.stages, stages),
                  "attention": _worst([ours.attentions[i] for i in np.cumsum(SWIN["depths"]) - 1], theirs.attentions)}
    else:  # hidden_states: the embeddings, then every block's output
        errors = {"hidden": _worst(ours.hidden_states, theirs.hidden_states[1:]),
                  "attention": _worst(ours.attentions, theirs.attentions)}
    if case == "vit_pooler":
        errors["pooled"] = rel_error(ours.pooled, theirs.pooler_output)
        return errors
    logits = [(ours.logits, theirs.logits)]
    if case == "deit":
        # HF's logits are the mean of both heads, as ours in eval; the mean hides swapped heads,
        # so each head is also applied to our pooled class / distillation tokens.
        w = read_checkpoint(checkpoint, **LOAD[case]).weights
        logits += [(ours.pooled[:, 0] @ w["head/kernel"] + w["head/bias"], theirs.cls_logits),
                   (ours.pooled[:, 1] @ w["head_dist/kernel"] + w["head_dist/bias"], theirs.distillation_logits)]
    errors["logits"] = _worst(*zip(*logits))
    return errors


@pytest.mark.parametrize("twin", ["torch", "jax"])
def test_twins_match_transformers(hf_case, twin, record):
    case, _, checkpoint, images, theirs = hf_case
    create, run = (vit_torch.create_model, run_torch) if twin == "torch" else (vit_jax.create_model, run_jax)
    model = create(checkpoint=checkpoint, **LOAD[case])
    ours = run(model, images)
    errors = _errors(case, ours, theirs, checkpoint)
    record(f"HF {case}", f"HF -> {twin}", errors)
    assert ("logits" in errors) == (case != "vit_pooler")
    for kind, error in errors.items():
        assert error <= FLOAT32_TOL, (kind, error)  # NaN fails: NaN <= x is False


@pytest.mark.parametrize("twin", ["torch", "jax"])
def test_hf_hub_repository_in_the_cache(hf_case, twin, tmp_path, monkeypatch):
    """The save_pretrained folder as a Hub repository in the cache, loaded by name offline: what
    the weights cannot say (heads, Swin's image size) comes from transformers' own config.json,
    so no overrides are given, and the outputs are HF's."""
    from tests.hub_cache import cache_repo, use_hub

    case, _, checkpoint, images, theirs = hf_case
    folder = checkpoint.parent
    cache_repo(tmp_path / "hub", f"someone/hf-{case}",
               {f.name: f.read_bytes() for f in folder.iterdir() if f.name in ("config.json", "model.safetensors")})
    use_hub(monkeypatch, tmp_path / "hub")
    create, run = (vit_torch.create_model, run_torch) if twin == "torch" else (vit_jax.create_model, run_jax)
    model = create(f"hf-hub:someone/hf-{case}", pretrained=True)
    assert model.cfg == read_checkpoint(checkpoint, **LOAD[case]).config
    errors = _errors(case, run(model, images), theirs, checkpoint)
    for kind, error in errors.items():
        assert error <= FLOAT32_TOL, (kind, error)  # NaN fails: NaN <= x is False


def test_in_memory_names_read_as_the_hub_names(hf_case, tmp_path):
    """transformers 5 renamed its modules (`layers.N.attention.q_proj`...) but save_pretrained
    still writes the Hub's names; a raw `model.state_dict()` file must read the same."""
    case, model, checkpoint, _, _ = hf_case
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    assert any("q_proj" in k for k in state), "transformers no longer renames in memory: this test is moot"
    save_file(state, tmp_path / "state_dict.safetensors")
    hub = read_checkpoint(checkpoint, **LOAD[case])
    raw = read_checkpoint(tmp_path / "state_dict.safetensors", **LOAD[case])
    assert raw.config == hub.config and raw.weights.keys() == hub.weights.keys()
    for k, v in hub.weights.items():
        np.testing.assert_array_equal(raw.weights[k], v, err_msg=k)


def test_relative_position_convention_is_pinned(tmp_path):
    """The Swin comparison sees the relative position index convention: the tables read with the
    displacement negated (rows reversed) or its axes swapped give other logits."""
    from safetensors.numpy import load_file, save_file as save_numpy

    model = _build("swin")
    model.save_pretrained(tmp_path)
    images = random_images(read_checkpoint(tmp_path / "model.safetensors", **LOAD["swin"]).config, 2)
    want = _hf_outputs(model, images).logits.numpy()
    hub = load_file(tmp_path / "model.safetensors")
    for name, change in {"negated": lambda t: t[::-1, ::-1], "swapped": lambda t: t.transpose(1, 0, 2)}.items():
        wrong = dict(hub)
        for k, table in hub.items():
            if k.endswith("relative_position_bias_table"):
                side = round(np.sqrt(table.shape[0]))
                wrong[k] = np.ascontiguousarray(change(table.reshape(side, side, -1)).reshape(table.shape))
        save_numpy(wrong, path := tmp_path / f"{name}.safetensors")
        got = run_torch(vit_torch.create_model(checkpoint=path, **LOAD["swin"]), images, attention=False).logits
        assert rel_error(got, want) > 100 * FLOAT32_TOL, name
