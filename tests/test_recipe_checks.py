"""Range checks of the training recipe: every numeric field of TrainConfig refuses values outside
its range with a ConfigError naming the field and the range, and train.py exits 2 on them before
anything is written."""
import dataclasses
import typing

import pytest

import train as train_cli
from vit_common import ConfigError
from vit_common.train.recipe import TrainConfig, parse_train_args

# (flag, bad value, the message's "field must be RANGE" part). The digits preset underneath has
# epochs 40, lr 2e-3, min_lr 1e-5.
BAD = [
    ("--lr", "0", "lr must be > 0"),
    ("--lr", "-1e-3", "lr must be > 0"),
    ("--lr", "nan", "lr must be > 0"),
    ("--lr", "inf", "lr must be > 0"),
    ("--min-lr", "-1e-6", "min_lr must be in [0, lr=0.002]"),
    ("--min-lr", "0.01", "min_lr must be in [0, lr=0.002]"),  # a cosine "decay" that rises
    ("--warmup-epochs", "-1", "warmup_epochs must be >= 0"),
    ("--weight-decay", "-0.05", "weight_decay must be >= 0"),
    ("--weight-decay", "nan", "weight_decay must be >= 0"),
    ("--layer-decay", "0", "layer_decay must be in (0, 1]"),
    ("--layer-decay", "1.5", "layer_decay must be in (0, 1]"),  # deeper layers would train faster than the head
    ("--layer-decay", "nan", "layer_decay must be in (0, 1]"),
    ("--beta2", "1", "beta2 must be in [0, 1)"),
    ("--beta2", "-0.1", "beta2 must be in [0, 1)"),
    ("--clip-grad-norm", "-1", "clip_grad_norm must be > 0"),  # would flip the gradients' sign
    ("--clip-grad-norm", "0", "clip_grad_norm must be > 0"),
    ("--ema-decay", "1.5", "ema_decay must be in (0, 1)"),
    ("--ema-decay", "1", "ema_decay must be in (0, 1)"),  # EMA frozen at the initial weights
    ("--ema-decay", "0", "ema_decay must be in (0, 1)"),
    ("--ema-decay", "nan", "ema_decay must be in (0, 1)"),
    ("--label-smoothing", "1", "label_smoothing must be in [0, 1)"),
    ("--label-smoothing", "-0.1", "label_smoothing must be in [0, 1)"),
    ("--mixup-alpha", "-0.2", "mixup_alpha must be >= 0"),
    ("--cutmix-alpha", "-1", "cutmix_alpha must be >= 0"),
    ("--pad-crop", "-2", "pad_crop must be >= 0"),
    ("--seed", "-1", "seed must be >= 0"),
    ("--drop-rate", "1", "drop_rate must be in [0, 1)"),
    ("--drop-path-rate", "-0.1", "drop_path_rate must be in [0, 1)"),
    ("--randaugment", "2,31", "magnitude in [0, 30]"),
    ("--randaugment", "-1,9", "num_ops >= 0"),
    ("--epochs", "0", "epochs must be >= 1"),
    ("--batch-size", "0", "batch_size must be >= 1"),
    ("--grad-accum-steps", "0", "grad_accum_steps must be >= 1"),
    ("--log-every", "0", "log_every must be >= 1"),
    ("--checkpoint-every", "0", "checkpoint_every must be >= 1"),
    ("--keep-checkpoints", "0", "keep_checkpoints must be >= 1"),
    ("--max-bad-steps", "0", "max_bad_steps must be >= 1"),
    ("--num-processes", "0", "num_processes must be >= 1"),
    ("--process-id", "-1", "process_id must be in [0, num_processes)"),
    ("--heartbeat-timeout", "0", "heartbeat_timeout must be >= 1 s"),
    ("--img-size", "0", "img_size must be a positive integer"),
    ("--patch-size", "-4", "patch_size must be a positive integer"),
]

# The edges of each range, which must still be accepted, and the value each parses to.
GOOD = [("--lr", "1e-5", 1e-5), ("--min-lr", "0", 0.0), ("--min-lr", "2e-3", 2e-3), ("--warmup-epochs", "0", 0.0),
        ("--warmup-epochs", "19.5", 19.5), ("--warmup-epochs", "40", 40.0), ("--epochs", "1", 1),
        ("--weight-decay", "0", 0.0), ("--layer-decay", "1", 1.0), ("--layer-decay", "0.65", 0.65),
        ("--layer-decay", "none", None), ("--beta2", "0", 0.0), ("--clip-grad-norm", "none", None),
        ("--ema-decay", "0.9999", 0.9999), ("--ema-decay", "none", None), ("--label-smoothing", "0", 0.0),
        ("--mixup-alpha", "0", 0.0), ("--randaugment", "0,0", "0,0"), ("--randaugment", "3,30", "3,30"),
        ("--seed", "0", 0), ("--max-bad-steps", "1", 1)]


@pytest.mark.parametrize("flag,value,message", BAD, ids=[f"{f}={v}" for f, v, _ in BAD])
def test_out_of_range_values_are_refused(flag, value, message):
    with pytest.raises(ConfigError) as error:
        parse_train_args([f"{flag}={value}"])  # "=": argparse would read -1e-3 as an option
    assert message in str(error.value)


@pytest.mark.parametrize("flag,value,parsed", GOOD, ids=[f"{f}={v}" for f, v, _ in GOOD])
def test_range_edges_are_accepted(flag, value, parsed):
    got = getattr(parse_train_args([f"{flag}={value}"]), flag[2:].replace("-", "_"))
    assert got == parsed and type(got) is type(parsed), (got, parsed)  # 1 is no 1.0: int fields stay int


def test_every_numeric_field_has_a_range_check():
    # A field added later without a check fails here. The check is proved by building the config
    # with the field at an absurd value (-1 is out of every numeric range here).
    hints = typing.get_type_hints(TrainConfig)
    numeric = [f.name for f in dataclasses.fields(TrainConfig)
               if {int, float} & set(typing.get_args(hints[f.name]) or (hints[f.name],))]
    assert {"lr", "ema_decay", "beta2", "epochs", "patch_size"} <= set(numeric)
    tested = {flag[2:].replace("-", "_") for flag, _, _ in BAD}
    assert set(numeric) <= tested, sorted(set(numeric) - tested)
    base = parse_train_args([])
    for name in numeric:
        with pytest.raises(ConfigError, match=name):
            dataclasses.replace(base, **{name: -1}).validate()


def test_train_py_exits_2_naming_the_field_before_writing_anything(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert train_cli.main(["--ema-decay", "1.5", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert "train.py: error: ema_decay must be in (0, 1)" in err and "got 1.5" in err
    assert not workdir.exists()
