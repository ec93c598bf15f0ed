"""Pretrained weights by name, through the Hugging Face Hub and its local cache.

Names as timm spells them: `NAME.TAG` (vit_base_patch16_224.augreg2_in21k_ft_in1k) or a bare
NAME, meaning timm's default tag for it (its preset card's, DEFAULT_TAGS); where a file path could be meant (the
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
from typing import Any, Iterator, Mapping

from ..config import get_config
from ..config.presets import CARDS
from ..errors import CheckpointError

TIMM_PREFIX, HUB_PREFIXES = "timm:", ("hf-hub:", "hf_hub:")  # hf_hub: is timm's older spelling
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # tried in this order, as timm and transformers do
CONFIG_FILE = "config.json"

class _DefaultTags(Mapping[str, "str | None"]):
    """timm's default pretrained tag of each preset, as its card says (config/cards.py). None:
    timm publishes none."""

    def __getitem__(self, name: str) -> str | None:
        return CARDS[name].tag

    def __iter__(self) -> Iterator[str]:
        return iter(CARDS)

    def __len__(self) -> int:
        return len(CARDS)


DEFAULT_TAGS: Mapping[str, str | None] = _DefaultTags()


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
    return f"; pretrained weights are named timm:{text}" if text.partition(".")[0] in CARDS else ""


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
