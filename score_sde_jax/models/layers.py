"""Building blocks shared by every score network (docs/original_code.md#networks).

Initialisers, activations, the DDPM 1×1 "network-in-network" layer, the two time embeddings,
the convolutions and GroupNorm of NCSN++ / DDPM++ and rematerialised blocks.
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
from jax import lax


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
    out_ch: int, stride: int = 1, init_scale: float = 1.0, use_bias: bool = True, dilation: int = 1
):
    """3×3 SAME convolution with the DDPM initialiser and zero bias."""
    return nn.Conv(
        out_ch,
        (3, 3),
        strides=(stride, stride),
        padding="SAME",
        kernel_dilation=(dilation, dilation),
        use_bias=use_bias,
        kernel_init=default_init(init_scale),
        bias_init=nn.initializers.zeros,
    )


def ddpm_conv1x1(out_ch: int, stride: int = 1, init_scale: float = 1.0, use_bias: bool = True):
    """1×1 convolution with the DDPM initialiser and zero bias."""
    return nn.Conv(
        out_ch,
        (1, 1),
        strides=(stride, stride),
        padding="SAME",
        use_bias=use_bias,
        kernel_init=default_init(init_scale),
        bias_init=nn.initializers.zeros,
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
# Convolutions with a fast CPU kernel gradient, GroupNorm and rematerialisation (NCSN++ / DDPM++).
# ----------------------------------------------------------------------------------------------

_NHWC = ("NHWC", "HWIO", "NHWC")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


def _conv_fwd(x, w, strides, padding):
    # Symbolic zeros: ``x.perturbed`` is False when no gradient flows into the input (the first
    # layer of a network differentiated for its parameters), and its gradient is not computed.
    residuals = (x.value, w.value) + (() if x.perturbed else (None,))
    return _conv(x.value, w.value, strides, padding), residuals


def _conv_bwd(strides, padding, residuals, dy):
    x, w = residuals[:2]
    if isinstance(dy, jax.custom_derivatives.SymbolicZero):  # the output is not used
        return None, None
    kh, kw, c_in, c_out = w.shape
    if len(residuals) == 3:
        dx = None
    elif strides == (1, 1):
        # The input gradient of a stride-1 convolution is again a plain convolution (with the
        # flipped, transposed kernel); written as one, it gets the same fast path as the forward.
        dx = lax.conv_general_dilated(
            dy,
            jnp.swapaxes(w[::-1, ::-1], 2, 3),
            (1, 1),
            (
                (kh - 1 - padding[0][0], kh - 1 - padding[0][1]),
                (kw - 1 - padding[1][0], kw - 1 - padding[1][1]),
            ),
            dimension_numbers=_NHWC,
        )
    else:
        _, vjp_x = jax.vjp(
            lambda x: lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC), x
        )
        (dx,) = vjp_x(dy)
    # XLA:CPU runs the kernel gradient as a convolution 3-4× slower than the forward pass; one
    # (C_in × B·H·W) @ (B·H·W × C_out) matmul per kernel tap takes about half as long.
    _, h_out, w_out, _ = dy.shape
    sh, sw = strides
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    dy_flat = dy.reshape(-1, c_out)
    taps = [
        lax.dot_general(
            xp[:, p : p + sh * (h_out - 1) + 1 : sh, q : q + sw * (w_out - 1) + 1 : sw].reshape(
                -1, c_in
            ),
            dy_flat,
            (((0,), (0,)), ((), ())),
        )
        for p in range(kh)
        for q in range(kw)
    ]
    dw = jnp.stack(taps).reshape(w.shape)
    return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd, symbolic_zeros=True)


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    **kwargs,
):
    """`lax.conv_general_dilated` with a faster kernel gradient for plain NHWC convolutions.

    Same forward computation (and input gradient); only the kernel gradient is computed as a
    sum of per-tap matmuls, and only on CPU: GPUs and TPUs have fast kernel-gradient
    convolutions of their own, and there (as for dilated, grouped or non-NHWC convolutions)
    `lax` is used unchanged, which also keeps forward-mode differentiation (`jax.jvp`) working.
    """
    plain = (
        jax.default_backend() == "cpu"
        and lhs.ndim == 4
        and all(d == 1 for d in (lhs_dilation or (1, 1)) + tuple(rhs_dilation or (1, 1)))
        and feature_group_count == 1
        and precision is None
        and not kwargs
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
        == lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers or _NHWC)
    )
    if not plain:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            precision=precision,
            **kwargs,
        )
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    return _conv(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding))


def conv3x3(out_ch: int, stride: int = 1, init_scale: float = 1.0, dtype: Any = jnp.float32):
    """DDPM-initialised 3×3 SAME convolution (as `ddpm_conv3x3`) with the fast kernel grad."""
    return nn.Conv(
        out_ch,
        (3, 3),
        strides=(stride, stride),
        padding="SAME",
        kernel_init=default_init(init_scale),
        bias_init=nn.initializers.zeros,
        dtype=dtype,
        conv_general_dilated=conv_general_dilated,
    )


def conv1x1(out_ch: int, init_scale: float = 1.0, dtype: Any = jnp.float32):
    """DDPM-initialised 1×1 convolution (as `ddpm_conv1x1`) with the fast kernel grad."""
    return nn.Conv(
        out_ch,
        (1, 1),
        padding="SAME",
        kernel_init=default_init(init_scale),
        bias_init=nn.initializers.zeros,
        dtype=dtype,
        conv_general_dilated=conv_general_dilated,
    )


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
