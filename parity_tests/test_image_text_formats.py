"""The image towers of big_vision's image-text models (SigLIP, LiT) and of OpenAI CLIP / OpenCLIP,
in their released files (tests/checkpoint_factories.py builds them with the released names, shapes
and dtypes: neither big_vision nor open_clip is importable here), through vit-convert into both
twins: the same outputs as transformers' SiglipVisionModel / CLIPVisionModelWithProjection holding
the same weights, within the float32 contract; written back (--to big_vision_img / openclip) with
the released names, read again bit for bit."""
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers

import vit_jax
import vit_torch
from parity_tests import reference
from parity_tests.harness import FLOAT32_TOL, nhwc_to_nchw, random_images, rel_error, run_jax, run_torch
from parity_tests.hf_families import hf_model, perturb_, to_timm
from tests.checkpoint_factories import as_big_vision, as_big_vision_image_text, as_openai_clip, random_canonical
from vit_common import TIMM, canonical_shapes, get_config, read_checkpoint, save_npz
from vit_common.cli.vit_convert import main as convert
from vit_common.formats.containers import read_npz, read_state_dict
from vit_common.formats.google import BIG_VISION_IMG, big_vision_image_tower
from vit_common.weights.infer import config_from_summary, summarize_canonical

TINY = dict(hidden=48, layers=2, heads=3, patch=8, img=32)
OURS = dict(embed_dim=48, depth=2, num_heads=3, patch_size=8, img_size=32)


def _round(model: torch.nn.Module, dtype) -> torch.nn.Module:
    """Every weight rounded to `dtype`, so a file holding them in it holds exactly the model's."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).float())
    return model


def _twins(path):
    return [vit_torch.create_model(checkpoint=path), vit_jax.create_model(checkpoint=path)]


def _run(model, images):
    return (run_torch if isinstance(model, torch.nn.Module) else run_jax)(model, images)


def _name(model) -> str:
    return "torch" if isinstance(model, torch.nn.Module) else "jax"


def _same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


# big_vision: SigLIP ------------------------------------------------------------------------------
@pytest.mark.parametrize("scanned", [False, True], ids=["blocks", "scanned"])
def test_siglip_image_tower_matches_transformers_and_writes_back(tmp_path, capsys, record, scanned):
    torch.manual_seed(0)
    hf = _round(perturb_(hf_model("siglip", **TINY, mlp=192), seed=0), torch.bfloat16)  # gelu_pytorch_tanh
    cfg = get_config("vit_base_patch16_siglip_224", **OURS, act_layer="gelu_tanh")
    canonical = TIMM.import_(to_timm("siglip", hf.state_dict()), cfg)
    released = as_big_vision_image_text(canonical, scanned=scanned, dtype=ml_dtypes.bfloat16)
    np.savez(src := tmp_path / "siglip.npz", **released)
    assert convert([str(src), str(dst := tmp_path / "ours.npz")]) == 0
    out = capsys.readouterr().out
    assert "gelu_tanh" in out and "not read: " in out and "params/txt/" in out and "bfloat16" in out

    images = random_images(cfg, 2)
    with torch.no_grad():
        want = hf(pixel_values=torch.from_numpy(nhwc_to_nchw(images))).pooler_output.numpy()
    for model in _twins(dst):
        assert model.cfg == cfg.replace(num_classes=0)  # read without flags: SigLIP's tower, tanh GELU
        error = rel_error(_run(model, images).pooled, want)
        record("big_vision SigLIP tower (bf16 file)", f"HF SiglipVisionModel -> {_name(model)}", {"pooled": error})
        assert error <= FLOAT32_TOL

    assert convert([str(dst), str(back := tmp_path / "back.npz"), "--to", "big_vision_img"]) == 0
    written, _, _ = read_npz(back)
    image = {k: v for k, v in as_big_vision_image_text(canonical, scanned=False).items() if k.startswith("params/img/")}
    assert {k: (v.shape, v.dtype) for k, v in written.items()} == {k: (v.shape, v.dtype) for k, v in image.items()}
    _same_weights(read_checkpoint(back).weights, read_checkpoint(dst).weights)


def test_lit_image_tower_with_class_token_and_projection(tmp_path, capsys):
    """LiT's image tower: a class token (big_vision adds the position table before it) and a head
    projecting to the joint embedding; scanned blocks."""
    cfg = get_config("vit_base_patch16_224", **OURS, no_embed_class=True, num_classes=24, act_layer="gelu_tanh")
    w = random_canonical(cfg)
    np.savez(src := tmp_path / "lit.npz", **as_big_vision_image_text(w, scanned=True))
    assert convert([str(src), str(dst := tmp_path / "ours.safetensors")]) == 0
    images = random_images(cfg, 2)
    want, _, _ = reference.forward(w, cfg, images)
    for model in _twins(dst):
        assert model.cfg == cfg
        assert rel_error(_run(model, images).logits, want) <= FLOAT32_TOL
    assert convert([str(dst), str(back := tmp_path / "back.npz"), "--to", "big_vision_img"]) == 0
    _same_weights(read_checkpoint(back).weights, w)


def test_siglip_so400m_shapes_give_the_preset_with_tanh_gelu():
    """A So400m/14 image tower's released shapes (no arrays: broadcast zeros) read as timm's
    vit_so400m_patch14_siglip_224, with big_vision's tanh GELU."""
    preset = get_config("vit_so400m_patch14_siglip_224")
    zeros = {k: np.broadcast_to(np.float32(0), s) for k, s in canonical_shapes(preset).items()}
    raw = {f"params/img/{k[len('params/'):]}": v for k, v in as_big_vision(zeros, scanned=False).items()}
    raw["params/t"] = np.zeros(1, np.float32)
    canonical = big_vision_image_tower(raw)
    assert canonical.keys() == zeros.keys()
    got = config_from_summary(summarize_canonical(canonical), **BIG_VISION_IMG.facts(canonical, set(raw)).fields)
    assert got.mlp_dim == preset.mlp_dim == 4304
    assert got.replace(mlp_ratio=preset.mlp_ratio) == preset.replace(act_layer="gelu_tanh")


