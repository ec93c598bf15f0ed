"""The JAX training engine behind train.py."""
from vit_common.train_run import TrainingStopped

from .loop import train

__all__ = ["TrainingStopped", "train"]
