"""NCSN++ and DDPM++ (Song et al. 2021, App. H): one configurable U-Net.

NCSN++ = BigGAN residual blocks + FIR resampling + an input pyramid; DDPM++ is the same class
without FIR and pyramid. The parameter tree equals the original's (module class names and
creation order), except that GroupNorm ``scale``/``bias`` have modern Flax's (C,) shape instead
of the released checkpoints' (1, 1, 1, C).
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax.models import fir, register_model
from score_sde_jax.models.layers import (
    NIN,
    GaussianFourierProjection,
    concat_skip,
    ddpm_conv1x1,
    ddpm_conv3x3,
    default_init,
    get_act,
    get_timestep_embedding,
    group_norm,
    rematerialized,
)

_SQRT2 = math.sqrt(2.0)

RESBLOCK_TYPES = ("ddpm", "biggan")
PROGRESSIVE = ("none", "output_skip", "residual")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
PROGRESSIVE_COMBINE = ("sum", "cat")
EMBEDDING_TYPES = ("fourier", "positional")


class Combine(nn.Module):
    """Merges the input pyramid into the feature map: conv1×1(x → C_y), then concat or sum."""

    method: str = "cat"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, y):
        h = ddpm_conv1x1(y.shape[-1], dtype=self.dtype)(x)
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
            h = fir.naive_upsample_2d(x, factor=2)
            if self.with_conv:
                h = ddpm_conv3x3(out_ch, dtype=self.dtype)(h)
            return h
        if not self.with_conv:
            return fir.upsample_2d(x, self.fir_kernel, factor=2)
        return fir.Conv2d(
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
                return ddpm_conv3x3(out_ch, stride=2, dtype=self.dtype)(x)
            return fir.naive_downsample_2d(x, factor=2)
        if not self.with_conv:
            return fir.downsample_2d(x, self.fir_kernel, factor=2)
        return fir.Conv2d(
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
        h = ddpm_conv3x3(out_ch, dtype=self.dtype)(h)
        if temb is not None:
            dense = nn.Dense(out_ch, kernel_init=default_init(), dtype=self.dtype)
            h = h + dense(self.act(temb))[:, None, None, :]
        h = self.act(group_norm(out_ch, self.dtype)(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = ddpm_conv3x3(out_ch, init_scale=self.init_scale, dtype=self.dtype)(h)
        if c != out_ch:
            if self.conv_shortcut:
                x = ddpm_conv3x3(out_ch, dtype=self.dtype)(x)
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
                h = fir.upsample_2d(h, self.fir_kernel, factor=2)
                x = fir.upsample_2d(x, self.fir_kernel, factor=2)
            else:
                h = fir.naive_upsample_2d(h, factor=2)
                x = fir.naive_upsample_2d(x, factor=2)
        elif self.down:
            if self.fir:
                h = fir.downsample_2d(h, self.fir_kernel, factor=2)
                x = fir.downsample_2d(x, self.fir_kernel, factor=2)
            else:
                h = fir.naive_downsample_2d(h, factor=2)
                x = fir.naive_downsample_2d(x, factor=2)
        h = ddpm_conv3x3(out_ch, dtype=self.dtype)(h)
        if temb is not None:
            dense = nn.Dense(out_ch, kernel_init=default_init(), dtype=self.dtype)
            h = h + dense(self.act(temb))[:, None, None, :]
        h = self.act(group_norm(out_ch, self.dtype)(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = ddpm_conv3x3(out_ch, init_scale=self.init_scale, dtype=self.dtype)(h)
        if c != out_ch or self.up or self.down:
            x = ddpm_conv1x1(out_ch, dtype=self.dtype)(x)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"model.{field}={value!r} is not valid; choose one of {list(choices)}.")


@register_model("ncsnpp")
class NCSNpp(nn.Module):
    """NCSN++ / DDPM++ score network, ``__call__(x [B,H,W,C], time_cond [B], train)``.

    ``time_cond`` is σ for ``embedding_type='fourier'`` (the embedding sees log σ) and the raw
    label (999t, (N−1)t or an integer noise index) for ``'positional'``. With ``scale_by_sigma``
    the output is divided by σ: the label itself (Fourier) or ``sigmas[int(label)]`` with
    ``sigmas = exp(linspace(log σ_max, log σ_min, N))`` (positional).

    Attributes mirror ``config.model`` (docs/original_code.md#networks; docs/configs.md);
    ``centered`` is ``config.data.centered`` (inputs in [0, 1] are mapped to [−1, 1] when False).
    ``dtype`` is the computation dtype of convolutions, GroupNorms and dense layers
    (``config.model.dtype``, not an original key; default float32, which reproduces the original).
    Parameters, the Fourier/sinusoidal features, attention and the returned output stay float32, so
    losses and optimizer state are float32 too. ``remat`` (``config.model.remat``, not an original
    key, default False) recomputes the activations of every residual and attention block in the
    backward pass instead of storing them (`rematerialized`): less memory for about
    one more forward pass per step, same parameter tree and same values.
    """

    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    fir: bool = True
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    resblock_type: str = "biggan"
    progressive: str = "none"
    progressive_input: str = "residual"
    progressive_combine: str = "sum"
    embedding_type: str = "fourier"
    fourier_scale: float = 16.0
    init_scale: float = 0.0
    scale_by_sigma: bool = True
    centered: bool = False
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 1000
    nonlinearity: str = "swish"
    dtype: Any = jnp.float32
    remat: bool = False

    def __post_init__(self):
        _check_choice("resblock_type", self.resblock_type, RESBLOCK_TYPES)
        _check_choice("progressive", self.progressive, PROGRESSIVE)
        _check_choice("progressive_input", self.progressive_input, PROGRESSIVE_INPUT)
        _check_choice("progressive_combine", self.progressive_combine, PROGRESSIVE_COMBINE)
        _check_choice("embedding_type", self.embedding_type, EMBEDDING_TYPES)
        get_act(self.nonlinearity)
        super().__post_init__()

    @classmethod
    def from_config(cls, config) -> "NCSNpp":
        """Builds the network from a config with the original keys (``config.model.*``).

        Raises:
          ValueError: an unknown switch value, or Fourier features without continuous training
            (the Fourier embedding takes log σ, which only continuous VE training feeds in).
        """
        m = config.model
        embedding_type = m.embedding_type.lower()
        if embedding_type == "fourier" and not config.training.continuous:
            raise ValueError(
                "model.embedding_type='fourier' needs training.continuous=True (the network is fed"
                " σ); use embedding_type='positional' for discrete training."
            )
        return cls(
            nf=m.nf,
            ch_mult=tuple(m.ch_mult),
            num_res_blocks=m.num_res_blocks,
            attn_resolutions=tuple(m.attn_resolutions),
            dropout=m.dropout,
            resamp_with_conv=m.resamp_with_conv,
            conditional=m.conditional,
            fir=m.fir,
            fir_kernel=tuple(m.get("fir_kernel", (1, 3, 3, 1))),
            skip_rescale=m.skip_rescale,
            resblock_type=m.resblock_type.lower(),
            progressive=m.progressive.lower(),
            progressive_input=m.progressive_input.lower(),
            progressive_combine=m.progressive_combine.lower(),
            embedding_type=embedding_type,
            fourier_scale=m.get("fourier_scale", 16.0),
            init_scale=m.init_scale,
            scale_by_sigma=m.scale_by_sigma,
            centered=config.data.centered,
            sigma_min=m.sigma_min,
            sigma_max=m.sigma_max,
            num_scales=m.num_scales,
            nonlinearity=m.nonlinearity.lower(),
            dtype=jnp.dtype(m.get("dtype", "float32")),
            remat=m.get("remat", False),
        )

    @nn.compact
    def __call__(self, x, time_cond, train: bool = False):
        act = get_act(self.nonlinearity)
        nf = self.nf
        num_resolutions = len(self.ch_mult)
        channels = x.shape[-1]

        # 1. Time / noise-level embedding.
        if self.embedding_type == "fourier":
            temb = GaussianFourierProjection(embedding_size=nf, scale=self.fourier_scale)(
                jnp.log(time_cond)
            )
        else:
            temb = get_timestep_embedding(time_cond, nf)
        if self.conditional:
            temb = nn.Dense(nf * 4, kernel_init=default_init(), dtype=self.dtype)(temb)
            temb = nn.Dense(nf * 4, kernel_init=default_init(), dtype=self.dtype)(act(temb))
        else:
            temb = None

        def block_class(cls, static_argnums=()):
            return rematerialized(cls, static_argnums) if self.remat else cls

        attn_block = functools.partial(
            block_class(AttnBlockpp),
            init_scale=self.init_scale,
            skip_rescale=self.skip_rescale,
            dtype=self.dtype,
        )
        if self.resblock_type == "biggan":
            resnet_block = functools.partial(
                block_class(ResnetBlockBigGANpp, static_argnums=(3,)),
                act=act,
                dropout=self.dropout,
                fir=self.fir,
                fir_kernel=self.fir_kernel,
                init_scale=self.init_scale,
                skip_rescale=self.skip_rescale,
                dtype=self.dtype,
            )
        else:
            resnet_block = functools.partial(
                block_class(ResnetBlockDDPMpp, static_argnums=(3,)),
                act=act,
                dropout=self.dropout,
                init_scale=self.init_scale,
                skip_rescale=self.skip_rescale,
                dtype=self.dtype,
            )
        resample = dict(fir=self.fir, fir_kernel=self.fir_kernel, dtype=self.dtype)

        def merge_residual(a, b):
            return (a + b) / _SQRT2 if self.skip_rescale else a + b

        def head(h, out_ch, init_scale):
            return ddpm_conv3x3(out_ch, init_scale=init_scale, dtype=self.dtype)(
                act(group_norm(h.shape[-1], self.dtype)(h))
            )

        # 2. Data in [0, 1] is mapped to [-1, 1]; the input pyramid starts from that image.
        if not self.centered:
            x = 2 * x - 1.0
        x = x.astype(self.dtype)
        input_pyramid = x if self.progressive_input != "none" else None

        # 3-4. Down path.
        hs = [ddpm_conv3x3(nf, dtype=self.dtype)(x)]
        for i_level in range(num_resolutions):
            for _ in range(self.num_res_blocks):
                h = resnet_block(out_ch=nf * self.ch_mult[i_level])(hs[-1], temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = attn_block()(h)
                hs.append(h)
            if i_level == num_resolutions - 1:
                continue
            if self.resblock_type == "ddpm":
                h = Downsample(with_conv=self.resamp_with_conv, **resample)(hs[-1])
            else:
                h = resnet_block(down=True)(hs[-1], temb, train)
            if self.progressive_input == "input_skip":
                input_pyramid = Downsample(with_conv=False, **resample)(input_pyramid)
                combine = Combine(method=self.progressive_combine, dtype=self.dtype)
                h = combine(input_pyramid, h)
            elif self.progressive_input == "residual":
                input_pyramid = Downsample(out_ch=h.shape[-1], with_conv=True, **resample)(
                    input_pyramid
                )
                input_pyramid = merge_residual(input_pyramid, h)
                h = input_pyramid
            hs.append(h)

        # 5. Middle.
        h = hs[-1]
        h = resnet_block()(h, temb, train)
        h = attn_block()(h)
        h = resnet_block()(h, temb, train)

        # 6. Up path.
        pyramid = None
        for i_level in reversed(range(num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                h = resnet_block(out_ch=nf * self.ch_mult[i_level])(
                    concat_skip(h, hs.pop()), temb, train
                )
            if h.shape[1] in self.attn_resolutions:
                h = attn_block()(h)

            if self.progressive == "output_skip":
                if pyramid is not None:
                    pyramid = Upsample(with_conv=False, **resample)(pyramid)
                    pyramid = pyramid + head(h, channels, self.init_scale)
                else:
                    pyramid = head(h, channels, self.init_scale)
            elif self.progressive == "residual":
                if pyramid is not None:
                    pyramid = Upsample(out_ch=h.shape[-1], with_conv=True, **resample)(pyramid)
                    pyramid = merge_residual(pyramid, h)
                    h = pyramid
                else:
                    pyramid = head(h, h.shape[-1], 1.0)

            if i_level != 0:
                if self.resblock_type == "ddpm":
                    h = Upsample(with_conv=self.resamp_with_conv, **resample)(h)
                else:
                    h = resnet_block(up=True)(h, temb, train)

        # 7. Output.
        if self.progressive == "output_skip":
            h = pyramid
        else:
            h = head(h, channels, self.init_scale)

        # 8. Noise-level output scaling (VE models output the score directly).
        h = h.astype(jnp.float32)
        if self.scale_by_sigma:
            if self.embedding_type == "fourier":
                used_sigmas = time_cond
            else:
                used_sigmas = self.sigmas()[time_cond.astype(jnp.int32)]
            h = h / used_sigmas.reshape((-1,) + (1,) * (h.ndim - 1))
        return h

    def sigmas(self):
        """Descending noise levels exp(linspace(log σ_max, log σ_min, N)), float32.

        See docs/original_code.md#sdes-and-time-conditioning.
        """
        sigmas = np.exp(
            np.linspace(np.log(self.sigma_max), np.log(self.sigma_min), self.num_scales)
        )
        return jnp.asarray(sigmas, jnp.float32)
