"""Layers of NCSN++ / DDPM++ (facts §6.0 and §6.2).

Class names and the order in which each block creates its submodules define the parameter paths
(``GroupNorm_0``, ``Conv_0``, ``Dense_0``, ``NIN_k``, ``Conv2d_0``, ...), which must equal the
released checkpoints' layout.
"""

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde_jax.models import up_or_down_sampling as fir_ops
from score_sde_jax.models.layers import NIN, ddpm_conv1x1, ddpm_conv3x3, default_init

_SQRT2 = math.sqrt(2.0)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with min(C//4, 32) groups and epsilon 1e-6, as every NCSN++ layer uses."""
    return nn.GroupNorm(num_groups=min(channels // 4, 32), epsilon=1e-6)


class Combine(nn.Module):
    """Merges the input pyramid into the feature map: conv1×1(x → C_y), then concat or sum."""

    method: str = "cat"

    @nn.compact
    def __call__(self, x, y):
        h = ddpm_conv1x1(y.shape[-1])(x)
        if self.method == "cat":
            return jnp.concatenate([h, y], axis=-1)
        if self.method == "sum":
            return h + y
        raise ValueError(f"Combine method {self.method!r} unknown; choose 'cat' or 'sum'.")


class AttnBlockpp(nn.Module):
    """Single-head self-attention over all H·W positions, with optional 1/√2 skip rescaling."""

    skip_rescale: bool = False
    init_scale: float = 0.0

    @nn.compact
    def __call__(self, x):
        b, height, width, c = x.shape
        h = group_norm(c)(x)
        q = NIN(c)(h).reshape(b, height * width, c)
        k = NIN(c)(h).reshape(b, height * width, c)
        v = NIN(c)(h).reshape(b, height * width, c)
        w = jnp.einsum("bic,bjc->bij", q, k) * (c**-0.5)
        w = jax.nn.softmax(w, axis=-1)
        h = jnp.einsum("bij,bjc->bic", w, v).reshape(b, height, width, c)
        h = NIN(c, init_scale=self.init_scale)(h)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class Upsample(nn.Module):
    """×2 upsampling: nearest (+conv3×3) or FIR (`upsample_2d`, or the fused FIR `Conv2d`)."""

    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)

    @nn.compact
    def __call__(self, x):
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            h = fir_ops.naive_upsample_2d(x, factor=2)
            if self.with_conv:
                h = ddpm_conv3x3(out_ch)(h)
        elif not self.with_conv:
            h = fir_ops.upsample_2d(x, self.fir_kernel, factor=2)
        else:
            h = fir_ops.Conv2d(
                out_ch, kernel=3, up=True, resample_kernel=self.fir_kernel, use_bias=True
            )(x)
        return h


class Downsample(nn.Module):
    """×2 downsampling: conv3×3 stride 2 or 2×2 mean, or FIR (`downsample_2d` / fused `Conv2d`)."""

    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)

    @nn.compact
    def __call__(self, x):
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            if self.with_conv:
                # Flax 'SAME' with stride 2 pads 0 before / 1 after on even sizes (facts §6.0).
                return ddpm_conv3x3(out_ch, stride=2)(x)
            return fir_ops.naive_downsample_2d(x, factor=2)
        if not self.with_conv:
            return fir_ops.downsample_2d(x, self.fir_kernel, factor=2)
        return fir_ops.Conv2d(
            out_ch, kernel=3, down=True, resample_kernel=self.fir_kernel, use_bias=True
        )(x)


class ResnetBlockDDPMpp(nn.Module):
    """DDPM residual block with NCSN++ GroupNorm, ``init_scale`` last conv and 1/√2 rescaling."""

    act: Callable
    out_ch: int | None = None
    conv_shortcut: bool = False
    dropout: float = 0.1
    skip_rescale: bool = False
    init_scale: float = 0.0

    @nn.compact
    def __call__(self, x, temb=None, train: bool = False):
        c = x.shape[-1]
        out_ch = self.out_ch or c
        h = self.act(group_norm(c)(x))
        h = ddpm_conv3x3(out_ch)(h)
        if temb is not None:
            h = h + nn.Dense(out_ch, kernel_init=default_init())(self.act(temb))[:, None, None, :]
        h = self.act(group_norm(out_ch)(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = ddpm_conv3x3(out_ch, init_scale=self.init_scale)(h)
        if c != out_ch:
            x = ddpm_conv3x3(out_ch)(x) if self.conv_shortcut else NIN(out_ch)(x)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN-style residual block that can itself up- or downsample (facts §6.2)."""

    act: Callable
    up: bool = False
    down: bool = False
    out_ch: int | None = None
    dropout: float = 0.1
    fir: bool = False
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    init_scale: float = 0.0

    @nn.compact
    def __call__(self, x, temb=None, train: bool = False):
        c = x.shape[-1]
        out_ch = self.out_ch or c
        h = self.act(group_norm(c)(x))
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
        h = ddpm_conv3x3(out_ch)(h)
        if temb is not None:
            h = h + nn.Dense(out_ch, kernel_init=default_init())(self.act(temb))[:, None, None, :]
        h = self.act(group_norm(out_ch)(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = ddpm_conv3x3(out_ch, init_scale=self.init_scale)(h)
        if c != out_ch or self.up or self.down:
            x = ddpm_conv1x1(out_ch)(x)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h
