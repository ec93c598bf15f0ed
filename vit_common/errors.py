"""The errors a user meets, each naming the problem: a bad config, an unreadable file, weights that do not fit."""


class ConfigError(ValueError):
    """A model configuration that cannot describe a valid network."""


class CheckpointError(ValueError):
    """A weight file that cannot be read: missing, corrupted, or of an unknown format."""


class ArchitectureUnknown(CheckpointError):
    """Readable weights whose shapes do not say the whole architecture (the heads, the grid): a
    preset (--model) or the missing field (--num-heads) does."""


class WeightsMismatchError(ValueError):
    """Weights that do not fit the model: lists the offending names."""
