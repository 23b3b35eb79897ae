"""FIR up/down-sampling of NHWC images and the fused resampling convolution.

See docs/original_code.md#networks.

The operations follow StyleGAN2's ``upfirdn_2d`` family, which the original NCSN++ uses. A 1-D
kernel ``k`` stands for the 2-D kernel ``outer(k, k) / sum(outer(k, k))``; because that kernel is
separable, every FIR filter here runs as two 1-D passes (one per spatial axis) of strided slices
and multiply-adds, which XLA fuses into a few elementwise loops (same sums, reordered).
"""

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from score_sde_jax.models.layers import default_init

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def _setup_kernel_1d(k: Sequence[float] | None, factor: int, scale: float) -> np.ndarray:
    """Per-axis taps of the separable 2-D kernel ``outer(k, k) / sum(...) * scale``."""
    k = np.asarray([1.0] * factor if k is None else k, dtype=np.float64)
    if k.ndim != 1 or k.size == 0 or k.sum() == 0:
        raise ValueError(f"FIR kernel must be 1-D taps with a non-zero sum, got {k.tolist()}.")
    return k / k.sum() * math.sqrt(scale)


def _upfirdn_1d(x, taps: np.ndarray, axis: int, up: int, down: int, pad0: int, pad1: int):
    """``upfirdn`` along one axis: zero-insert, pad (<0 crops), convolve, keep every down-th."""
    config = [(0, 0, 0)] * x.ndim
    # upfirdn inserts up-1 zeros after every sample (also the last), i.e. interior padding plus
    # up-1 extra trailing zeros.
    config[axis] = (pad0, pad1 + up - 1, up - 1)
    x = lax.pad(x, jnp.zeros((), x.dtype), config)
    num_taps = len(taps)
    n_out = (x.shape[axis] - num_taps) // down + 1
    if n_out < 1:
        raise ValueError(f"upfirdn output along axis {axis} would be empty (input {x.shape}).")
    out = None
    # A true convolution is a correlation with the flipped kernel.
    for j, tap in enumerate(taps[::-1]):
        if tap == 0:
            continue
        term = lax.slice_in_dim(x, j, j + (n_out - 1) * down + 1, stride=down, axis=axis)
        term = term * jnp.asarray(tap, x.dtype)
        out = term if out is None else out + term
    return out


def upfirdn_2d(x, k: Sequence[float], up: int = 1, down: int = 1, pad0: int = 0, pad1: int = 0):
    """Upsample, FIR-filter and downsample each channel of ``x`` [B, H, W, C]
    (docs/original_code.md#networks).

    Along both spatial axes: insert ``up - 1`` zeros after each pixel, pad ``pad0`` before and
    ``pad1`` after (negative values crop), convolve with the 2-D kernel ``outer(k, k)`` (``k`` used
    as given, not normalised) and keep every ``down``-th pixel.

    Args:
      x: images, NHWC.
      k: 1-D taps of the separable kernel.
      up, down: integer up- and down-sampling factors.
      pad0, pad1: padding before/after on each spatial axis.

    Returns:
      The filtered images, [B, (H·up + pad0 + pad1 − K)//down + 1, ..., C].
    """
    taps = np.asarray(k, dtype=np.float64)
    if taps.ndim != 1:
        raise ValueError(f"upfirdn_2d expects 1-D separable taps, got shape {taps.shape}.")
    x = _upfirdn_1d(x, taps, 1, up, down, pad0, pad1)
    return _upfirdn_1d(x, taps, 2, up, down, pad0, pad1)


def upsample_2d(x, k: Sequence[float] | None = None, factor: int = 2, gain: float = 1.0):
    """FIR upsampling by ``factor`` (kernel scaled by gain·factor²): [B,H,W,C] → [B,fH,fW,C]."""
    taps = _setup_kernel_1d(k, factor, gain * factor**2)
    p = len(taps) - factor
    return upfirdn_2d(x, taps, up=factor, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2)


