"""Blocks of the DDPM U-Net (Ho et al. 2020, as ported by score_sde;
docs/original_code.md#networks).

Class names and the order in which each block creates its layers reproduce the original, so the
released parameter trees load without renaming (``ResnetBlockDDPM_k/{GroupNorm_0, Conv_0,
Dense_0, GroupNorm_1, Conv_1, NIN_0}``, ``AttnBlock_k/{GroupNorm_0, NIN_0..3}``,
``Downsample_k/Conv_0``, ``Upsample_k/Conv_0``).
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde_jax.models.layers import NIN, ddpm_conv3x3, default_init


class ResnetBlockDDPM(nn.Module):
    """Pre-activation residual block with an additive time embedding.

    h = conv(act(GN(x))) + Dense(act(temb)); h = conv₀(dropout(act(GN(h)))); out = shortcut(x) + h,
    where conv₀ starts (almost) at zero (init scale 1e-10) and the shortcut is a 1×1 NIN
    (or a 3×3 conv with ``conv_shortcut``) when the channel count changes.
    """

    act: Callable
    normalize: Callable[[], nn.Module]
    out_ch: int | None = None
    conv_shortcut: bool = False
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x, temb=None, train: bool = False):
        channels = x.shape[-1]
        out_ch = self.out_ch if self.out_ch else channels
        h = self.act(self.normalize()(x))
        h = ddpm_conv3x3(out_ch)(h)
        if temb is not None:
            temb_proj = nn.Dense(out_ch, kernel_init=default_init())(self.act(temb))
            h = h + temb_proj[:, None, None, :]
        h = self.act(self.normalize()(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = ddpm_conv3x3(out_ch, init_scale=0.0)(h)
        if channels != out_ch:
            x = ddpm_conv3x3(out_ch)(x) if self.conv_shortcut else NIN(out_ch)(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all H·W positions with a residual connection
    (docs/original_code.md#networks)."""

    normalize: Callable[[], nn.Module]

    @nn.compact
    def __call__(self, x):
        batch, height, width, channels = x.shape
        h = self.normalize()(x)
        q = NIN(channels)(h).reshape(batch, height * width, channels)
        k = NIN(channels)(h).reshape(batch, height * width, channels)
        v = NIN(channels)(h).reshape(batch, height * width, channels)
        w = jnp.einsum("bic,bjc->bij", q, k) * (int(channels) ** (-0.5))
        w = jax.nn.softmax(w, axis=-1)
        h = jnp.einsum("bij,bjc->bic", w, v).reshape(batch, height, width, channels)
        h = NIN(channels, init_scale=0.0)(h)
        return x + h


class Upsample(nn.Module):
    """Nearest-neighbour ×2 upsampling, optionally followed by a 3×3 convolution."""

    out_ch: int | None = None
    with_conv: bool = False

    @nn.compact
    def __call__(self, x):
        out_ch = self.out_ch if self.out_ch else x.shape[-1]
        h = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        if self.with_conv:
            h = ddpm_conv3x3(out_ch)(h)
        return h


class Downsample(nn.Module):
    """×2 downsampling: 3×3 stride-2 SAME convolution (pads 0 before / 1 after) or 2×2 mean pool."""

    out_ch: int | None = None
    with_conv: bool = False

    @nn.compact
    def __call__(self, x):
        out_ch = self.out_ch if self.out_ch else x.shape[-1]
        if self.with_conv:
            return ddpm_conv3x3(out_ch, stride=2)(x)
        if out_ch != x.shape[-1]:
            raise ValueError("Downsample without a convolution cannot change the channel count.")
        return nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2), padding="SAME")
