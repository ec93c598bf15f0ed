"""Checkpoints as Meta (DINOv2, DINOv3 torch.hub), BAAI (EVA-02) and Apple (AIMv2, PyTorch and Flax)
release them, built in tests from random weights with the names, shapes and dtypes their published
code registers (read as documentation; none of those projects is importable here):
- from a transformers model's in-memory state dict (HF's names, written out per family below), so
  the same random weights drive the HF reference and the released file;
- EVA-02 from timm's Eva names (transformers has no EVA-02), with BAAI's rotary buffers computed
  as its rope.py does (VisionRotaryEmbeddingFast), in torch.
"""
from __future__ import annotations

import re

import numpy as np
import torch

def _np(state) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in state.items()}


def _blocks(sd: dict[str, np.ndarray], pattern: str) -> dict[int, dict[str, np.ndarray]]:
    out: dict[int, dict[str, np.ndarray]] = {}
    for k, v in sd.items():
        if m := re.match(pattern, k):
            out.setdefault(int(m.group(1)), {})[m.group(2)] = v
    return out


def dinov2_hub(model) -> dict[str, np.ndarray]:
    """Dinov2Model / Dinov2WithRegistersModel -> dinov2/models/vision_transformer.py's state dict
    (torch.hub's, block_chunks=0): SwiGLU as SwiGLUFFNFused's w12 = [w1 (gate) | w2] and w3."""
    sd = _np(model.state_dict())
    out = {"cls_token": sd["embeddings.cls_token"], "pos_embed": sd["embeddings.position_embeddings"]}
    if "embeddings.register_tokens" in sd:
        out["register_tokens"] = sd["embeddings.register_tokens"]
    out["mask_token"] = sd["embeddings.mask_token"]  # (1, C)
    out["patch_embed.proj.weight"] = sd["embeddings.patch_embeddings.projection.weight"]
    out["patch_embed.proj.bias"] = sd["embeddings.patch_embeddings.projection.bias"]
    for i, b in sorted(_blocks(sd, r"^encoder\.layer\.(\d+)\.(.+)$").items()):
        p = f"blocks.{i}."
        for leaf in ("weight", "bias"):
            out[p + f"norm1.{leaf}"] = b[f"norm1.{leaf}"]
            out[p + f"attn.qkv.{leaf}"] = np.concatenate([b[f"attention.{n}_proj.{leaf}"] for n in "qkv"])
            out[p + f"attn.proj.{leaf}"] = b[f"attention.o_proj.{leaf}"]
        out[p + "ls1.gamma"] = b["layer_scale1.lambda1"]
        for leaf in ("weight", "bias"):
            out[p + f"norm2.{leaf}"] = b[f"norm2.{leaf}"]
            if f"mlp.gate_proj.{leaf}" in b:
                out[p + f"mlp.w12.{leaf}"] = np.concatenate([b[f"mlp.gate_proj.{leaf}"], b[f"mlp.up_proj.{leaf}"]])
                out[p + f"mlp.w3.{leaf}"] = b[f"mlp.down_proj.{leaf}"]
            else:
                out[p + f"mlp.fc1.{leaf}"], out[p + f"mlp.fc2.{leaf}"] = b[f"mlp.fc1.{leaf}"], b[f"mlp.fc2.{leaf}"]
        out[p + "ls2.gamma"] = b["layer_scale2.lambda1"]
    out["norm.weight"], out["norm.bias"] = sd["layernorm.weight"], sd["layernorm.bias"]
    return out


