"""The DDPM U-Net (Ho et al. 2020) as ported by score_sde, registered as ``model.name = 'ddpm'``.

See docs/original_code.md#networks. This is the port's topology, not Ho et al.'s exactly
(docs/original_code.md, D20): one attention block per up-sampling level (after its residual blocks)
and NIN init scale 0.1, giving 35,218,947 parameters on CIFAR-10 (32,329,347 unconditional;
111,569,923 for the 256-px configs).

Labels: with ``conditional`` the label goes straight into the sinusoidal embedding, so it may be
a float (VP: 999·t continuous, (N−1)·t discrete, unrounded) or an integer (VE discrete);
``scale_by_sigma`` divides the output by σ[label] from the descending VE table and therefore
needs integer labels.
"""

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde_jax.models import register_model
from score_sde_jax.models.layers import (
    NIN,
    concat_skip,
    ddpm_conv3x3,
    default_init,
    get_act,
    get_timestep_embedding,
    rematerialized,
    sigmas_of_labels,
)
from score_sde_jax.models.normalization import get_normalization


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


@register_model("ddpm")
class DDPM(nn.Module):
    """Noise-prediction U-Net: ResNet levels with attention, skip connections by concatenation.

    Attributes:
      nf: base channel count (multiple of 32 because of the 32-group GroupNorm).
      ch_mult: channel multiplier per resolution level.
      num_res_blocks: residual blocks per level on the way down (one more on the way up).
      attn_resolutions: spatial sizes at which attention is applied.
      dropout: dropout rate inside the residual blocks (active only with ``train=True``).
      resamp_with_conv: convolutional (instead of pooling / plain nearest) resampling.
      conditional: feed the label through a sinusoidal time embedding.
      centered: inputs already in [-1, 1]; otherwise x ∈ [0, 1] is mapped to 2x - 1.
      scale_by_sigma: divide the output by σ[label] (VE discrete, e.g. ve/cifar10_ddpm).
      sigma_min, sigma_max, num_scales: the VE noise table used by ``scale_by_sigma``.
      nonlinearity: activation name (`layers.get_act`).
      normalization: normalization name (`normalization.get_normalization`), 'GroupNorm' in
        every original config.
      remat: recompute each residual and attention block's activations in the backward pass
        (``config.model.remat``, not an original key; `rematerialized`). The parameter
        tree is the same either way.
    """

    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    centered: bool = True
    scale_by_sigma: bool = False
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 1000
    nonlinearity: str = "swish"
    normalization: str = "GroupNorm"
    remat: bool = False

    @classmethod
    def from_config(cls, config):
        """Builds the network from an original-style config (``config.model.*``, ``config.data``)."""
        m = config.model
        return cls(
            nf=m.nf,
            ch_mult=tuple(m.ch_mult),
            num_res_blocks=m.num_res_blocks,
            attn_resolutions=tuple(m.attn_resolutions),
            dropout=m.dropout,
            resamp_with_conv=m.resamp_with_conv,
            conditional=m.conditional,
            centered=config.data.centered,
            scale_by_sigma=m.scale_by_sigma,
            sigma_min=m.sigma_min,
            sigma_max=m.sigma_max,
            num_scales=m.num_scales,
            nonlinearity=m.nonlinearity,
            normalization=m.normalization,
            remat=m.get("remat", False),
        )

    def _check(self):
        if self.normalization == "GroupNorm":
            bad = [self.nf * m for m in self.ch_mult if (self.nf * m) % 32]
            if bad:
                raise ValueError(
                    "DDPM normalises with 32-group GroupNorm: every channel count nf·ch_mult must "
                    f"be a multiple of 32, got {bad} (nf={self.nf}, ch_mult={self.ch_mult})."
                )

    @nn.compact
    def __call__(self, x, labels, train: bool = False):
        """Raw network output (predicted noise, or the score when ``scale_by_sigma``).

        Args:
          x: images [B, H, W, C].
          labels: [B] time labels (see module docstring).
          train: enables dropout (needs ``rngs={'dropout': key}``).
        """
        self._check()
        act = get_act(self.nonlinearity)
        normalize = get_normalization(self.normalization)
        attn_cls, resnet_cls = AttnBlock, ResnetBlockDDPM
        if self.remat:  # `train` (argument 3 of the block's call) selects Python control flow
            attn_cls = rematerialized(AttnBlock)
            resnet_cls = rematerialized(ResnetBlockDDPM, static_argnums=(3,))
        attn_block = functools.partial(attn_cls, normalize=normalize)
        resnet_block = functools.partial(
            resnet_cls, act=act, normalize=normalize, dropout=self.dropout
        )
        num_resolutions = len(self.ch_mult)

        if self.conditional:
            temb = get_timestep_embedding(labels, self.nf)
            temb = nn.Dense(self.nf * 4, kernel_init=default_init())(temb)
            temb = nn.Dense(self.nf * 4, kernel_init=default_init())(act(temb))
        else:
            temb = None

        h = x if self.centered else 2 * x - 1.0

        # Down path: every block output is kept for the skip connections.
        hs = [ddpm_conv3x3(self.nf)(h)]
        for i_level in range(num_resolutions):
            for _ in range(self.num_res_blocks):
                h = resnet_block(out_ch=self.nf * self.ch_mult[i_level])(hs[-1], temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = attn_block()(h)
                hs.append(h)
            if i_level != num_resolutions - 1:
                hs.append(Downsample(with_conv=self.resamp_with_conv)(hs[-1]))

        h = hs[-1]
        h = resnet_block()(h, temb, train)
        h = attn_block()(h)
        h = resnet_block()(h, temb, train)

        # Up path: one attention per level, after its residual blocks (score_sde's port).
        for i_level in reversed(range(num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                h = resnet_block(out_ch=self.nf * self.ch_mult[i_level])(
                    concat_skip(h, hs.pop()), temb, train
                )
            if h.shape[1] in self.attn_resolutions:
                h = attn_block()(h)
            if i_level != 0:
                h = Upsample(with_conv=self.resamp_with_conv)(h)

        h = act(normalize()(h))
        h = ddpm_conv3x3(x.shape[-1], init_scale=0.0)(h)

        if self.scale_by_sigma:
            h = h / sigmas_of_labels(labels, self.sigma_min, self.sigma_max, self.num_scales)
        return h