def downsample_2d(x, k: Sequence[float] | None = None, factor: int = 2, gain: float = 1.0):
    """FIR downsampling by ``factor``: [B,H,W,C] → [B,H/f,W/f,C]."""
    taps = _setup_kernel_1d(k, factor, gain)
    p = len(taps) - factor
    return upfirdn_2d(x, taps, down=factor, pad0=(p + 1) // 2, pad1=p // 2)


def upsample_conv_2d(x, w, k: Sequence[float] | None = None, factor: int = 2, gain: float = 1.0):
    """Fused zero-insertion upsampling, convolution with ``w`` [kh, kw, C_in, C_out] and FIR blur.

    Equals StyleGAN2's stride-``factor`` transposed convolution (``conv2d_transpose`` with the
    spatially flipped, in/out-swapped weight) followed by ``upfirdn_2d``: the transposed
    convolution is a plain correlation with ``w`` over the zero-dilated input padded by kh−1.
    Output: [B, fH, fW, C_out].
    """
    kh, kw = w.shape[0], w.shape[1]
    if kh != kw:
        raise ValueError(f"upsample_conv_2d needs a square kernel, got {kh}×{kw}.")
    taps = _setup_kernel_1d(k, factor, gain * factor**2)
    p = (len(taps) - factor) - (kw - 1)
    x = lax.conv_general_dilated(
        x,
        w,
        window_strides=(1, 1),
        padding=((kh - 1, kh - 1), (kw - 1, kw - 1)),
        lhs_dilation=(factor, factor),
        dimension_numbers=_DIMENSION_NUMBERS,
    )
    return upfirdn_2d(x, taps, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2 + 1)


def conv_downsample_2d(x, w, k: Sequence[float] | None = None, factor: int = 2, gain: float = 1.0):
    """FIR blur, then stride-``factor`` VALID conv with ``w``: [B,H,W,C_in] → [B,H/f,W/f,C_out]."""
    kh, kw = w.shape[0], w.shape[1]
    if kh != kw:
        raise ValueError(f"conv_downsample_2d needs a square kernel, got {kh}×{kw}.")
    taps = _setup_kernel_1d(k, factor, gain)
    p = (len(taps) - factor) + (kw - 1)
    x = upfirdn_2d(x, taps, pad0=(p + 1) // 2, pad1=p // 2)
    return lax.conv_general_dilated(
        x, w, window_strides=(factor, factor), padding="VALID", dimension_numbers=_DIMENSION_NUMBERS
    )


def _repeat_pixels(x, factor: int):
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, factor, w, factor, c))
    return x.reshape(b, h * factor, w * factor, c)


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def naive_upsample_2d(x, factor: int = 2):
    """Nearest-neighbour upsampling (each pixel repeated factor×factor times).

    Its gradient sums each factor×factor window of the cotangent. Left to itself, XLA:CPU fuses
    that sum with the convolution gradient that produces the cotangent and runs both through
    YNNPACK at half the speed of the package's Eigen convolutions (docs/performance.md, "Fusions
    that cost"). The tangent rule ends in an ``optimization_barrier``, whose transpose keeps the
    two apart in reverse mode; forward mode (the likelihood's JVPs) works as before. Same values.
    """
    return _repeat_pixels(x, factor)


@naive_upsample_2d.defjvp
def _naive_upsample_2d_jvp(factor, primals, tangents):
    return _repeat_pixels(primals[0], factor), lax.optimization_barrier(
        _repeat_pixels(tangents[0], factor)
    )


def naive_downsample_2d(x, factor: int = 2):
    """Mean pooling over non-overlapping factor×factor windows."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // factor, factor, w // factor, factor, c)
    return jnp.mean(x, axis=(2, 4))


class Conv2d(nn.Module):
    """Convolution with optional fused FIR up/down-sampling (params ``weight`` HWIO, ``bias``).

    Attributes:
      fmaps: output channels.
      kernel: (odd) spatial kernel size.
      up: zero-insertion ×2 upsampling + conv + FIR blur (`upsample_conv_2d`).
      down: FIR blur + stride-2 conv (`conv_downsample_2d`).
      resample_kernel: 1-D FIR taps.
      use_bias: add a (zero-initialised) bias.
      kernel_init: initialiser of ``weight``.
      dtype: computation dtype (parameters stay float32).
    """

    fmaps: int
    kernel: int
    up: bool = False
    down: bool = False
    resample_kernel: tuple[int, ...] = (1, 3, 3, 1)
    use_bias: bool = True
    kernel_init: Callable = default_init()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        if self.up and self.down:
            raise ValueError("Conv2d cannot both upsample and downsample.")
        if self.kernel < 1 or self.kernel % 2 != 1:
            raise ValueError(
                f"Conv2d kernel size must be a positive odd integer, got {self.kernel}."
            )
        w = self.param(
            "weight", self.kernel_init, (self.kernel, self.kernel, x.shape[-1], self.fmaps)
        ).astype(self.dtype)
        x = x.astype(self.dtype)
        if self.up:
            x = upsample_conv_2d(x, w, k=self.resample_kernel)
        elif self.down:
            x = conv_downsample_2d(x, w, k=self.resample_kernel)
        else:
            x = lax.conv_general_dilated(
                x, w, window_strides=(1, 1), padding="SAME", dimension_numbers=_DIMENSION_NUMBERS
            )
        if self.use_bias:
            x = x + self.param("bias", nn.initializers.zeros, (self.fmaps,)).astype(self.dtype)
        return x
