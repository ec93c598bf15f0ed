"""Pretrained weights by name, through the Hugging Face Hub and its local cache.

Names as timm spells them: `NAME.TAG` (vit_base_patch16_224.augreg2_in21k_ft_in1k) or a bare
NAME, meaning timm's default tag for it (DEFAULT_TAGS); where a file path could be meant (the
CLIs) they are written `timm:NAME[.TAG]`. Both live in timm's repository `timm/NAME.TAG`.
`hf-hub:ORG/REPO[@REVISION]` names any repository: timm's (config.json with `architecture`) or
transformers' (config.json with `model_type`); hub_configs reads what each config.json says.

Files come through huggingface_hub, which reads its own environment when first imported:
HF_HUB_CACHE / HF_HOME (the cache), HF_HUB_OFFLINE=1 (the cache only), HF_ENDPOINT, HF_TOKEN.
A file already cached for the revision is read from disk; otherwise it is downloaded.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ..config import PRESETS, get_config
from ..errors import CheckpointError

TIMM_PREFIX, HUB_PREFIXES = "timm:", ("hf-hub:", "hf_hub:")  # hf_hub: is timm's older spelling
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # tried in this order, as timm and transformers do
CONFIG_FILE = "config.json"

# timm's default pretrained tag of each preset: the first tag with weights in its default_cfgs
# (timm/models/vision_transformer.py, deit.py, swin_transformer.py). None: timm publishes none.
# A new family adds its rows here.
DEFAULT_TAGS: dict[str, str | None] = {
    **{f"vit_{v}": "augreg_in21k_ft_in1k" for v in (
        "tiny_patch16_224", "tiny_patch16_384", "small_patch16_224", "small_patch16_384", "small_patch32_224",
        "small_patch32_384", "base_patch16_384", "base_patch32_224", "base_patch32_384", "large_patch16_224",
        "large_patch16_384")},
    "vit_base_patch16_224": "augreg2_in21k_ft_in1k",
    "vit_base_patch8_224": "augreg2_in21k_ft_in1k",
    "vit_large_patch32_384": "orig_in21k_ft_in1k",
    "vit_large_patch32_224": "orig_in21k",  # features only (num_classes=0), as the four below
    "vit_huge_patch14_224": "orig_in21k",
    "vit_small_patch8_224": "dino",
    "vit_base_patch16_siglip_224": "v2_webli",
    "vit_base_patch16_gap_224": None,
    **{f"deit_{v}": "fb_in1k" for v in (
        "tiny_patch16_224", "small_patch16_224", "base_patch16_224", "base_patch16_384", "tiny_distilled_patch16_224",
        "small_distilled_patch16_224", "base_distilled_patch16_224", "base_distilled_patch16_384")},
    **{f"deit3_{v}": "fb_in1k" for v in (
        "small_patch16_224", "small_patch16_384", "medium_patch16_224", "base_patch16_224", "base_patch16_384",
        "large_patch16_224", "large_patch16_384", "huge_patch14_224")},
    **{f"vit_{size}_patch14_{reg}dinov2": "lvd142m" for size in ("small", "base", "large", "giant")
       for reg in ("", "reg4_")},
    # CLIP: timm's ImageNet fine-tunes of LAION-2B towers come first where they exist, else the tower.
    **{f"vit_{v}": "laion2b_ft_in12k_in1k" for v in (
        "base_patch32_clip_224", "base_patch32_clip_384", "base_patch32_clip_448", "base_patch16_clip_224",
        "base_patch16_clip_384", "large_patch14_clip_224", "large_patch14_clip_336", "huge_patch14_clip_224",
        "huge_patch14_clip_336")},
    "vit_base_patch32_clip_256": "datacompxl",
    "vit_huge_patch14_clip_378": "dfn5b",
    # QuickGELU names: timm's first tag whose weights were trained with QuickGELU (their files live
    # in the repository of the name without _quickgelu, see weights_repository_name).
    "vit_base_patch32_clip_quickgelu_224": "laion400m_e32",
    "vit_base_patch16_clip_quickgelu_224": "metaclip_2pt5b",
    "vit_large_patch14_clip_quickgelu_224": "dfn2b",
    "vit_large_patch14_clip_quickgelu_336": "openai",
    "vit_huge_patch14_clip_quickgelu_224": "dfn5b",
    "vit_huge_patch14_clip_quickgelu_378": "dfn5b",
    # SigLIP: SigLIP 2 (v2_webli) where it exists; the so400m/14 GAP towers at 448 and 896 are PaliGemma's.
    **{f"vit_{v}": "v2_webli" for v in (
        "base_patch32_siglip_256", "base_patch16_siglip_256", "base_patch16_siglip_384", "base_patch16_siglip_512",
        "large_patch16_siglip_256", "large_patch16_siglip_384", "large_patch16_siglip_512",
        "so400m_patch14_siglip_224", "so400m_patch14_siglip_378", "so400m_patch16_siglip_256",
        "so400m_patch16_siglip_384", "so400m_patch16_siglip_512", "base_patch32_siglip_gap_256",
        "base_patch16_siglip_gap_224", "base_patch16_siglip_gap_256", "base_patch16_siglip_gap_384",
        "base_patch16_siglip_gap_512", "large_patch16_siglip_gap_256", "large_patch16_siglip_gap_384",
        "large_patch16_siglip_gap_512", "so400m_patch14_siglip_gap_224", "so400m_patch14_siglip_gap_378",
        "so400m_patch16_siglip_gap_256", "so400m_patch16_siglip_gap_384", "so400m_patch16_siglip_gap_512")},
    "vit_so400m_patch14_siglip_gap_448": "pali_mix",
    "vit_so400m_patch14_siglip_gap_896": "pali_pt",
    **{f"aimv2_{size}_patch14_{img}": "apple_pt" for size in ("large", "huge", "1b", "3b") for img in (224, 336, 448)},
    "swin_tiny_patch4_window7_224": "ms_in1k",
    **{f"swin_{v}": "ms_in22k_ft_in1k" for v in (
        "small_patch4_window7_224", "base_patch4_window7_224", "base_patch4_window12_384", "large_patch4_window7_224",
        "large_patch4_window12_384")},
    # timm's eva.py: EVA-02 (MIM pretraining at 224 px; the fine-tunes at 336 / 448 px) and DINOv3.
    **{f"eva02_{size}_patch14_224": "mim_in22k" for size in ("tiny", "small", "base", "large")},
    "eva02_tiny_patch14_336": "mim_in22k_ft_in1k", "eva02_small_patch14_336": "mim_in22k_ft_in1k",
    "eva02_base_patch14_448": "mim_in22k_ft_in22k_in1k", "eva02_large_patch14_448": "mim_in22k_ft_in22k_in1k",
    **{f"vit_{size}_patch16_dinov3{qkvb}": "lvd1689m" for size in ("small", "small_plus", "base", "large", "huge_plus")
       for qkvb in ("", "_qkvb")},
    "vit_7b_patch16_dinov3": "lvd1689m",
    "vit_tiny_patch16_dinov3_qkvb": None,  # "custom, no pretraining" in timm
}


@dataclasses.dataclass(frozen=True)
class HubRepo:
    repo_id: str  # ORG/REPO
    revision: str | None  # None: the default branch
    architecture: str | None = None  # the preset a timm name names (its config.json is then optional)

    @property
    def name(self) -> str:
        return f"hf-hub:{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


@dataclasses.dataclass
class PretrainedFiles:
    repo: HubRepo
    weights: Path
    config: dict[str, Any] | None  # the repository's config.json, None where it is optional and absent


def is_pretrained_name(source: Any) -> bool:
    """Whether a checkpoint argument names pretrained weights (timm:..., hf-hub:...) rather than a path."""
    return isinstance(source, str) and source.startswith((TIMM_PREFIX, *HUB_PREFIXES))


def checkpoint_argument(text: str) -> str | Path:
    """A command line's checkpoint: a pretrained name as written, anything else a path."""
    return text if is_pretrained_name(text) else Path(text)