def dinov3_hub(model, key_bias_seed: int = 1) -> dict[str, np.ndarray]:
    """DINOv3ViTModel -> dinov3/models/vision_transformer.py's state dict as the hub builds it
    (qkv_bias=True, mask_k_bias=True, fp32 rope periods): the key's share of qkv.bias gets noise,
    which the [1 | 0 | 1] bias_mask cancels in DINOv3's forward."""
    sd = _np(model.state_dict())
    c = sd["embeddings.cls_token"].shape[-1]
    heads = model.config.num_attention_heads
    rng = np.random.default_rng(key_bias_seed)
    out = {"cls_token": sd["embeddings.cls_token"], "storage_tokens": sd["embeddings.register_tokens"],
           "mask_token": sd["embeddings.mask_token"].reshape(1, c),
           "patch_embed.proj.weight": sd["embeddings.patch_embeddings.weight"],
           "patch_embed.proj.bias": sd["embeddings.patch_embeddings.bias"]}
    d_head = c // heads
    # RopePositionEmbedding._init_weights without min / max period: base ** (2 k / (D / 2)), k < D / 4
    out["rope_embed.periods"] = (model.config.rope_theta ** (2 * torch.arange(d_head // 4, dtype=torch.float32)
                                                             / (d_head // 2))).numpy()
    for i, b in sorted(_blocks(sd, r"^(?:model\.)?layer\.(\d+)\.(.+)$").items()):
        p = f"blocks.{i}."
        out[p + "norm1.weight"], out[p + "norm1.bias"] = b["norm1.weight"], b["norm1.bias"]
        out[p + "attn.qkv.weight"] = np.concatenate([b[f"attention.{n}_proj.weight"] for n in "qkv"])
        zeros = np.zeros(c, np.float32)
        out[p + "attn.qkv.bias"] = np.concatenate([b.get("attention.q_proj.bias", zeros),
                                                   rng.standard_normal(c).astype(np.float32),
                                                   b.get("attention.v_proj.bias", zeros)])
        out[p + "attn.qkv.bias_mask"] = np.concatenate([np.ones(c), np.zeros(c), np.ones(c)]).astype(np.float32)
        out[p + "attn.proj.weight"], out[p + "attn.proj.bias"] = b["attention.o_proj.weight"], b["attention.o_proj.bias"]
        out[p + "ls1.gamma"] = b["layer_scale1.lambda1"]
        out[p + "norm2.weight"], out[p + "norm2.bias"] = b["norm2.weight"], b["norm2.bias"]
        names = ({"gate_proj": "w1", "up_proj": "w2", "down_proj": "w3"} if "mlp.gate_proj.weight" in b
                 else {"up_proj": "fc1", "down_proj": "fc2"})
        for theirs, ours in names.items():
            for leaf in ("weight", "bias"):
                out[p + f"mlp.{ours}.{leaf}"] = b[f"mlp.{theirs}.{leaf}"]
        out[p + "ls2.gamma"] = b["layer_scale2.lambda1"]
    out["norm.weight"], out["norm.bias"] = sd["norm.weight"], sd["norm.bias"]
    return out


def aimv2_apple(model) -> dict[str, np.ndarray]:
    """Aimv2VisionModel -> aim-v2's torch AIMv2VisionEncoder state dict (model.safetensors)."""
    sd = _np(model.state_dict())
    out = {"preprocessor.patchifier.proj.weight": sd["embeddings.patch_embed.weight"],
           "preprocessor.patchifier.proj.bias": sd["embeddings.patch_embed.bias"],
           "preprocessor.patchifier.norm.weight": sd["embeddings.rms_norm.weight"],
           "preprocessor.pos_embed": sd["embeddings.position_embedding.weight"][None]}
    for i, b in sorted(_blocks(sd, r"^encoder\.layers\.(\d+)\.(.+)$").items()):
        p = f"trunk.blocks.{i}."
        out[p + "norm_1.weight"] = b["rms_norm1.weight"]
        out[p + "attn.qkv.weight"] = np.concatenate([b[f"attention.{n}_proj.weight"] for n in "qkv"])
        out[p + "attn.proj.weight"] = b["attention.out_proj.weight"]
        out[p + "norm_2.weight"] = b["rms_norm2.weight"]
        out[p + "mlp.fc1.weight"], out[p + "mlp.fc3.weight"] = b["ffn.gate_proj.weight"], b["ffn.up_proj.weight"]
        out[p + "mlp.fc2.weight"] = b["ffn.down_proj.weight"]
    out["trunk.post_trunk_norm.weight"] = sd["rms_norm.weight"]
    return out


def aimv2_flax_variables(apple: dict[str, np.ndarray]) -> dict:
    """ml-aim's torch_weights_to_jax on the torch state dict: the variables its Flax model applies."""
    params: dict = {}
    for k, v in apple.items():
        k = k.replace(".weight", ".kernel").replace("blocks.", "layers_")
        k = re.sub(r"(norm|norm_1|norm_2)\.kernel$", r"\1.scale", k)
        if "patchifier.proj.kernel" in k:
            v = v.transpose(2, 3, 1, 0)
        elif k.endswith(".kernel") and v.ndim == 2:
            v = v.swapaxes(0, 1)
        node = params
        *parents, leaf = k.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = np.ascontiguousarray(v)
    return {"params": params, "batch_stats": {"head": {"bn": {"mean": 0.0, "var": 1.0}}}}


def flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def baai_rope(head_dim: int, grid: int, pt_seq_len: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """EVA-02's VisionRotaryEmbeddingFast(dim=head_dim // 2, pt_seq_len, ft_seq_len=grid) buffers."""
    dim = head_dim // 2
    freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    t = torch.arange(grid) / grid * pt_seq_len
    freqs = torch.einsum("i,f->if", t, freqs).repeat_interleave(2, dim=-1)  # (grid, dim), pairs adjacent
    rows = freqs[:, None, :].expand(grid, grid, dim)
    cols = freqs[None, :, :].expand(grid, grid, dim)
    full = torch.cat([rows, cols], dim=-1).reshape(-1, 2 * dim)
    return full.cos().numpy(), full.sin().numpy()


def eva02_baai(timm_sd: dict[str, np.ndarray], head_dim: int, grid: int) -> dict:
    """timm's Eva state dict of an EVA-02 -> BAAI's modeling_finetune.py checkpoint {'model': ...}:
    fused qkv with q_bias / v_bias (Ti, S) or q/k/v_proj without bias plus q_bias / v_bias (B, L);
    packed SwiGLU w12 / w3 or w1 / w2 / ffn_ln / w3; rope buffers at the top and in every block."""
    cos, sin = baai_rope(head_dim, grid)
    out = {}
    for k, v in timm_sd.items():
        k = re.sub(r"\.attn\.([qv])_proj\.bias$", r".attn.\1_bias", k)
        for timm, baai in (("fc1_g", "w1"), ("fc1_x", "w2"), ("fc1", "w12"), ("fc2", "w3"), ("norm", "ffn_ln")):
            k = k.replace(f".mlp.{timm}.", f".mlp.{baai}.")
        out[k] = v
    depth = 1 + max(int(m.group(1)) for k in out if (m := re.match(r"^blocks\.(\d+)\.", k)))
    for prefix in ["rope."] + [f"blocks.{i}.attn.rope." for i in range(depth)]:
        out[prefix + "freqs_cos"], out[prefix + "freqs_sin"] = cos, sin
    return out


def save_pth(path, sd: dict[str, np.ndarray], wrapper: str | None = None) -> None:
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
    torch.save({wrapper: tensors} if wrapper else tensors, path)


def load_pth(path) -> dict[str, np.ndarray]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    obj = obj.get("model", obj)
    return {k: v.numpy() for k, v in obj.items()}


def signature(sd: dict[str, np.ndarray]) -> dict[str, tuple]:
    """Key -> (shape, dtype): what a strict load_state_dict checks."""
    return {k: (tuple(np.shape(v)), np.asarray(v).dtype.str) for k, v in sd.items()}
