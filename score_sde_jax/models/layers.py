"""Building blocks shared by every score network (docs/original_code.md#networks).

Initialisers, activations, the DDPM convolutions and 1×1 "network-in-network" layer, the two
time embeddings, the GroupNorm of NCSN++ / DDPM++ and rematerialised blocks.
Class names matter: Flax auto-names submodules ``<ClassName>_<k>``, and the released checkpoints
store parameters under those names.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def get_act(name: str):
    """Activation by its config name (`model.nonlinearity`)."""
    acts = {
        "elu": nn.elu,
        "relu": nn.relu,
        "lrelu": lambda x: nn.leaky_relu(x, negative_slope=0.2),
        "swish": nn.swish,
    }
    try:
        return acts[name.lower()]
    except KeyError:
        raise ValueError(f"Unknown nonlinearity {name!r}; choose one of {sorted(acts)}.") from None


def default_init(scale: float = 1.0):
    """DDPM initialiser: variance scaling, fan_avg, uniform; scale 0 becomes 1e-10."""
    scale = 1e-10 if scale == 0 else scale
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


def ncsn_init(scale: float = 1.0):
    """PyTorch's default conv init (U(±1/sqrt(fan_in)) for scale 1), used by NCSN/NCSNv2."""
    scale = 1e-10 if scale == 0 else scale
    return nn.initializers.variance_scaling(scale / 3.0, "fan_in", "uniform")


def ddpm_conv3x3(
    out_ch: int,
    stride: int = 1,
    init_scale: float = 1.0,
    use_bias: bool = True,
    dilation: int = 1,
    dtype: Any = jnp.float32,
):
    """3×3 SAME convolution with the DDPM initialiser and zero bias, computed in ``dtype``."""
    return nn.Conv(
        out_ch,
        (3, 3),
        strides=(stride, stride),
        padding="SAME",
        kernel_dilation=(dilation, dilation),
        use_bias=use_bias,
        kernel_init=default_init(init_scale),
        bias_init=nn.initializers.zeros,
        dtype=dtype,
    )


def ddpm_conv1x1(
    out_ch: int,
    stride: int = 1,
    init_scale: float = 1.0,
    use_bias: bool = True,
    dtype: Any = jnp.float32,
):
    """1×1 convolution with the DDPM initialiser and zero bias, computed in ``dtype``."""
    return nn.Conv(
        out_ch,
        (1, 1),
        strides=(stride, stride),
        padding="SAME",
        use_bias=use_bias,
        kernel_init=default_init(init_scale),
        bias_init=nn.initializers.zeros,
        dtype=dtype,
    )


class NIN(nn.Module):
    """Dense layer over the channel axis with parameters ``W`` [C_in, C_out] and ``b``."""

    num_units: int
    init_scale: float = 0.1

    @nn.compact
    def __call__(self, x):
        in_dim = x.shape[-1]
        W = self.param("W", default_init(self.init_scale), (in_dim, self.num_units))
        b = self.param("b", nn.initializers.zeros, (self.num_units,))
        return jnp.einsum("...c,cd->...d", x, W) + b


