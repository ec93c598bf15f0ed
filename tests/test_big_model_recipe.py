"""The large-model fields of the recipe (grad_checkpointing, remat_policy, scan_layers, sharding):
each twin gets only what it honours, anything else is refused with one line naming the fix; and
the two large-model benchmarks run (their dry runs)."""
import re
import sys

import pytest

from tests.train_runs import ROOT
from vit_common import ConfigError
from vit_common.train.recipe import parse_train_args

TORCH = ["--framework", "torch"]


@pytest.mark.parametrize("argv,message", [
    (TORCH + ["--scan-layers", "true"], "--scan-layers is the JAX engine's"),
    (TORCH + ["--grad-checkpointing", "true", "--remat-policy", "dots"], "--remat-policy dots is the JAX engine's"),
    (TORCH + ["--heartbeat-timeout", "5"], "--heartbeat-timeout is the JAX engine's"),
    (TORCH + ["--num-processes", "2"], "start PyTorch processes with torchrun"),
    (["--remat-policy", "dots"], "add --grad-checkpointing true"),
    (["--preset", "fashion_mnist_swin", "--scan-layers", "true"], "Swin's blocks alternate window shifts"),
    (["--scan-layers", "true", "--layer-decay", "0.75"], "drop --scan-layers or --layer-decay"),
])
def test_what_a_twin_cannot_honour_is_refused(argv, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_train_args(argv)


def test_an_unknown_remat_policy_is_refused():
    from vit_common.train.recipe import TrainConfig

    with pytest.raises(ConfigError, match="remat_policy must be full or dots, got 'some'"):
        TrainConfig(grad_checkpointing=True, remat_policy="some").validate()


@pytest.mark.parametrize("argv", [
    ["--grad-checkpointing", "true", "--remat-policy", "dots"],
    ["--grad-checkpointing", "true", "--scan-layers", "true"],
    ["--model", "eva02_tiny_patch14_224", "--model-args", '{"num_classes": 10}', "--scan-layers", "true"],
    TORCH + ["--grad-checkpointing", "true", "--sharding", "fsdp"],
    ["--preset", "fashion_mnist_swin", "--grad-checkpointing", "true"],
])
def test_what_a_twin_honours_is_accepted(argv):
    parse_train_args(argv)


def test_help_names_every_large_model_field(capsys):
    with pytest.raises(SystemExit):
        parse_train_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("--grad-checkpointing", "activation checkpointing per block", "--remat-policy", "--scan-layers",
                 "nnx.scan", "FSDP2 over the torchrun processes"):
        assert text in out


def test_memory_and_compile_time_benchmarks_dry_runs(capsys):
    sys.path.insert(0, str(ROOT))
    from bench.compile_time import main as compile_time
    from bench.memory import main as memory

    rows = memory(["--dry-run", "--frameworks", "torch"])  # one process per variant
    assert [(r["framework"], r["remat"]) for r in rows] == [("torch", "off"), ("torch", "full")]
    assert all(r["peak_rss_gib"] > 0 and r["step_s"] > 0 and r["state_gib"] > 0 for r in rows)
    assert not any(r["imports_jax"] for r in rows)  # jax's ~170 MiB is not in PyTorch's peak
    assert 0 < rows[1]["saved_for_backward_gib"] < rows[0]["saved_for_backward_gib"]  # checkpointing keeps less
    import jax

    cache = jax.config.jax_enable_compilation_cache  # compile_time turns the persistent cache off
    try:
        # One depth: each variant's compile costs ~6 s at any depth, and one shows both variants
        # traced, compiled and tabled.
        rows = compile_time(["--dry-run", "--depths", "1"])
    finally:
        jax.config.update("jax_enable_compilation_cache", cache)
    assert [(r["depth"], r["scanned"]) for r in rows] == [(1, False), (1, True)]
    assert all(r["trace_s"] > 0 and r["compile_s"] > 0 for r in rows)
    out = capsys.readouterr().out
    assert "| twin | grad checkpointing | activations kept for backward GiB | XLA temp GiB |" in out and "| depth | unrolled trace s |" in out
