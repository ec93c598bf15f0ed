"""Synthetic checkpoints in every layout found in the wild: the official names, shapes and
dtypes, random values. Numpy only. Each builder starts from canonical weights, so a reader's
output can be compared with them bit for bit."""
from __future__ import annotations

import re

import numpy as np

from vit_common import TIMM, ViTConfig, canonical_shapes

_CANONICAL_TO_LINEN = {
    "LayerNorm_0": "LayerNorm_0", "MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
    "LayerNorm_2": "LayerNorm_1", "MlpBlock_3": "MlpBlock_0",
}


def random_canonical(cfg: ViTConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (0.05 * rng.standard_normal(s)).astype(np.float32) for k, s in canonical_shapes(cfg).items()}


def as_linen(w: dict) -> dict:
    """vision_transformer's Linen models: modules numbered per type inside a block."""
    def rename(name):
        m = re.match(r"^(Transformer/encoderblock_\d+)/([^/]+)/(.*)$", name)
        return f"{m[1]}/{_CANONICAL_TO_LINEN[m[2]]}/{m[3]}" if m else name
    return {rename(k): v for k, v in w.items()}


def as_opt_target(w: dict) -> dict:
    """Old vision_transformer training checkpoints wrap the parameters in the optimizer."""
    return {f"opt/target/{k}": v for k, v in w.items()}


def as_big_vision(w: dict, scanned: bool = True) -> dict:
    """big_vision: params/ prefix, Linen names, top-level pos_embedding, optionally scanned blocks."""
    linen = as_linen(w)
    if "Transformer/posembed_input/pos_embedding" in linen:
        linen["pos_embedding"] = linen.pop("Transformer/posembed_input/pos_embedding")
    if scanned:
        blocks = {}
        for k in [k for k in linen if k.startswith("Transformer/encoderblock_")]:
            i, rest = re.match(r"^Transformer/encoderblock_(\d+)/(.*)$", k).groups()
            blocks.setdefault(rest, {})[int(i)] = linen.pop(k)
        for rest, per_layer in blocks.items():
            linen[f"Transformer/encoderblock/{rest}"] = np.stack([per_layer[i] for i in sorted(per_layer)])
    return {f"params/{k}": v for k, v in linen.items()}


