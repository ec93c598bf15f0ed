"""Hugging Face transformers' DINOv3 (DINOv3ViTModel, written independently of timm and of these
twins) as the reference for the DINOv3 presets: random weights, its state dict renamed to timm's
Eva names by the library's reader (vit_common/formats/huggingface/dinov3.py), saved as a
timm .safetensors without a config and loaded through the normal checkpoint path into both
twins with the preset's name. Every output HF gives is compared: each block's output, the
attention maps, the normalised last hidden state and the pooled class token.

transformers has no EVA-02; parity_tests/reference_eva.py is its reference.
"""
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import save_file

import vit_jax
import vit_torch
from parity_tests.harness import FLOAT32_TOL, nhwc_to_nchw, random_images, rel_error, run_jax, run_torch
from vit_common.formats.huggingface import dinov3

# A tiny DINOv3: 4x4 patches of 8 px, width 32 over 2 heads, 4 registers; eager attention returns weights.
HF_TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               num_register_tokens=4, layer_norm_eps=1e-5, rope_theta=100.0, hidden_act="gelu",
               attn_implementation="eager")
OURS_TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, global_pool="token")
# case -> (HF config changes, our preset, our overrides): with and without q/v biases, GELU and SwiGLU MLP.
CASES = {
    "dinov3": (dict(query_bias=False, value_bias=False, intermediate_size=128), "vit_small_patch16_dinov3", {}),
    "dinov3_qkvb": (dict(intermediate_size=128), "vit_base_patch16_dinov3_qkvb", {}),
    "dinov3_swiglu_qkvb": (dict(intermediate_size=88, use_gated_mlp=True, hidden_act="silu"),
                           "vit_small_plus_patch16_dinov3_qkvb", dict(mlp_ratio=2.75)),
}


@pytest.fixture(scope="module", params=list(CASES))
def hf_case(request, tmp_path_factory):
    changes, preset, overrides = CASES[request.param]
    torch.manual_seed(0)
    model = transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(**{**HF_TINY, **changes})).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # HF starts biases at 0, norms and LayerScale at 1: noise makes each carry signal
        for _, p in sorted(model.named_parameters()):
            p.add_(0.1 * torch.randn(p.shape, generator=g))
        for layer in model.model.layer:  # sharper attention, so the rotary embedding shows in the outputs
            layer.attention.q_proj.weight.mul_(4)
            layer.attention.k_proj.weight.mul_(4)
    path = tmp_path_factory.mktemp(request.param) / "dinov3_timm.safetensors"
    save_file(dinov3.to_timm({k: v.numpy() for k, v in model.state_dict().items()}), path)
    images = random_images(vit_torch.get_config(preset, **OURS_TINY, **overrides), 2)
    with torch.no_grad():
        theirs = model(pixel_values=torch.from_numpy(nhwc_to_nchw(images)), output_hidden_states=True,
                       output_attentions=True)
    return request.param, preset, overrides, path, images, theirs


@pytest.mark.parametrize("twin", ["torch", "jax"])
def test_twins_match_transformers_dinov3(hf_case, twin, record):
    case, preset, overrides, path, images, theirs = hf_case
    create, run = (vit_torch.create_model, run_torch) if twin == "torch" else (vit_jax.create_model, run_jax)
    model = create(preset, checkpoint=path, **OURS_TINY, **overrides)
    ours = run(model, images)
    if twin == "torch":
        with torch.no_grad():
            last = model.forward_features(torch.from_numpy(nhwc_to_nchw(images))).numpy()
    else:
        last = np.asarray(model.forward_features(images))
    errors = {
        "hidden": float(np.max([rel_error(a, b) for a, b in zip(ours.hidden_states, theirs.hidden_states[1:],
                                                                  strict=True)])),
        "attention": float(np.max([rel_error(a, b) for a, b in zip(ours.attentions, theirs.attentions, strict=True)])),
        "last hidden": rel_error(last, theirs.last_hidden_state),
        "pooled": rel_error(ours.pooled, theirs.pooler_output),
    }
    record(f"HF {case}", f"HF -> {twin}", {k: v for k, v in errors.items() if k != "last hidden"})
    for kind, error in errors.items():
        assert error <= FLOAT32_TOL, (kind, error)  # NaN fails: NaN <= x is False


def test_rotary_convention_is_pinned(hf_case):
    """The comparison sees the rotary embedding: the twins with EVA-02's (even, odd) pairing, or
    with the patch coordinates shifted by half a patch, are far from HF."""
    case, preset, overrides, path, images, theirs = hf_case
    want = theirs.pooler_output.numpy()
    for wrong in (dict(rope_rotate_half=False), dict(rope_grid_offset=0.5)):
        model = vit_torch.create_model(preset, checkpoint=path, **OURS_TINY, **overrides, **wrong)
        got = run_torch(model, images, attention=False).pooled
        assert rel_error(got, want) > 100 * FLOAT32_TOL, (case, wrong)