def test_flexivit_reads_at_its_base_patch_and_resizes(tmp_path, capsys):
    """FlexiViT (big_vision proj/flexi): a classifier whose patch embedding is stored at 32 px with
    a 7 x 7 position grid; --patch-size / --img-size PI-resize and resample them."""
    cfg = get_config("vit_base_patch32_224", embed_dim=48, depth=1, num_heads=3, num_classes=5, no_embed_class=True,
                     act_layer="gelu_tanh")
    np.savez(src := tmp_path / "flexivit.npz", **as_big_vision(random_canonical(cfg), scanned=False))
    assert convert([str(src), str(dst := tmp_path / "b16.npz"), "--patch-size", "16", "--posemb-method", "bilinear"]) == 0
    out = capsys.readouterr().out
    assert "patch" in out and "position" in out, out
    got = read_checkpoint(dst).config  # (the classifier layout's activation: issue 16's Google rule)
    assert got.replace(act_layer=cfg.act_layer) == cfg.replace(patch_size=16)


def test_big_vision_refuses_what_it_cannot_hold(tmp_path, capsys):
    cfg = get_config("vit_base_patch16_clip_224", **OURS, num_classes=0)
    save_npz(src := tmp_path / "clip.npz", random_canonical(cfg), cfg)
    assert convert([str(src), str(tmp_path / "bv.npz"), "--to", "big_vision_img"]) == 2
    err = capsys.readouterr().err
    assert "big_vision's ViT cannot hold a position-table entry for the class token" in err
    assert "a norm before the blocks (pre_norm, CLIP); norm_eps=1e-05 (Flax: 1e-6)" in err
    assert convert([str(src), str(tmp_path / "bv.pt"), "--to", "big_vision_img"]) == 2
    assert "writes .npz" in capsys.readouterr().err


def test_naflex_towers_are_refused_by_name(tmp_path, capsys):
    np.savez(src := tmp_path / "naflex.npz", **{"params/img/embedding/kernel": np.zeros((768, 48), np.float32),
                                                "params/img/pos_embedding": np.zeros((16, 16, 48), np.float32)})
    assert convert([str(src), str(tmp_path / "out.npz")]) == 2
    assert "NaFlex" in capsys.readouterr().err


# OpenAI CLIP / OpenCLIP --------------------------------------------------------------------------
def _clip(act: str, dtype) -> tuple[torch.nn.Module, dict]:
    """transformers' CLIP image tower with its projection, and its weights in timm's names."""
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                                           intermediate_size=192, patch_size=8, image_size=32, projection_dim=24,
                                           hidden_act=act, attn_implementation="eager")
    hf = _round(perturb_(transformers.CLIPVisionModelWithProjection(config), seed=0), dtype)
    sd = hf.state_dict()
    sd = {k[len("vision_model."):]: v for k, v in sd.items() if k.startswith("vision_model.")}
    timm = to_timm("clip", sd)
    timm["head.weight"] = hf.visual_projection.weight.detach().numpy().copy()
    timm["head.bias"] = np.zeros(24, np.float32)
    return hf, timm


def _clip_outputs(hf, cfg):
    images = random_images(cfg, 2)
    with torch.no_grad():
        return images, hf(pixel_values=torch.from_numpy(nhwc_to_nchw(images))).image_embeds.numpy()


