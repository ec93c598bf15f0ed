"""The Hugging Face Hub without the network: its cache laid out on disk as huggingface_hub lays
it out, and a loopback HTTP server that answers as the Hub does. Numpy and vit_common only, so
every package's tests can use it. Tiny presets with default tags are registered per test, as a
new preset registers its card (config/cards.py), so the files stay small."""
from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from vit_common import SwinConfig, ViTConfig
from vit_common.config.cards import PresetCard
from vit_common.config.presets import CARDS

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # a snapshot's commit: any 40 hex digits


# name -> (preset, its default tag)
TINY_PRESETS = {
    "test_vit_tiny": (dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10), "test_in1k"),
    "swin_test_tiny": (dict(img_size=32, patch_size=2, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4,
                            num_classes=10), "ms_test"),
}


def register_tiny_presets(monkeypatch) -> None:
    for name, (preset, tag) in TINY_PRESETS.items():
        family = SwinConfig if name.startswith("swin_") else ViTConfig
        monkeypatch.setitem(CARDS, name, PresetCard(name, family, preset, tag))


def use_hub(monkeypatch, cache: Path, *, offline: bool = True, endpoint: str | None = None) -> None:
    """Point huggingface_hub at `cache` (and `endpoint`) as a user does, with HF_HUB_CACHE,
    HF_HUB_OFFLINE and HF_ENDPOINT. huggingface_hub reads them once, when first imported, and
    an earlier test may have imported it: its constants are set too."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    if endpoint is not None:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")


def cache_repo(cache: Path, repo_id: str, files: dict[str, bytes], *, commit: str = COMMIT,
               revision: str = "main") -> Path:
    """A repository snapshot as huggingface_hub's cache holds it: each file's bytes in
    blobs/<sha256>, snapshots/<commit>/<name> linking to it, refs/<revision> holding the commit."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = folder / "snapshots" / commit
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / revision).write_text(commit)
    return snapshot


def safetensors_bytes(state_dict: dict[str, np.ndarray]) -> bytes:
    """A state dict as timm's and transformers' model.safetensors hold it: no config inside."""
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, metadata={"format": "pt"})


def timm_config_json(architecture: str, num_classes: int, *, tag: str, img_size: int,
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct: float = 0.9, **extra) -> bytes:
    """config.json as timm's push_to_hf_hub writes it."""
    pretrained_cfg = dict(tag=tag, custom_load=False, input_size=[3, img_size, img_size], fixed_input_size=True,
                          interpolation="bicubic", crop_pct=crop_pct, crop_mode="center", mean=list(mean),
                          std=list(std), num_classes=num_classes, pool_size=None, first_conv="patch_embed.proj",
                          classifier="head")
    return json.dumps(dict(architecture=architecture, num_classes=num_classes, num_features=0,
                           global_pool="token", pretrained_cfg=pretrained_cfg, **extra), indent=2).encode()


@contextlib.contextmanager
def loopback_hub(repos: dict[str, dict[str, bytes]], commit: str = COMMIT) -> Iterator[tuple[str, list[str]]]:
    """(endpoint URL, request log) of a server answering /{repo}/resolve/{revision}/{file} as the
    Hub does: HEAD gives X-Repo-Commit, ETag and Content-Length; GET the bytes; a missing
    repository or file is a 404 with the Hub's X-Error-Code."""
    log: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, body: bool):
            log.append(f"{self.command} {self.path}")
            parts = self.path.split("?")[0].lstrip("/").split("/")
            repo, files = "/".join(parts[:2]), None
            if len(parts) >= 5 and parts[2] == "resolve":
                files = repos.get(repo)
            name = "/".join(parts[4:])
            if files is None or name not in files:
                self.send_response(404)
                self.send_header("X-Error-Code", "RepoNotFound" if files is None else "EntryNotFound")
                self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = files[name]
            self.send_response(200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_HEAD(self):
            self._answer(body=False)

        def do_GET(self):
            self._answer(body=True)

        def log_message(self, *args):  # keep the test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