def as_hf(w: dict, cfg: ViTConfig) -> dict:
    """HuggingFace transformers ViTForImageClassification / DeiTForImageClassificationWithTeacher."""
    sd = TIMM.export(w, cfg)
    root = "deit" if cfg.distilled else "vit"
    out = {}
    top = {"cls_token": "embeddings.cls_token", "dist_token": "embeddings.distillation_token",
           "pos_embed": "embeddings.position_embeddings", "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias",
           "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
           "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias"}
    heads = {"head": "cls_classifier" if cfg.distilled else "classifier", "head_dist": "distillation_classifier"}
    block = {"norm1": "layernorm_before", "attn.proj": "attention.output.dense", "norm2": "layernorm_after",
             "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    for name, value in sd.items():
        if name in top:
            out[f"{root}.{top[name]}"] = value
        elif (m := re.match(r"^(head|head_dist)\.(weight|bias)$", name)):
            out[f"{heads[m[1]]}.{m[2]}"] = value
        elif (m := re.match(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", name)):
            for part, chunk in zip(("query", "key", "value"), np.split(value, 3)):
                out[f"{root}.encoder.layer.{m[1]}.attention.attention.{part}.{m[2]}"] = chunk
        elif (m := re.match(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$", name)):
            out[f"{root}.encoder.layer.{m[1]}.{block[m[2]]}.{m[3]}"] = value
        else:
            raise KeyError(name)
    return out


def as_microsoft_swin(w: dict, cfg) -> dict:
    """Microsoft's released Swin checkpoints (the dict under 'model'; timm before 0.9 saved the
    same names): PyTorch shapes, the patch merging that starts canonical stage i stored at the
    end of stage i-1, a plain `head`, and the `relative_position_index` / `attn_mask` buffers."""
    sd = {}
    for name, value in w.items():
        *path, leaf = name.split("/")
        module = ".".join(re.sub(r"^(layers|blocks)_(\d+)$", r"\1.\2", part) for part in path)
        if leaf == "kernel":
            value = value.T if value.ndim == 2 else value.transpose(3, 2, 0, 1)  # (in, out) / HWIO -> torch
            leaf = "weight"
        elif leaf == "scale":
            leaf = "weight"
        if m := re.match(r"^layers\.(\d+)\.downsample(\..+)$", module):
            module = f"layers.{int(m[1]) - 1}.downsample{m[2]}"
        if module == "head.fc":
            module = "head"
        sd[f"{module}.{leaf}"] = np.ascontiguousarray(value)
    grid = cfg.img_size // cfg.patch_size
    for i, depth in enumerate(cfg.depths):
        res = grid // 2**i
        window = min(cfg.window_size, res)
        for j in range(depth):
            sd[f"layers.{i}.blocks.{j}.attn.relative_position_index"] = _ms_relative_index(window)
            if j % 2 and res > window:
                sd[f"layers.{i}.blocks.{j}.attn_mask"] = _ms_attn_mask(res, window, window // 2)
    return sd


def _ms_relative_index(window: int) -> np.ndarray:
    index = np.zeros((window * window, window * window), np.int64)
    for a in range(window * window):
        for b in range(window * window):
            (ya, xa), (yb, xb) = divmod(a, window), divmod(b, window)
            index[a, b] = (ya - yb + window - 1) * (2 * window - 1) + (xa - xb + window - 1)
    return index


def _ms_attn_mask(res: int, window: int, shift: int) -> np.ndarray:
    """Label the 3 x 3 regions of the rolled image, then compare labels inside each window."""
    labels = np.zeros((res, res))
    bounds = [(0, res - window), (res - window, res - shift), (res - shift, res)]
    for r, (h0, h1) in enumerate(bounds):
        for c, (w0, w1) in enumerate(bounds):
            labels[h0:h1, w0:w1] = 3 * r + c
    n = res // window
    tiles = labels.reshape(n, window, n, window).transpose(0, 2, 1, 3).reshape(n * n, window * window)
    return np.where(tiles[:, :, None] != tiles[:, None, :], -100.0, 0.0).astype(np.float32)


def _linen_block(rng, prefix: str, width: int, heads: int, mlp: int) -> dict:
    """One big_vision encoder block (models/vit.py Encoder1DBlock), Linen names."""
    hd = width // heads
    shapes = {"LayerNorm_0/scale": (width,), "LayerNorm_0/bias": (width,), "LayerNorm_1/scale": (width,),
              "LayerNorm_1/bias": (width,), "MlpBlock_0/Dense_0/kernel": (width, mlp), "MlpBlock_0/Dense_0/bias": (mlp,),
              "MlpBlock_0/Dense_1/kernel": (mlp, width), "MlpBlock_0/Dense_1/bias": (width,),
              "MultiHeadDotProductAttention_0/out/kernel": (heads, hd, width),
              "MultiHeadDotProductAttention_0/out/bias": (width,)}
    for part in ("query", "key", "value"):
        shapes[f"MultiHeadDotProductAttention_0/{part}/kernel"] = (width, heads, hd)
        shapes[f"MultiHeadDotProductAttention_0/{part}/bias"] = (heads, hd)
    return {f"{prefix}/{k}": (0.05 * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}


def as_big_vision_image_text(w: dict, *, scanned: bool = False, dtype=np.float32, text_width: int = 32,
                             text_depth: int = 2, vocab: int = 50, seq: int = 8, embed: int = 24, seed: int = 1) -> dict:
    """A big_vision two-tower model (models/proj/image_text/two_towers.py: SigLIP, LiT) whose image
    tower is `w`: params/img/ (a big_vision ViT), params/txt/ (text_transformer.py: Embed_0,
    pos_embedding, Encoder_0/encoderblock_N, Encoder_0/encoder_norm, head) and the temperature
    and bias params/t, params/b; every array in `dtype` (big_vision saves bfloat16 as is)."""
    rng = np.random.default_rng(seed)
    out = {f"params/img/{k[len('params/'):]}": v for k, v in as_big_vision(w, scanned).items()}
    txt = {"Embed_0/embedding": (vocab, text_width), "pos_embedding": (1, seq, text_width),
           "Encoder_0/encoder_norm/scale": (text_width,), "Encoder_0/encoder_norm/bias": (text_width,),
           "head/kernel": (text_width, embed), "head/bias": (embed,)}
    out.update({f"params/txt/{k}": (0.05 * rng.standard_normal(s)).astype(np.float32) for k, s in txt.items()})
    for i in range(text_depth):
        out.update(_linen_block(rng, f"params/txt/Encoder_0/encoderblock_{i}", text_width, 2, 4 * text_width))
    out["params/t"] = np.array([np.log(10.0)], np.float32)
    out["params/b"] = np.array([-10.0], np.float32)
    return {k: v.astype(dtype) for k, v in out.items()}


# OpenAI CLIP's image tower (model.py VisionTransformer) from timm names: name -> (OpenAI name, how).
_OPENAI_TOP = {"patch_embed.proj.weight": "conv1.weight", "norm_pre.weight": "ln_pre.weight",
               "norm_pre.bias": "ln_pre.bias", "norm.weight": "ln_post.weight", "norm.bias": "ln_post.bias"}
_OPENAI_BLOCK = {"norm1": "ln_1", "norm2": "ln_2", "attn.qkv.weight": "attn.in_proj_weight",
                 "attn.qkv.bias": "attn.in_proj_bias", "attn.proj": "attn.out_proj", "mlp.fc1": "mlp.c_fc",
                 "mlp.fc2": "mlp.c_proj", "ls1.gamma": "ls_1.gamma", "ls2.gamma": "ls_2.gamma"}


def as_openai_clip(sd: dict, *, openai: bool = True, text_width: int = 32, text_depth: int = 1, vocab: int = 50,
                   seq: int = 8, seed: int = 1) -> dict:
    """A full CLIP state dict (openai/CLIP model.py; OpenCLIP's CLIP keeps the same names) whose
    image tower is the timm-named `sd` (head.weight = visual.proj.T, zero head bias dropped).
    openai=True: as OpenAI's TorchScript files give it, with convert_weights' float16 for
    convolutions, linear layers, attention and projections (norms and embeddings stay float32)
    and the integers input_resolution, context_length, vocab_size; else OpenCLIP's float32."""
    rng = np.random.default_rng(seed)
    half = np.float16 if openai else np.float32
    out = {}
    for name, v in sd.items():
        if name in _OPENAI_TOP:
            key, v = _OPENAI_TOP[name], v.astype(half if name.startswith("patch_embed") else np.float32)
        elif name == "cls_token":
            key, v = "class_embedding", v.reshape(-1)
        elif name == "pos_embed":
            key, v = "positional_embedding", v[0]
        elif name == "head.weight":
            key, v = "proj", np.ascontiguousarray(v.T).astype(half)
        elif name == "head.bias":
            assert not v.any(), "CLIP's projection has no bias"
            continue
        else:
            i, rest = re.match(r"^blocks\.(\d+)\.(.+)$", name).groups()
            module = next(m for m in _OPENAI_BLOCK if rest.startswith(m))
            key = f"transformer.resblocks.{i}.{_OPENAI_BLOCK[module]}{rest[len(module):]}"
            v = v.astype(np.float32 if module.startswith(("norm", "ls")) else half)
        out[f"visual.{key}"] = v
    d = text_width
    txt = {"token_embedding.weight": (vocab, d), "positional_embedding": (seq, d), "ln_final.weight": (d,),
           "ln_final.bias": (d,), "text_projection": (d, sd["head.weight"].shape[0]), "logit_scale": ()}
    for i in range(text_depth):
        b = f"transformer.resblocks.{i}"
        txt.update({f"{b}.attn.in_proj_weight": (3 * d, d), f"{b}.attn.in_proj_bias": (3 * d,),
                    f"{b}.attn.out_proj.weight": (d, d), f"{b}.attn.out_proj.bias": (d,), f"{b}.ln_1.weight": (d,),
                    f"{b}.ln_1.bias": (d,), f"{b}.mlp.c_fc.weight": (4 * d, d), f"{b}.mlp.c_fc.bias": (4 * d,),
                    f"{b}.mlp.c_proj.weight": (d, 4 * d), f"{b}.mlp.c_proj.bias": (d,), f"{b}.ln_2.weight": (d,),
                    f"{b}.ln_2.bias": (d,)})
    out.update({k: (0.05 * rng.standard_normal(s)).astype(half if k.endswith(("_weight", "_bias", "projection")) or
                                                          ".mlp." in k or ".out_proj." in k else np.float32)
                for k, s in txt.items()})
    if openai:
        side = round((sd["pos_embed"].shape[1] - 1) ** 0.5)
        out.update(input_resolution=np.array(side * sd["patch_embed.proj.weight"].shape[-1]),
                   context_length=np.array(seq), vocab_size=np.array(vocab))
    return out
