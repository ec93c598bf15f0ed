"""Deployment artifacts of a Flax model (twin of vit_torch/export.py): a serialised jax.export
program with the weights inside as constants, batch dimension symbolic, image size the model's;
checked by deserialising it and calling it, against the model itself.

The artifact runs with jax alone (jax.export.deserialize(blob).call(x)): no flax, no project
code. It is lowered for `platforms` (default: the backend exporting it); a program lowered for
('cpu', 'cuda') runs on either. Serialising needs the flatbuffers package."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vit_common.export import FORMATS

from .models import Model


def _input_spec(model: Model) -> jax.ShapeDtypeStruct:
    cfg = model.cfg
    batch, = jax.export.symbolic_shape("batch", constraints=("batch >= 1",))
    return jax.ShapeDtypeStruct((batch, cfg.img_size, cfg.img_size, cfg.in_chans), jnp.float32)


def export_program(model: Model, platforms: Sequence[str] | None = None) -> jax.export.Exported:
    """jax.export of the model in eval mode, its weights closed over (constants of the program)."""
    model.eval()
    graphdef, state = nnx.split(model)

    def forward(images):
        return nnx.merge(graphdef, state)(images)

    return jax.export.export(jax.jit(forward), platforms=platforms)(_input_spec(model))


def serialize(model: Model, fmt: str, platforms: Sequence[str] | None = None) -> bytes:
    """The artifact's bytes: jax.export's serialisation (a flatbuffer)."""
    if fmt != "jax-export":
        raise ValueError(f"the Flax twin writes {sorted(f for f, v in FORMATS.items() if v.framework == 'jax')}, "
                         f"not {fmt!r}")
    return bytes(export_program(model, platforms).serialize())


@nnx.jit
def _forward(model: Model, images: jax.Array) -> jax.Array:
    return model(images)


def reference(model: Model, images_nhwc: np.ndarray) -> np.ndarray:
    """What the twin computes for NHWC images: the values the artifact must reproduce."""
    model.eval()
    return np.asarray(_forward(model, jnp.asarray(images_nhwc)), np.float32)


def run_artifact(blob: bytes, fmt: str, images_nhwc: np.ndarray) -> np.ndarray:
    """The artifact's output, computed from its bytes alone."""
    return np.asarray(jax.export.deserialize(bytearray(blob)).call(jnp.asarray(images_nhwc)), np.float32)


def versions(fmt: str, platforms: Sequence[str] | None = None) -> dict[str, str]:
    """The libraries that wrote the artifact, and the platforms it runs on (recorded in its sidecar)."""
    import flatbuffers
    import flax

    return {"jax": jax.__version__, "flax": flax.__version__, "flatbuffers": flatbuffers.__version__,
            "platforms": ",".join(platforms or (jax.default_backend(),))}


def runtime_version(fmt: str) -> str:
    return f"jax.export.deserialize (jax {jax.__version__})"

