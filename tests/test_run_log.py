"""RunLog's TensorBoard scalars, read back from the event file, in a process like a JAX run's (torch
not imported, and kept out of tensorboardX's import) and in one that has torch."""
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboardX.proto import event_pb2

WRITE = """
import sys
{before}
from vit_common.train.logs import RunLog
log = RunLog(sys.argv[1])
log.write(1, "train", {{"loss": 2.5}})
log.write(2, "train", {{"loss": 1.25}})
log.write(2, "eval", {{"accuracy": 0.5}})
log.close()
print("torch" in sys.modules)
"""


def scalars(folder: Path) -> dict:
    """Every scalar in the TFRecord event files under folder: {(tag, step): value}."""
    found = {}
    for path in folder.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4  # length, its crc, the record, its crc
            for value in event.summary.value:
                found[value.tag, event.step] = value.simple_value
    return found


@pytest.mark.parametrize("before,torch_after", [("", False), ("import torch", True)])
def test_scalars_reach_tensorboard_with_or_without_torch(tmp_path, before, torch_after):
    out = subprocess.run([sys.executable, "-c", WRITE.format(before=before), str(tmp_path)], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [str(torch_after)]
    assert scalars(tmp_path / "tensorboard") == {("train/loss", 1): 2.5, ("train/loss", 2): 1.25,
                                                 ("eval/accuracy", 2): 0.5}
