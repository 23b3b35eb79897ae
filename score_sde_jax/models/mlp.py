"""A time-conditioned residual MLP score network for low-dimensional (toy) data.

Not part of the original code base: it plays the role NCSN++/DDPM++ play for images on 2-D mixtures
and other vector data, with the same conventions (docs/original_code.md#sdes-and-time-conditioning):
the raw label is embedded (Gaussian Fourier features of log σ, or the DDPM sinusoidal embedding),
VP/sub-VP networks are read as noise predictors by `score_sde_jax.score_fns`, and VE networks may
divide their output by σ (``scale_by_sigma``).

Config keys (``config.model``): ``nf`` (hidden width, default 128), ``num_layers`` (residual
blocks, default 3), ``nonlinearity`` (default 'swish'), ``embedding_type`` ('positional' or
'fourier', default 'positional'), ``fourier_scale`` (16), ``dropout`` (0), ``scale_by_sigma``
(False) with ``sigma_min``, ``sigma_max``, ``num_scales`` for discrete VE labels. The data size
is read from the input, so no data key is needed; inputs ``[B, ...]`` are flattened and the
output has the input's shape.
"""

import math

import flax.linen as nn
import jax.numpy as jnp

from score_sde_jax.models import register_model
from score_sde_jax.models.layers import (
    GaussianFourierProjection,
    default_init,
    get_act,
    get_timestep_embedding,
)

EMBEDDING_TYPES = ("positional", "fourier")


class ResidualBlock(nn.Module):
    """Pre-activation block h + W₂·drop(act(W₁·act(h) + V·act(temb))), DDPM-style conditioning."""

    width: int
    act: object
    dropout: float = 0.0

    @nn.compact
    def __call__(self, h, temb, train: bool):
        out = nn.Dense(self.width, kernel_init=default_init())(self.act(h))
        out = out + nn.Dense(self.width, kernel_init=default_init())(self.act(temb))
        out = nn.Dropout(self.dropout, deterministic=not train)(self.act(out))
        # A near-zero final layer starts every block as the identity.
        out = nn.Dense(self.width, kernel_init=default_init(0.0))(out)
        return h + out


@register_model("mlp")
class MLP(nn.Module):
    """Residual MLP ``__call__(x [B, ...], labels [B], train) -> [B, ...]``.

    ``labels`` are what `score_fns.get_labels` feeds: σ for continuous VE (use
    ``embedding_type='fourier'``, which embeds log σ), 999·t for VP/sub-VP, integer noise indices
    for discrete training (label 0 = σ_max). With ``scale_by_sigma`` the output is divided by σ:
    the label itself when it is a float, ``sigmas[label]`` with the descending geometric grid
    when it is an integer.
    """

    nf: int = 128
    num_layers: int = 3
    nonlinearity: str = "swish"
    embedding_type: str = "positional"
    fourier_scale: float = 16.0
    dropout: float = 0.0
    scale_by_sigma: bool = False
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 1000

    def __post_init__(self):
        if self.embedding_type not in EMBEDDING_TYPES:
            raise ValueError(
                f"model.embedding_type={self.embedding_type!r} is not valid; choose one of "
                f"{list(EMBEDDING_TYPES)}."
            )
        if self.num_layers < 0 or self.nf <= 0:
            raise ValueError(
                f"model.nf must be positive and model.num_layers non-negative, got nf={self.nf}, "
                f"num_layers={self.num_layers}."
            )
        get_act(self.nonlinearity)
        super().__post_init__()

    @classmethod
    def from_config(cls, config) -> "MLP":
        """Builds the network from ``config.model`` (keys in the module docstring)."""
        m = config.model
        return cls(
            nf=int(m.get("nf", 128)),
            num_layers=int(m.get("num_layers", 3)),
            nonlinearity=m.get("nonlinearity", "swish"),
            embedding_type=m.get("embedding_type", "positional").lower(),
            fourier_scale=float(m.get("fourier_scale", 16.0)),
            dropout=float(m.get("dropout", 0.0)),
            scale_by_sigma=bool(m.get("scale_by_sigma", False)),
            sigma_min=float(m.get("sigma_min", 0.01)),
            sigma_max=float(m.get("sigma_max", 50.0)),
            num_scales=int(m.get("num_scales", 1000)),
        )

    @nn.compact
    def __call__(self, x, labels, train: bool = False):
        act = get_act(self.nonlinearity)
        batch_shape = x.shape
        h = x.reshape(batch_shape[0], -1)

        if self.embedding_type == "fourier":
            temb = GaussianFourierProjection(embedding_size=self.nf, scale=self.fourier_scale)(
                jnp.log(labels)
            )
        else:
            temb = get_timestep_embedding(labels, self.nf)
        temb = nn.Dense(self.nf * 4, kernel_init=default_init())(temb)
        temb = nn.Dense(self.nf * 4, kernel_init=default_init())(act(temb))

        h = nn.Dense(self.nf, kernel_init=default_init())(h)
        for _ in range(self.num_layers):
            h = ResidualBlock(self.nf, act, self.dropout)(h, temb, train)
        # Zero-initialised output, like NCSN++'s init_scale=0: training starts from s = 0.
        out = nn.Dense(math.prod(batch_shape[1:]), kernel_init=default_init(0.0))(act(h))
        out = out.reshape(batch_shape)

        if self.scale_by_sigma:
            if jnp.issubdtype(labels.dtype, jnp.integer):
                sigmas = jnp.exp(
                    jnp.linspace(jnp.log(self.sigma_max), jnp.log(self.sigma_min), self.num_scales)
                )
                sigma = sigmas[labels]
            else:
                sigma = labels
            out = out / sigma.reshape((-1,) + (1,) * (out.ndim - 1))
        return out
