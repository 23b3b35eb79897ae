"""RefineNet building blocks of NCSN (v1) and NCSNv2 (docs/original_code.md#networks).

Class names and layer creation order follow the original, so released parameter trees load
unchanged: ``ResidualBlock_k/{<Norm>_0, Conv_0, <Norm>_1, Conv_1 | ConvMeanPool_0/1, Conv_2}``,
``RefineBlock_k/{RCUBlock_i, MSFBlock_0, CRPBlock_0}`` and their conditional twins
``ConditionalResidualBlock``, ``CondRefineBlock``, ``CondRCUBlock``, ``CondMSFBlock``,
``CondCRPBlock``.

The conditional blocks take the integer noise label ``y`` and feed it to every normalization
(NCSN v1). ``ConditionalResidualBlock`` fixes the original's downsampling branch, which called the
normalization factory with (h, y) instead of creating a layer and applying it
(docs/original_code.md, D11).
"""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde_jax.models.layers import ncsn_init

_INTERPOLATIONS = {"bilinear": "bilinear", "nearest_neighbor": "nearest"}


def _ncsn_conv(x, out_planes: int, kernel: int, bias: bool, dilation: int, init_scale: float):
    """Conv with PyTorch-default init: kernel and bias both U(±sqrt(init_scale/fan_in))."""
    kernel_init = ncsn_init(init_scale)
    kernel_shape = (kernel, kernel, x.shape[-1], out_planes)

    def bias_init(key, shape, dtype=jnp.float32):
        # A slice of a fresh kernel sample: same law as the kernel entries (fan_in = k·k·C_in).
        return kernel_init(key, kernel_shape, dtype)[0, 0, 0, :]

    return nn.Conv(
        out_planes,
        kernel_size=(kernel, kernel),
        padding="SAME",
        kernel_dilation=(dilation, dilation),
        use_bias=bias,
        kernel_init=kernel_init,
        bias_init=bias_init,
    )(x)


def ncsn_conv3x3(x, out_planes: int, bias: bool = True, dilation: int = 1, init_scale=1.0):
    """3×3 SAME convolution (dilated convs keep the spatial size) with the NCSN initialiser."""
    return _ncsn_conv(x, out_planes, 3, bias, dilation, init_scale)


def ncsn_conv1x1(x, out_planes: int, bias: bool = True, init_scale=1.0):
    """1×1 convolution with the NCSN initialiser."""
    return _ncsn_conv(x, out_planes, 1, bias, 1, init_scale)


def _resize(h, shape: Sequence[int], interpolation: str):
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(
            f"Unknown interpolation {interpolation!r}; valid choices: {sorted(_INTERPOLATIONS)}."
        )
    return jax.image.resize(
        h, (h.shape[0], *shape, h.shape[-1]), method=_INTERPOLATIONS[interpolation]
    )


class ConvMeanPool(nn.Module):
    """Convolution (Flax default init) followed by the mean of the four 2×2-strided sub-grids."""

    output_dim: int
    kernel_size: int = 3
    biases: bool = True

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        h = nn.Conv(self.output_dim, (k, k), padding="SAME", use_bias=self.biases)(x)
        return (h[:, ::2, ::2] + h[:, 1::2, ::2] + h[:, ::2, 1::2] + h[:, 1::2, 1::2]) / 4.0


class ResidualBlock(nn.Module):
    """Pre-activation residual block of the NCSNv2 backbone (docs/original_code.md#networks).

    ``resample='down'`` halves the spatial size only for ``dilation == 1`` (ConvMeanPool); the
    dilated "down" blocks keep it, as in the original NCSNv2.
    """

    output_dim: int
    normalization: Callable[[], nn.Module]
    resample: str | None = None
    act: Callable = nn.elu
    dilation: int = 1

    @nn.compact
    def __call__(self, x):
        h = self.act(self.normalization()(x))
        return _residual_body(self, x, h, lambda h: self.normalization()(h))


class ConditionalResidualBlock(nn.Module):
    """`ResidualBlock` whose normalizations are noise-conditional (NCSN v1,
    docs/original_code.md#networks)."""

    output_dim: int
    normalization: Callable[[], nn.Module]
    resample: str | None = None
    act: Callable = nn.elu
    dilation: int = 1

    @nn.compact
    def __call__(self, x, y):
        h = self.act(self.normalization()(x, y))
        return _residual_body(self, x, h, lambda h: self.normalization()(h, y))


def _residual_body(block, x, h, norm):
    """Shared body of the (conditional) residual block, after the first norm + activation.

    Layer creation order is the original's: on the down path the C_in→C_in conv comes first and
    the shortcut last; on the plain path a channel-changing shortcut is created first.
    """
    out, dil, act = block.output_dim, block.dilation, block.act
    if block.resample == "down":
        h = act(norm(ncsn_conv3x3(h, h.shape[-1], dilation=dil)))
        if dil > 1:
            h = ncsn_conv3x3(h, out, dilation=dil)
            shortcut = ncsn_conv3x3(x, out, dilation=dil)
        else:
            h = ConvMeanPool(output_dim=out)(h)
            shortcut = ConvMeanPool(output_dim=out, kernel_size=1)(x)
    elif block.resample is None:
        if out == x.shape[-1]:
            shortcut = x
        elif dil > 1:
            shortcut = ncsn_conv3x3(x, out, dilation=dil)
        else:
            shortcut = ncsn_conv1x1(x, out)
        h = act(norm(ncsn_conv3x3(h, out, dilation=dil)))
        h = ncsn_conv3x3(h, out, dilation=dil)
    else:
        raise ValueError(f"Unknown resample {block.resample!r}; valid choices: None, 'down'.")
    return h + shortcut


