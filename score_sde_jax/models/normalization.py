"""Normalization layers of NCSN / NCSNv2, selectable by ``model.normalization``.

See docs/original_code.md#networks.

InstanceNorm++ (Song & Ermon 2019, eq. in App. A of "Generative Modeling by Estimating Gradients
of the Data Distribution") keeps the information that plain instance normalization throws away:
the relative size of the per-channel spatial means,

    h = γ_c [ (x - μ_c) / sqrt(s_c² + 1e-5) + α_c (μ_c - m) / sqrt(v + 1e-5) ] + β_c,

with μ_c, s_c² the spatial mean / variance of channel c and m, v the mean / variance of the μ_c
over channels. The conditional variants look γ, α, β up in a per-noise-level embedding table.

Parameter layout follows the original: the non-conditional InstanceNorm++ parameters ``alpha``,
``gamma``, ``beta`` have shape (1, 1, 1, C) (checkpoints store them that way; do not squeeze
them), the conditional ones live in ``Embed_0/embedding`` [num_classes, 3C] ordered (γ, α, β).
"""

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

_EPS = 1e-5


def _normal_around_one(key, shape, dtype=jnp.float32):
    """N(1, 0.02²): the initial scales of the NCSN normalizations."""
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def _standardize(x):
    """Per-sample, per-channel spatial standardization of NHWC ``x`` (population variance)."""
    mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    var = jnp.var(x, axis=(1, 2), keepdims=True)
    return (x - mean) / jnp.sqrt(var + _EPS)


def _normalized_channel_means(x):
    """(μ_c - m) / sqrt(v + 1e-5), shape [B, C]: the "++" correction term of InstanceNorm++."""
    means = jnp.mean(x, axis=(1, 2))
    m = jnp.mean(means, axis=-1, keepdims=True)
    v = jnp.var(means, axis=-1, keepdims=True)
    return (means - m) / jnp.sqrt(v + _EPS)


class InstanceNorm2dPlus(nn.Module):
    """InstanceNorm++ with learned α, γ ~ N(1, 0.02²) and β = 0, each of shape (1, 1, 1, C)."""

    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        shape = (1, 1, 1, x.shape[-1])
        alpha = self.param("alpha", _normal_around_one, shape)
        gamma = self.param("gamma", _normal_around_one, shape)
        h = _standardize(x) + _normalized_channel_means(x)[:, None, None, :] * alpha
        h = h * gamma
        if self.use_bias:
            h = h + self.param("beta", nn.initializers.zeros, shape)
        return h


class InstanceNorm2d(nn.Module):
    """Plain instance normalization with a learned per-channel scale (N(1, 0.02²)) and bias."""

    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        shape = (1, 1, 1, x.shape[-1])
        h = _standardize(x) * self.param("scale", _normal_around_one, shape)
        if self.use_bias:
            h = h + self.param("bias", nn.initializers.zeros, shape)
        return h


class VarianceNorm2d(nn.Module):
    """Divides by the per-channel spatial standard deviation without centring (scale N(1, 0.02²))."""

    use_bias: bool = False

    @nn.compact
    def __call__(self, x):
        shape = (1, 1, 1, x.shape[-1])
        var = jnp.var(x, axis=(1, 2), keepdims=True)
        h = x / jnp.sqrt(var + _EPS) * self.param("scale", _normal_around_one, shape)
        if self.use_bias:
            h = h + self.param("bias", nn.initializers.zeros, shape)
        return h


def _per_label_affine(y, num_classes: int, channels: int, num_scaled: int, num_blocks: int):
    """Looks up ``num_blocks`` per-channel vectors for integer noise labels ``y`` [B].

    One ``nn.Embed`` table [num_classes, num_blocks·C]; the first ``num_scaled`` blocks (scales)
    start at N(1, 0.02²), the remaining ones (offsets) at 0. Returns [B, 1, 1, C] arrays.
    """

    def init(key, shape, dtype=jnp.float32):
        scales = _normal_around_one(key, (shape[0], num_scaled * channels), dtype)
        offsets = jnp.zeros((shape[0], (num_blocks - num_scaled) * channels), dtype)
        return jnp.concatenate([scales, offsets], axis=1)

    table = nn.Embed(num_classes, num_blocks * channels, embedding_init=init)
    return jnp.split(table(y)[:, None, None, :], num_blocks, axis=-1)


