"""Issue 24 (5, 7): offline, a pretrained name fails within 2 s with the command that fills the cache;
each misleading message the issue found now says what is wrong and the fix."""
import time

import numpy as np
import pytest

from tests.checkpoint_factories import random_canonical
from vit_common.config import get_config
from vit_common.errors import CheckpointError
from vit_common.formats import hub, read_checkpoint, save_safetensors
from vit_common.weights import TIMM


@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path):
    """An empty cache and an endpoint where nothing listens (a closed local port)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    hub._probed.clear()
    yield
    hub._probed.clear()


def test_offline_pretrained_name_fails_fast_with_the_fill_command(unreachable_hub):
    started = time.monotonic()
    with pytest.raises(CheckpointError) as e:
        read_checkpoint("timm:vit_tiny_patch16_224")
    assert time.monotonic() - started < 2.0
    message = str(e.value)
    assert "the Hub at http://127.0.0.1:9 could not be reached" in message
    assert "`hf download timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k`" in message
    assert "huggingface-cli download timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k" in message
    assert "HF_HUB_OFFLINE=1" in message and "\n" not in message


def test_a_hub_that_never_answers_is_given_up_in_the_probe_timeout(unreachable_hub, monkeypatch):
    """A blackholed network (no refusal, no answer): the connect, name lookup included, is abandoned."""
    import socket
    import threading

    released = threading.Event()

    def never_answers(*args, **kwargs):
        released.wait(30)
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", never_answers)
    started = time.monotonic()
    try:
        why = hub.hub_unreachable()
        assert time.monotonic() - started < 2.0
    finally:
        released.set()  # let the abandoned probe thread end
    assert why == "the Hub at http://127.0.0.1:9 could not be reached within 1.5 s"


def test_hf_hub_offline_is_said_and_fails_fast(unreachable_hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    started = time.monotonic()
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE=1 forbids downloading it .* `hf download timm/"):
        read_checkpoint("timm:vit_tiny_patch16_224")
    assert time.monotonic() - started < 2.0


def test_model_gives_the_heads_the_weights_cannot_say(tmp_path):
    """The issue: --model given, yet 'cannot infer the number of heads ... (--num-heads or --model)'."""
    cfg = get_config("vit_tiny_patch16_224", embed_dim=96, num_heads=3, depth=1, img_size=32)
    save_safetensors(path := tmp_path / "w96.safetensors", TIMM.export(random_canonical(cfg), cfg))
    with pytest.raises(CheckpointError, match="cannot infer the number of heads"):
        read_checkpoint(path)  # nothing says the heads: the question is right here
    with pytest.raises(ValueError) as e:  # deit_tiny is 192 wide: the weights do not fit it, said as such
        read_checkpoint(path, "deit_tiny_patch16_224")
    assert "cannot infer" not in str(e.value) and "do not fit the model" in str(e.value)
    ckpt = read_checkpoint(path, "vit_tiny_patch16_224", num_heads=3, embed_dim=96, depth=1)
    assert ckpt.config.num_heads == 3


def test_truncated_file_gets_no_model_hint(tmp_path, capsys):
    from vit_common.cli import vit_predict

    cfg = get_config("vit_tiny_patch16_224", embed_dim=32, num_heads=2, depth=1, img_size=16, patch_size=8)
    save_safetensors(path := tmp_path / "w.safetensors", TIMM.export(random_canonical(cfg), cfg))
    path.write_bytes(path.read_bytes()[:300])
    (image := tmp_path / "a.png").write_bytes(b"")
    assert vit_predict.main(["--checkpoint", str(path), str(image)]) == 2
    err = capsys.readouterr().err
    assert "not a readable .safetensors file" in err and "--model" not in err and len(err.strip().splitlines()) == 1


def test_reading_a_run_folder_prints_no_absl_metadata_warning(tmp_path, capfd):
    pytest.importorskip("orbax.checkpoint")
    from vit_common.cli import vit_convert

    cfg = get_config("vit_tiny_patch16_224", embed_dim=32, num_heads=2, depth=1, img_size=16, patch_size=8)
    save_safetensors(src := tmp_path / "w.safetensors", TIMM.export(random_canonical(cfg), cfg), cfg)
    assert vit_convert.main([str(src), str(tmp_path / "run")]) == 0
    capfd.readouterr()
    read_checkpoint(tmp_path / "run")
    assert "Metadata file does not exist" not in "".join(capfd.readouterr())