class RCUBlock(nn.Module):
    """Residual conv unit: ``n_blocks`` × [x += (act → conv3×3 no bias) × n_stages]."""

    features: int
    n_blocks: int
    n_stages: int
    act: Callable = nn.relu

    @nn.compact
    def __call__(self, x):
        for _ in range(self.n_blocks):
            residual = x
            for _ in range(self.n_stages):
                x = ncsn_conv3x3(self.act(x), self.features, bias=False)
            x = x + residual
        return x


class CondRCUBlock(nn.Module):
    """Conditional RCU: each stage is norm(·, y) → act → conv3×3 (no bias)."""

    features: int
    n_blocks: int
    n_stages: int
    normalizer: Callable[[], nn.Module]
    act: Callable = nn.relu

    @nn.compact
    def __call__(self, x, y):
        for _ in range(self.n_blocks):
            residual = x
            for _ in range(self.n_stages):
                x = ncsn_conv3x3(self.act(self.normalizer()(x, y)), self.features, bias=False)
            x = x + residual
        return x


class MSFBlock(nn.Module):
    """Multi-resolution fusion: Σ_i resize(conv3×3(x_i)) to ``shape``."""

    shape: tuple[int, int]
    features: int
    interpolation: str = "bilinear"

    @nn.compact
    def __call__(self, xs):
        sums = jnp.zeros((xs[0].shape[0], *self.shape, self.features), xs[0].dtype)
        for x in xs:
            sums = sums + _resize(ncsn_conv3x3(x, self.features), self.shape, self.interpolation)
        return sums


class CondMSFBlock(nn.Module):
    """Conditional MSF: Σ_i resize(conv3×3(norm(x_i, y)))."""

    shape: tuple[int, int]
    features: int
    normalizer: Callable[[], nn.Module]
    interpolation: str = "bilinear"

    @nn.compact
    def __call__(self, xs, y):
        sums = jnp.zeros((xs[0].shape[0], *self.shape, self.features), xs[0].dtype)
        for x in xs:
            h = ncsn_conv3x3(self.normalizer()(x, y), self.features)
            sums = sums + _resize(h, self.shape, self.interpolation)
        return sums


class CRPBlock(nn.Module):
    """Chained residual pooling: x = act(x); n_stages × [path = conv(maxpool5×5(path)); x += path]."""

    features: int
    n_stages: int
    act: Callable = nn.relu

    @nn.compact
    def __call__(self, x):
        x = self.act(x)
        path = x
        for _ in range(self.n_stages):
            path = nn.max_pool(path, window_shape=(5, 5), strides=(1, 1), padding="SAME")
            path = ncsn_conv3x3(path, self.features, bias=False)
            x = path + x
        return x


class CondCRPBlock(nn.Module):
    """Conditional CRP: like `CRPBlock` with norm(·, y) first and 5×5 AVERAGE pooling."""

    features: int
    n_stages: int
    normalizer: Callable[[], nn.Module]
    act: Callable = nn.relu

    @nn.compact
    def __call__(self, x, y):
        x = self.act(x)
        path = x
        for _ in range(self.n_stages):
            path = self.normalizer()(path, y)
            path = nn.avg_pool(path, window_shape=(5, 5), strides=(1, 1), padding="SAME")
            path = ncsn_conv3x3(path, self.features, bias=False)
            x = path + x
        return x


class RefineBlock(nn.Module):
    """RCU(2 blocks) per input → MSF (skipped at the start) → CRP → RCU(3 blocks if end else 1)."""

    output_shape: tuple[int, int]
    features: int
    act: Callable = nn.relu
    interpolation: str = "bilinear"
    start: bool = False
    end: bool = False

    @nn.compact
    def __call__(self, xs):
        hs = [RCUBlock(x.shape[-1], n_blocks=2, n_stages=2, act=self.act)(x) for x in xs]
        if self.start:
            h = hs[0]
        else:
            h = MSFBlock(self.output_shape, self.features, self.interpolation)(hs)
        h = CRPBlock(self.features, n_stages=2, act=self.act)(h)
        return RCUBlock(self.features, n_blocks=3 if self.end else 1, n_stages=2, act=self.act)(h)


class CondRefineBlock(nn.Module):
    """`RefineBlock` made of the conditional RCU / MSF / CRP blocks."""

    output_shape: tuple[int, int]
    features: int
    normalizer: Callable[[], nn.Module]
    act: Callable = nn.relu
    interpolation: str = "bilinear"
    start: bool = False
    end: bool = False

    @nn.compact
    def __call__(self, xs, y):
        norm, act = self.normalizer, self.act
        hs = [CondRCUBlock(x.shape[-1], 2, 2, norm, act)(x, y) for x in xs]
        if self.start:
            h = hs[0]
        else:
            h = CondMSFBlock(self.output_shape, self.features, norm, self.interpolation)(hs, y)
        h = CondCRPBlock(self.features, 2, norm, act)(h, y)
        return CondRCUBlock(self.features, 3 if self.end else 1, 2, norm, act)(h, y)