def name_hint(path: str | os.PathLike) -> str:
    """For a checkpoint path that does not exist but reads as timm's NAME[.TAG]: how to name
    pretrained weights ('' otherwise)."""
    text = str(path)
    if "/" in text or os.sep in text or Path(text).suffix in (".npz", ".safetensors", ".pt", ".pth", ".bin"):
        return ""
    return f"; pretrained weights are named timm:{text}" if text.partition(".")[0] in PRESETS else ""


def pretrained_source(name: str | None, checkpoint: Any = None) -> str:
    """create_model(NAME, pretrained=True): the checkpoint source NAME stands for."""
    if checkpoint is not None:
        raise ValueError("pretrained=True loads the weights the model name names; give a checkpoint or "
                         "pretrained=True, not both")
    if not name:
        raise ValueError("pretrained=True needs a model name: NAME, NAME.TAG or hf-hub:ORG/REPO")
    return name if is_pretrained_name(name) else TIMM_PREFIX + name


def parse_pretrained(source: str) -> HubRepo:
    """`timm:NAME[.TAG][@REV]` or `hf-hub:ORG/REPO[@REV]` -> the repository to read."""
    body, _, revision = source.partition("@")
    if "@" in revision:
        raise CheckpointError(f"{source}: at most one '@REVISION'")
    if body.startswith(TIMM_PREFIX):
        architecture, repo_id = timm_repository(body[len(TIMM_PREFIX):])
        return HubRepo(repo_id, revision or None, architecture)
    repo_id = body.split(":", 1)[1]
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise CheckpointError(f"{source}: expected hf-hub:ORG/REPO (e.g. hf-hub:timm/vit_base_patch16_224."
                              "augreg2_in21k_ft_in1k, or a transformers repository such as hf-hub:google/"
                              "vit-base-patch16-224)")
    return HubRepo(repo_id, revision or None)