def get_timestep_embedding(timesteps, embedding_dim: int, max_positions: int = 10000):
    """Sinusoidal embedding of (float) labels, DDPM style: ``[sin(t f_k), cos(t f_k)]``.

    f_k = exp(-k ln(max_positions) / (half - 1)), k = 0..half-1; zero-padded when the
    dimension is odd.
    """
    assert timesteps.ndim == 1
    half_dim = embedding_dim // 2
    freq = jnp.exp(
        jnp.arange(half_dim, dtype=jnp.float32) * -(math.log(max_positions) / (half_dim - 1))
    )
    emb = timesteps.astype(jnp.float32)[:, None] * freq[None, :]
    emb = jnp.concatenate([jnp.sin(emb), jnp.cos(emb)], axis=1)
    if embedding_dim % 2 == 1:
        emb = jnp.pad(emb, [[0, 0], [0, 1]])
    return emb


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of a scalar (Tancik et al.); ``W`` ~ N(0, scale²) is never trained."""

    embedding_size: int = 256
    scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        W = self.param("W", jax.nn.initializers.normal(stddev=self.scale), (self.embedding_size,))
        W = jax.lax.stop_gradient(W)
        x_proj = x[:, None] * W[None, :] * 2 * jnp.pi
        return jnp.concatenate([jnp.sin(x_proj), jnp.cos(x_proj)], axis=-1)


def get_sigmas(sigma_min: float, sigma_max: float, num_scales: int):
    """Discrete VE noise levels exp(linspace(log σ_max, log σ_min, N)), DESCENDING (label 0 = σ_max).

    Computed in float64 like the original (numpy), then stored as float32
    (docs/original_code.md#sdes-and-time-conditioning).
    """
    sigmas = np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_scales))
    return jnp.asarray(sigmas, dtype=jnp.float32)


def sigmas_of_labels(labels, sigma_min: float, sigma_max: float, num_scales: int):
    """σ[labels] from `get_sigmas`, shaped [B, 1, 1, 1] for `scale_by_sigma` (integer labels only)."""
    dtype = jnp.asarray(labels).dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(
            "scale_by_sigma divides by sigmas[labels] and needs integer noise-level labels "
            f"(0 = sigma_max), got dtype {dtype}."
        )
    return get_sigmas(sigma_min, sigma_max, num_scales)[labels][:, None, None, None]


# ----------------------------------------------------------------------------------------------
# Skip connections (the U-Nets' up paths).
# ----------------------------------------------------------------------------------------------


@jax.custom_jvp
def concat_skip(h, skip):
    """``concatenate([h, skip], axis=-1)``: a U-Net up path's input with its skip connection.

    Its gradient is the cotangent split in two. Written by autodiff, XLA:CPU fuses the split into
    every consumer and computes the residual blocks' gradient chain again in each (DDPM++: four
    copies, 114 ms per step). The tangent rule ends in an ``optimization_barrier``, whose transpose
    makes reverse mode compute the cotangent once (docs/performance.md, "Fusions that cost");
    forward mode works as before. Same values.
    """
    return jnp.concatenate([h, skip], axis=-1)


@concat_skip.defjvp
def _concat_skip_jvp(primals, tangents):
    return concat_skip(*primals), jax.lax.optimization_barrier(jnp.concatenate(tangents, axis=-1))


# ----------------------------------------------------------------------------------------------
# GroupNorm and rematerialisation (NCSN++ / DDPM++).
# ----------------------------------------------------------------------------------------------


def group_norm(channels: int, dtype: Any = jnp.float32) -> nn.GroupNorm:
    """GroupNorm with min(C//4, 32) groups and epsilon 1e-6, as every NCSN++ layer uses.

    Flax normalises in float32 whatever ``dtype`` is, so with a lower-precision ``dtype`` the
    backward pass would keep a float32 copy of every normalised activation and bfloat16 would
    save little memory; there the normalisation is recomputed from its (low-precision) input.
    """
    norm = nn.GroupNorm if jnp.dtype(dtype) == jnp.float32 else rematerialized(nn.GroupNorm)
    return norm(num_groups=min(channels // 4, 32), epsilon=1e-6, dtype=dtype)


@functools.cache
def rematerialized(block: type[nn.Module], static_argnums: tuple[int, ...] = ()) -> type[nn.Module]:
    """``nn.remat`` of a module class whose parameter paths equal the plain class's.

    The block's activations are recomputed in the backward pass instead of stored; only its
    inputs are kept (activation checkpointing, Chen et al. 2016). Flax names a submodule after
    its class (``ResnetBlockBigGANpp_3``) while the lifted class is called
    ``CheckpointResnetBlockBigGANpp``, so the name is set back: checkpoints load either way.
    ``static_argnums`` counts ``self`` as 0 and marks arguments that select Python control flow
    (the residual blocks' ``train``, argument 3 of ``(self, x, temb, train)``).
    """
    lifted = nn.remat(block, static_argnums=static_argnums)
    lifted.__name__ = lifted.__qualname__ = block.__name__
    return lifted
