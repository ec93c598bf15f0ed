"""The JAX training engine behind train.py."""
from vit_common.train.run import TrainingStopped

from .loop import train

__all__ = ["TrainingStopped", "train"]