def timm_repository(name: str) -> tuple[str, str]:
    """timm's NAME[.TAG] -> (NAME, 'timm/NAME.TAG'), TAG defaulting to timm's default tag for NAME."""
    architecture, _, tag = name.partition(".")
    get_config(architecture)  # an unknown name fails here, with the closest known names
    if not tag:
        if architecture not in DEFAULT_TAGS:
            raise CheckpointError(f"no default pretrained tag is known for {architecture}; name one "
                                  f"({architecture}.TAG, as timm lists them)")
        tag = DEFAULT_TAGS[architecture]
        if tag is None:
            raise CheckpointError(f"timm publishes no pretrained weights for {architecture}")
    return architecture, f"timm/{weights_repository_name(architecture)}.{tag}"


def weights_repository_name(architecture: str) -> str:
    """The name under which timm's repository holds a preset's weights. The same weights serve both
    CLIP names, with and without QuickGELU (the activation is no parameter): timm keeps them under
    the plain name, whose config.json then names the plain architecture."""
    return architecture.replace("_clip_quickgelu_", "_clip_")


def fetch_pretrained(source: str) -> PretrainedFiles:
    """The weights file and config.json of a pretrained name, from the cache or downloaded."""
    import json

    repo = parse_pretrained(source)
    fetch = _Fetcher(repo)
    config = None
    try:
        config_path = fetch(CONFIG_FILE)
    except MissingFile:
        if repo.architecture is None:  # hf-hub: only config.json says what the repository holds
            raise
    else:
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{repo.repo_id}/{CONFIG_FILE}: not readable JSON ({e})") from e
        if not isinstance(config, dict):
            raise CheckpointError(f"{repo.repo_id}/{CONFIG_FILE}: holds a JSON {type(config).__name__}, not an object")
    missing = []
    for filename in WEIGHT_FILES:
        try:
            return PretrainedFiles(repo, fetch(filename), config)
        except MissingFile as e:
            missing.append(e)
    raise CheckpointError(f"{missing[0]}; nor is {', '.join(WEIGHT_FILES[1:])} there") from None


class MissingFile(CheckpointError):
    """A file the repository lacks, or that is not cached while the Hub cannot be reached."""


