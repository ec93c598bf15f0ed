"""The PyTorch training twin behind `train.py --framework torch` (DDP under torchrun)."""
from vit_common.train.run import TrainingStopped

from .loop import train

__all__ = ["TrainingStopped", "train"]