@pytest.mark.parametrize("source", ["openai", "openclip"])
def test_clip_image_tower_matches_transformers_and_writes_back(tmp_path, capsys, record, source):
    openai = source == "openai"
    act = "quick_gelu" if openai else "gelu"
    hf, timm = _clip(act, torch.float16 if openai else torch.float32)
    released = as_openai_clip(timm, openai=openai)
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in released.items()}, src := tmp_path / "clip.pt")
    dst = tmp_path / "ours.safetensors"
    heads = ["--num-heads", "3"]  # (width 48 is no released width; the released ones have 64-wide heads)
    if not openai:  # OpenCLIP's files do not say their activation: the error names the flags
        assert convert([str(src), str(dst)] + heads) == 2
        err = capsys.readouterr().err
        assert "--act-layer quick_gelu" in err and "--model" in err
    assert convert([str(src), str(dst)] + heads + ([] if openai else ["--act-layer", "gelu"])) == 0
    out = capsys.readouterr().out
    assert "not read: " in out and ("quick_gelu" in out) == openai
    cfg = get_config(f"vit_base_patch16_clip_{'quickgelu_' if openai else ''}224", **OURS, num_classes=24)
    images, want = _clip_outputs(hf, cfg)
    for model in _twins(dst):
        assert model.cfg == cfg
        error = rel_error(_run(model, images).logits, want)
        record(f"{source} CLIP tower", f"HF CLIPVisionModelWithProjection -> {_name(model)}", {"logits": error})
        assert error <= FLOAT32_TOL

    assert convert([str(dst), str(back := tmp_path / "back.pt"), "--to", "openclip"]) == 0
    written, _, _ = read_state_dict(back)
    visual = {k: v for k, v in released.items() if k.startswith("visual.")}
    assert {k: v.shape for k, v in written.items()} == {k: v.shape for k, v in visual.items()}
    assert {v.dtype for v in written.values()} == {np.dtype(np.float32)}
    _same_weights(read_checkpoint(back).weights, read_checkpoint(dst).weights)


def test_openclip_with_layer_scale_round_trips(tmp_path, capsys):
    """OpenCLIP's LayerScale (ls_1 / ls_2 .gamma), read without a preset, written back bit for bit."""
    cfg = get_config("vit_base_patch16_clip_224", **OURS, num_classes=24, init_values=1e-5)
    w = random_canonical(cfg)
    w["head/bias"] = np.zeros_like(w["head/bias"])
    released = as_openai_clip(TIMM.export(w, cfg), openai=False)
    assert "visual.transformer.resblocks.1.ls_2.gamma" in released
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in released.items()}, src := tmp_path / "ls.pt")
    assert convert([str(src), str(dst := tmp_path / "back.safetensors"), "--act-layer", "gelu", "--num-heads", "3",
                    "--to", "openclip"]) == 0
    ckpt = read_checkpoint(dst)
    assert ckpt.config == cfg
    _same_weights(ckpt.weights, w)


def test_openclip_refuses_other_towers_and_heads_with_bias(tmp_path, capsys):
    _, timm = _clip("gelu", torch.float32)
    released = as_openai_clip(timm, openai=False)
    released["visual.attn_pool.query"] = np.zeros((4, 48), np.float32)
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in released.items()}, src := tmp_path / "coca.pt")
    assert convert([str(src), str(tmp_path / "out.npz"), "--act-layer", "gelu", "--num-heads", "3"]) == 2
    assert "attention-pooling tower (CoCa" in capsys.readouterr().err

    cfg = get_config("vit_base_patch16_clip_224", **OURS, num_classes=24)
    save_npz(src := tmp_path / "biased.npz", random_canonical(cfg), cfg)
    assert convert([str(src), str(tmp_path / "out.pt"), "--to", "openclip"]) == 2
    assert "nonzero bias" in capsys.readouterr().err
    cfg = get_config("vit_base_patch16_siglip_224", **OURS)
    np.savez(src := tmp_path / "siglip.npz", **random_canonical(cfg))
    assert convert([str(src), str(tmp_path / "out.pt"), "--to", "openclip"]) == 2
    assert "no class token" in capsys.readouterr().err


def test_torchscript_archives_are_refused_with_the_way_round(tmp_path, capsys):
    """OpenAI released CLIP as TorchScript, which torch.load(weights_only=True) cannot read."""
    torch.jit.script(torch.nn.Linear(2, 2)).save(src := tmp_path / "ViT-B-16.pt")
    assert convert([str(src), str(tmp_path / "out.npz")]) == 2
    assert "TorchScript archive" in (err := capsys.readouterr().err) and "torch.jit.load(PATH" in err