class _Fetcher:
    """Files of one repository through huggingface_hub. Every failure is a CheckpointError that
    names the repository and the file. Once the Hub could not be reached, the repository's other
    files are looked for in the cache only (huggingface_hub retries an unreachable Hub for ~20 s)."""

    def __init__(self, repo: HubRepo):
        self.repo = repo
        self.unreachable: str | None = None  # why the Hub could not be reached, once it could not

    def __call__(self, filename: str) -> Path:
        try:
            from huggingface_hub import errors, hf_hub_download
        except ImportError as e:
            raise CheckpointError(f"{self.repo.name}: pretrained weights are read through huggingface_hub: "
                                  "pip install huggingface_hub") from e
        repo, revision = self.repo.repo_id, self.repo.revision
        where = f"{repo}/{filename}" + (f" (revision {revision})" if revision else "")
        if self.unreachable is None:  # huggingface_hub would retry an unreachable Hub for ~20 s
            self.unreachable = hub_unreachable()
        try:
            return Path(hf_hub_download(repo, filename, revision=revision, library_name="twin-vit",
                                        local_files_only=self.unreachable is not None))
        except errors.RemoteEntryNotFoundError:
            raise MissingFile(f"{where}: the repository has no such file") from None
        except errors.LocalEntryNotFoundError as e:
            self.unreachable = self.unreachable or _why_unreachable(e)
            command = f"hf download {repo}" + (f" --revision {revision}" if revision else "")
            raise MissingFile(f"{where}: not in the Hugging Face cache ({_cache_dir()}), and {self.unreachable}. "
                              f"To fill the cache, run `{command}` (older huggingface_hub: `huggingface-cli "
                              f"download {repo}`) on a machine with network, copy its cache here (or point "
                              "HF_HUB_CACHE at it) and run with HF_HUB_OFFLINE=1") from None
        except errors.GatedRepoError:
            raise CheckpointError(f"{repo}: the repository is gated; accept its terms on the Hub and log in "
                                  f"(hf auth login, or HF_TOKEN) to fetch {filename}") from None
        except errors.RepositoryNotFoundError:
            raise CheckpointError(f"{repo}: no such repository on the Hub{self._tag_hint()} (fetching {filename}; "
                                  "if it is private, log in: hf auth login, or HF_TOKEN)") from None
        except errors.RevisionNotFoundError:
            raise CheckpointError(f"{where}: the repository has no revision {revision}") from None
        except (errors.HfHubHTTPError, OSError, ValueError) as e:  # other HTTP errors, a full disk, a damaged cache
            raise CheckpointError(f"{where}: could not be fetched: {_first_line(e)}") from None

    def _tag_hint(self) -> str:
        architecture = self.repo.architecture
        if architecture is None:
            return ""
        tag = self.repo.repo_id.partition(".")[2]
        default = DEFAULT_TAGS.get(architecture)
        return (f"; is {tag!r} a pretrained tag of {architecture}?" +
                (f" (timm's default: {architecture}.{default})" if default and default != tag else ""))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


PROBE_TIMEOUT_S = 1.5  # a reachable Hub answers a TCP connect well within this
_probed: dict[str, tuple[float, str | None]] = {}  # endpoint -> (when, why unreachable): one probe per 60 s


def hub_unreachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the Hub cannot be reached (HF_HUB_OFFLINE=1, or no TCP connection to it, or to the
    HTTPS proxy, within `timeout` s, name lookup included), or None when it answers."""
    import threading
    import time
    import urllib.parse
    import urllib.request

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE=1 forbids downloading it (unset it to download)"
    endpoint = constants.ENDPOINT
    when, why = _probed.get(endpoint, (float("-inf"), None))
    if time.monotonic() - when < 60:
        return why
    url = urllib.parse.urlsplit(endpoint)
    proxy = urllib.request.getproxies().get(url.scheme)
    target = urllib.parse.urlsplit(proxy if "://" in (proxy or "://") else f"http://{proxy}") if proxy else url
    port = target.port or (443 if target.scheme == "https" else 80)
    result: list[BaseException | None] = []

    def connect():
        import socket

        try:
            socket.create_connection((target.hostname, port), timeout=timeout).close()
            result.append(None)
        except OSError as e:
            result.append(e)

    thread = threading.Thread(target=connect, daemon=True)  # a name lookup has no timeout of its own
    thread.start()
    thread.join(timeout)
    via = f" through the proxy {target.hostname}:{port}" if proxy else ""
    if not result:
        why = f"the Hub at {endpoint} could not be reached{via} within {timeout:g} s"
    elif result[0] is not None:
        why = f"the Hub at {endpoint} could not be reached{via} ({_first_line(result[0])})"
    else:
        why = None
    _probed[endpoint] = (time.monotonic(), why)
    return why


def _why_unreachable(error: Exception) -> str:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE=1 forbids downloading it (unset it to download)"
    cause = error.__cause__ or error.__context__
    return f"the Hub at {constants.ENDPOINT} could not be reached" + (f" ({_first_line(cause)})" if cause else "")
