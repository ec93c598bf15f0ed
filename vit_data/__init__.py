"""Framework-free input pipeline shared by both twins: datasets as random-access sources,
augmentations in numpy/PIL, and a deterministic, checkpointable grain loader.

Imports neither jax nor torch; grain, tfds and scikit-learn are imported only when used.
"""
from .augment import AugmentConfig
from .loader import Loader, make_loader
from .sources import FASHION_MNIST_CLASSES, Source, load_source

__all__ = ["AugmentConfig", "FASHION_MNIST_CLASSES", "Loader", "Source", "load_source", "make_loader"]
