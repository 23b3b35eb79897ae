"""Noise-conditional Wide ResNet classifier p_φ(y | x, σ) for class-conditional sampling (App. I.1).

The classifier of the original's controllable-generation demo: a WRN (Zagoruyko & Komodakis 2016)
whose residual blocks add a projection of a Gaussian-Fourier embedding of log σ, with GroupNorm
(eps 1e-5, min(C/4, 32) groups) in place of batch norm. The original names those norms like batch
norms (``init_bn``, ``bn_2``, ``pre-pool-bn``); the names are kept so its checkpoint loads.
``create_classifier()`` builds the released WRN-28-10 (38,913,242 parameters).

Guidance (paper eq. (14) / App. I): ∇_x log p_t(x | y) ≈ s_θ(x, t) + ∇_x log p_φ(y | x, σ(t)), with
the classifier gradient from `get_classifier_grad_fn`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax.models.layers import GaussianFourierProjection

# CIFAR-10 per-channel statistics the released classifier was trained with
# (docs/original_code.md#controllable-generation).
CIFAR10_MEAN = (0.49139968, 0.48215841, 0.44653091)
CIFAR10_STD = (0.24703223, 0.24348513, 0.26158784)

_conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _dense_kernel_init(key, shape, dtype=jnp.float32):
    """U(−1/sqrt(fan_out), 1/sqrt(fan_out)) for the logit layer."""
    bound = 1.0 / np.sqrt(shape[1])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def _norm_relu(x, name: str):
    """GroupNorm(min(C/4, 32) groups, eps 1e-5) then ReLU: the "batch norm" of this network."""
    x = nn.GroupNorm(num_groups=min(x.shape[-1] // 4, 32), epsilon=1e-5, name=name)(x)
    return nn.relu(x)


def _shortcut_add(block_x, orig_x):
    """Residual add; a widening shortcut is average-pooled by the stride and zero-padded."""
    if block_x.shape[-1] != orig_x.shape[-1]:
        stride = orig_x.shape[-2] // block_x.shape[-2]
        orig_x = nn.avg_pool(orig_x, (stride, stride), (stride, stride))
        extra = block_x.shape[-1] - orig_x.shape[-1]
        orig_x = jnp.pad(orig_x, [(0, 0), (0, 0), (0, 0), (0, extra)])
    return block_x + orig_x


class WideResnetBlock(nn.Module):
    """Pre-activation WRN block with an additive noise embedding after the first convolution."""

    channels: int
    strides: tuple[int, int] = (1, 1)
    activate_before_residual: bool = False

    @nn.compact
    def __call__(self, x, temb=None, train: bool = False):
        if self.activate_before_residual:
            # The shortcut also sees the activated input.
            x = _norm_relu(x, "init_bn")
            block_x = x
        else:
            block_x = _norm_relu(x, "init_bn")
        block_x = nn.Conv(
            self.channels,
            (3, 3),
            self.strides,
            padding="SAME",
            use_bias=False,
            kernel_init=_conv_kernel_init,
            name="conv1",
        )(block_x)
        if temb is not None:
            block_x = block_x + nn.Dense(self.channels)(nn.swish(temb))[:, None, None, :]
        block_x = _norm_relu(block_x, "bn_2")
        block_x = nn.Conv(
            self.channels,
            (3, 3),
            padding="SAME",
            use_bias=False,
            kernel_init=_conv_kernel_init,
            name="conv2",
        )(block_x)
        return _shortcut_add(block_x, x)


class WideResnetGroup(nn.Module):
    """``blocks_per_group`` blocks; only the first one strides (and may activate before residual)."""

    blocks_per_group: int
    channels: int
    strides: tuple[int, int] = (1, 1)
    activate_before_residual: bool = False

    @nn.compact
    def __call__(self, x, temb=None, train: bool = False):
        for i in range(self.blocks_per_group):
            x = WideResnetBlock(
                self.channels,
                self.strides if i == 0 else (1, 1),
                activate_before_residual=self.activate_before_residual and i == 0,
            )(x, temb, train)
        return x


class WideResnet(nn.Module):
    """Noise-conditional WRN-(6·blocks_per_group + 4)-(channel_multiplier).

    Called as ``apply({'params': p}, x, sigmas, train=False)`` with x [B, H, W, C] (square) and
    sigmas [B] the VE noise standard deviations (the module takes the log); returns logits
    [B, num_outputs]. ``train`` has no effect (no dropout, no batch statistics).
    """

    blocks_per_group: int
    channel_multiplier: int
    num_outputs: int

    @nn.compact
    def __call__(self, x, sigmas, train: bool = False):
        # Per-image standardization, std floored at 1/sqrt(D).
        num_dims = int(np.prod(x.shape[1:]))
        mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
        std = jnp.std(x, axis=(1, 2, 3), keepdims=True)
        x = (x - mean) / jnp.maximum(std, 1.0 / np.sqrt(num_dims))

        temb = GaussianFourierProjection(embedding_size=128, scale=16.0)(jnp.log(sigmas))
        temb = nn.Dense(128 * 4)(temb)
        temb = nn.Dense(128 * 4)(nn.swish(temb))

        x = nn.Conv(
            16,
            (3, 3),
            padding="SAME",
            use_bias=False,
            kernel_init=_conv_kernel_init,
            name="init_conv",
        )(x)
        k = self.channel_multiplier
        x = WideResnetGroup(self.blocks_per_group, 16 * k, activate_before_residual=True)(
            x, temb, train
        )
        x = WideResnetGroup(self.blocks_per_group, 32 * k, (2, 2))(x, temb, train)
        x = WideResnetGroup(self.blocks_per_group, 64 * k, (2, 2))(x, temb, train)
        x = _norm_relu(x, "pre-pool-bn")
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_outputs, kernel_init=_dense_kernel_init)(x)


def create_classifier(
    blocks_per_group: int = 4, channel_multiplier: int = 10, num_outputs: int = 10
) -> WideResnet:
    """The released CIFAR-10 classifier architecture (WRN-28-10) by default."""
    return WideResnet(blocks_per_group, channel_multiplier, num_outputs)


def get_logit_fn(classifier: WideResnet, data_mean=CIFAR10_MEAN, data_std=CIFAR10_STD):
    """``logits_fn(params, x, sigmas)``: channel normalisation, then the classifier.

    ``x`` is in the VE data space [0, 1] (noisy); ``sigmas`` [B] are the noise levels σ(t).
    ``data_mean`` / ``data_std`` are per-channel statistics of the training data, by default
    CIFAR-10's (docs/original_code.md#controllable-generation); a classifier trained on other
    data passes its own.
    """
    mean = jnp.asarray(data_mean, jnp.float32)
    std = jnp.asarray(data_std, jnp.float32)

    def logits_fn(params, x, sigmas):
        if x.shape[-1] != mean.shape[-1]:
            raise ValueError(
                f"Images have {x.shape[-1]} channels but the normalisation statistics have "
                f"{mean.shape[-1]}; pass data_mean / data_std of the classifier's training data."
            )
        return classifier.apply({"params": params}, (x - mean) / std, sigmas, train=False)

    return logits_fn


def get_classifier_grad_fn(logits_fn):
    """``grad_fn(params, x, sigmas, labels)`` = ∇_x Σ_b log softmax(logits_b)[labels_b].

    The batch sum makes each row of the result the per-sample gradient ∇_x log p_φ(y_b | x_b, σ_b).
    """

    def log_prob(x, params, sigmas, labels):
        log_p = jax.nn.log_softmax(logits_fn(params, x, sigmas), axis=-1)
        return jnp.take_along_axis(log_p, labels[:, None], axis=-1).sum()

    def grad_fn(params, x, sigmas, labels):
        return jax.grad(log_prob)(x, params, sigmas, labels)

    return grad_fn


def get_classifier_fn(
    classifier: WideResnet,
    sde,
    centered: bool = False,
    data_mean=CIFAR10_MEAN,
    data_std=CIFAR10_STD,
):
    """``classifier_fn(params, x, t) -> logits`` for `score_sde_jax.sampling.controllable`, for any SDE.

    The classifier was trained on VE-perturbed images y + σ z with y ∈ [0, 1]. A sample
    x(t) = m(t) x0 + s(t) z of any of the linear SDEs (m, s from ``sde.marginal_prob``) is m times
    the VE-perturbed x0 + (s/m) z, so the classifier is shown x(t)/m at noise level σ = s/m; for
    ``centered`` data (x0 = 2y - 1 ∈ [-1, 1]) it is shown (x(t)/m + 1)/2 at σ = s/(2m). For the
    VE SDE on [0, 1] data this is the original's input, σ(t) the marginal std
    (docs/original_code.md#controllable-generation); the original fed that std to the classifier
    for every SDE (docs/original_code.md, D10).

    Args:
      classifier: the `WideResnet` module.
      sde: the score model's SDE (anything with ``marginal_prob(x, t) -> (mean, std)``).
      centered: whether the score model's data live in [-1, 1] (``config.data.centered``).
      data_mean, data_std: the classifier's channel statistics, as in `get_logit_fn`.
    """
    logits_fn = get_logit_fn(classifier, data_mean, data_std)

    def classifier_fn(params, x, t):
        mean_coeff = sde.marginal_prob(jnp.ones((x.shape[0], 1)), t)[0][:, 0]
        sigmas = sde.marginal_prob(x, t)[1] / mean_coeff
        y = x / mean_coeff[:, None, None, None]
        if centered:
            y, sigmas = (y + 1.0) / 2.0, sigmas / 2.0
        return logits_fn(params, y, sigmas)

    return classifier_fn
