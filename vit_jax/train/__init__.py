"""The JAX training engine behind train.py."""
from .loop import TrainingStopped, train

__all__ = ["TrainingStopped", "train"]