class ConditionalInstanceNorm2dPlus(nn.Module):
    """Noise-conditional InstanceNorm++ (NCSN v1): out = γ_y (h + α_y·μ̃) + β_y.

    See docs/original_code.md#networks.
    """

    num_classes: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x, y):
        channels = x.shape[-1]
        h = _standardize(x)
        means_plus = _normalized_channel_means(x)[:, None, None, :]
        if self.use_bias:
            gamma, alpha, beta = _per_label_affine(y, self.num_classes, channels, 2, 3)
            return gamma * (h + means_plus * alpha) + beta
        gamma, alpha = _per_label_affine(y, self.num_classes, channels, 2, 2)
        return gamma * (h + means_plus * alpha)


class ConditionalInstanceNorm2d(nn.Module):
    """Noise-conditional instance normalization: out = γ_y h + β_y."""

    num_classes: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x, y):
        h = _standardize(x)
        if self.use_bias:
            gamma, beta = _per_label_affine(y, self.num_classes, x.shape[-1], 1, 2)
            return gamma * h + beta
        (gamma,) = _per_label_affine(y, self.num_classes, x.shape[-1], 1, 1)
        return gamma * h


class ConditionalVarianceNorm2d(nn.Module):
    """Noise-conditional variance normalization: out = γ_y x / sqrt(Var_spatial(x) + 1e-5)."""

    num_classes: int

    @nn.compact
    def __call__(self, x, y):
        var = jnp.var(x, axis=(1, 2), keepdims=True)
        (gamma,) = _per_label_affine(y, self.num_classes, x.shape[-1], 1, 1)
        return gamma * x / jnp.sqrt(var + _EPS)


_NORMALIZATIONS = {
    "InstanceNorm": InstanceNorm2d,
    "InstanceNorm++": InstanceNorm2dPlus,
    "VarianceNorm": VarianceNorm2d,
    "GroupNorm": nn.GroupNorm,
}

_CONDITIONAL_NORMALIZATIONS = {
    "InstanceNorm": ConditionalInstanceNorm2d,
    "InstanceNorm++": ConditionalInstanceNorm2dPlus,
    "VarianceNorm": ConditionalVarianceNorm2d,
}


def get_normalization(
    name: str, conditional: bool = False, num_classes: int | None = None
) -> Callable[[], nn.Module]:
    """Factory of the normalization layer named by ``model.normalization``.

    Args:
      name: 'InstanceNorm', 'InstanceNorm++', 'VarianceNorm' or 'GroupNorm' (the last is Flax
        ``nn.GroupNorm`` with 32 groups and epsilon 1e-6, as in the DDPM model; not conditional).
      conditional: build the noise-conditional variant (NCSN v1), applied as ``norm()(x, labels)``.
      num_classes: number of noise levels (rows of the embedding table); required if conditional.

    Returns:
      A zero-argument callable creating a fresh layer (call it inside a compact method so that
      Flax names it ``<ClassName>_k`` like the original).
    """
    table = _CONDITIONAL_NORMALIZATIONS if conditional else _NORMALIZATIONS
    if name not in table:
        kind = "conditional normalization" if conditional else "normalization"
        raise ValueError(f"Unknown {kind} {name!r}; valid choices: {sorted(table)}.")
    if not conditional:
        return table[name]
    if num_classes is None or num_classes < 1:
        raise ValueError(f"A conditional normalization needs num_classes >= 1, got {num_classes}.")
    return functools.partial(table[name], num_classes=num_classes)
