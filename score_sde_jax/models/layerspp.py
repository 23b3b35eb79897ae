"""Layers of NCSN++ / DDPM++ (docs/original_code.md#networks).

Class names and the order in which each block creates its submodules define the parameter paths
(``GroupNorm_0``, ``Conv_0``, ``Dense_0``, ``NIN_k``, ``Conv2d_0``, ...), which must equal the
released checkpoints' layout.
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from score_sde_jax.models import up_or_down_sampling as fir_ops
from score_sde_jax.models.layers import NIN, default_init

_SQRT2 = math.sqrt(2.0)
_NHWC = ("NHWC", "HWIO", "NHWC")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


def _conv_fwd(x, w, strides, padding):
    return _conv(x, w, strides, padding), (x, w)


def _conv_bwd(strides, padding, residuals, dy):
    x, w = residuals
    kh, kw, c_in, c_out = w.shape
    if strides == (1, 1):
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


_conv.defvjp(_conv_fwd, _conv_bwd)


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
    """DDPM-initialised 3×3 SAME convolution (as `layers.ddpm_conv3x3`) with the fast kernel grad."""
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
    """DDPM-initialised 1×1 convolution (as `layers.ddpm_conv1x1`) with the fast kernel grad."""
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


class Combine(nn.Module):
    """Merges the input pyramid into the feature map: conv1×1(x → C_y), then concat or sum."""

    method: str = "cat"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, y):
        h = conv1x1(y.shape[-1], dtype=self.dtype)(x)
        if self.method == "cat":
            return jnp.concatenate([h, y], axis=-1)
        if self.method == "sum":
            return h + y
        raise ValueError(f"Combine method {self.method!r} unknown; choose 'cat' or 'sum'.")


class AttnBlockpp(nn.Module):
    """Single-head self-attention over all H·W positions, with optional 1/√2 skip rescaling.

    The attention itself runs in float32 (the NIN projections promote to their float32 weights).
    """

    skip_rescale: bool = False
    init_scale: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, height, width, c = x.shape
        h = group_norm(c, self.dtype)(x)
        q = NIN(c)(h).reshape(b, height * width, c)
        k = NIN(c)(h).reshape(b, height * width, c)
        v = NIN(c)(h).reshape(b, height * width, c)
        w = jnp.einsum("bic,bjc->bij", q, k) * (c**-0.5)
        w = jax.nn.softmax(w, axis=-1)
        h = jnp.einsum("bij,bjc->bic", w, v).reshape(b, height, width, c)
        h = NIN(c, init_scale=self.init_scale)(h)
        out = (x + h) / _SQRT2 if self.skip_rescale else x + h
        return out.astype(self.dtype)


class Upsample(nn.Module):
    """×2 upsampling: nearest (+conv3×3) or FIR (`upsample_2d`, or the fused FIR `Conv2d`)."""

    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            h = fir_ops.naive_upsample_2d(x, factor=2)
            if self.with_conv:
                h = conv3x3(out_ch, dtype=self.dtype)(h)
            return h
        if not self.with_conv:
            return fir_ops.upsample_2d(x, self.fir_kernel, factor=2)
        return fir_ops.Conv2d(
            out_ch, kernel=3, up=True, resample_kernel=self.fir_kernel, dtype=self.dtype
        )(x)


class Downsample(nn.Module):
    """×2 downsampling: conv3×3 stride 2 or 2×2 mean, or FIR (`downsample_2d` / fused `Conv2d`)."""

    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            if self.with_conv:
                # Flax 'SAME' with stride 2 pads 0 before / 1 after on even sizes
                # (docs/original_code.md#networks).
                return conv3x3(out_ch, stride=2, dtype=self.dtype)(x)
            return fir_ops.naive_downsample_2d(x, factor=2)
        if not self.with_conv:
            return fir_ops.downsample_2d(x, self.fir_kernel, factor=2)
        return fir_ops.Conv2d(
            out_ch, kernel=3, down=True, resample_kernel=self.fir_kernel, dtype=self.dtype
        )(x)


class ResnetBlockDDPMpp(nn.Module):
    """DDPM residual block with NCSN++ GroupNorm, ``init_scale`` last conv and 1/√2 rescaling."""

    act: Callable
    out_ch: int | None = None
    conv_shortcut: bool = False
    dropout: float = 0.1
    skip_rescale: bool = False
    init_scale: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, temb=None, train: bool = False):
        c = x.shape[-1]
        out_ch = self.out_ch or c
        h = self.act(group_norm(c, self.dtype)(x))
        h = conv3x3(out_ch, dtype=self.dtype)(h)
        if temb is not None:
            dense = nn.Dense(out_ch, kernel_init=default_init(), dtype=self.dtype)
            h = h + dense(self.act(temb))[:, None, None, :]
        h = self.act(group_norm(out_ch, self.dtype)(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = conv3x3(out_ch, init_scale=self.init_scale, dtype=self.dtype)(h)
        if c != out_ch:
            if self.conv_shortcut:
                x = conv3x3(out_ch, dtype=self.dtype)(x)
            else:
                x = NIN(out_ch)(x).astype(self.dtype)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN-style residual block that can itself up- or downsample.

    See docs/original_code.md#networks.
    """

    act: Callable
    up: bool = False
    down: bool = False
    out_ch: int | None = None
    dropout: float = 0.1
    fir: bool = False
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    init_scale: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, temb=None, train: bool = False):
        c = x.shape[-1]
        out_ch = self.out_ch or c
        h = self.act(group_norm(c, self.dtype)(x))
        if self.up:
            if self.fir:
                h = fir_ops.upsample_2d(h, self.fir_kernel, factor=2)
                x = fir_ops.upsample_2d(x, self.fir_kernel, factor=2)
            else:
                h = fir_ops.naive_upsample_2d(h, factor=2)
                x = fir_ops.naive_upsample_2d(x, factor=2)
        elif self.down:
            if self.fir:
                h = fir_ops.downsample_2d(h, self.fir_kernel, factor=2)
                x = fir_ops.downsample_2d(x, self.fir_kernel, factor=2)
            else:
                h = fir_ops.naive_downsample_2d(h, factor=2)
                x = fir_ops.naive_downsample_2d(x, factor=2)
        h = conv3x3(out_ch, dtype=self.dtype)(h)
        if temb is not None:
            dense = nn.Dense(out_ch, kernel_init=default_init(), dtype=self.dtype)
            h = h + dense(self.act(temb))[:, None, None, :]
        h = self.act(group_norm(out_ch, self.dtype)(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = conv3x3(out_ch, init_scale=self.init_scale, dtype=self.dtype)(h)
        if c != out_ch or self.up or self.down:
            x = conv1x1(out_ch, dtype=self.dtype)(x)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


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
