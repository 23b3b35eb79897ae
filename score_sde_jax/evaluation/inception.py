"""The FID Inception-v3 network in Flax Linen (docs/original_code.md#training-evaluation-and-data).

This is the Inception-v3 graph TensorFlow published in December 2015 (``inception-2015-12-05``),
the network behind every standard FID / IS / KID number, with the preprocessing of its PyTorch
port in pytorch-fid (``InceptionV3(use_fid_inception=True)``). It differs from a stock
Inception-v3 in three places that change the features:

* 1008 output classes, no auxiliary classifier, no input transform;
* the pooling branch of Mixed_5b..5d, 6b..6e and 7b is a 3x3 stride-1 average pool whose border
  windows divide by the number of real pixels (``count_include_pad=False``);
* the pooling branch of Mixed_7c is a 3x3 stride-1 max pool.

Every convolution is conv (no bias) -> BatchNorm (inference, eps 1e-3) -> ReLU. Parameter names
follow the PyTorch module names (``Mixed_5b/branch1x1/conv/kernel``), so the weight converter in
`score_sde_jax.evaluation.inception_weights` is a one-line rule per leaf.

Input convention: NHWC images, either uint8 in [0, 255] or float in [0, 1], any size.
`preprocess` resizes them to 299x299 exactly like ``torch.nn.functional.interpolate(...,
mode='bilinear', align_corners=False)`` (half-pixel centres, clamped borders, no antialiasing,
also when shrinking) and maps [0, 1] to [-1, 1]; `FIDInceptionV3` then takes the 299x299
result and returns the 2048-d ``pool_3`` features and the 1008 ``logits``.
"""

from collections.abc import Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

INCEPTION_SIZE = 299
POOL3_DIM = 2048
NUM_LOGITS = 1008
BN_EPSILON = 1e-3

# Float32 matmuls and convolutions at full precision: with TF32 or bf16 passes (GPU / TPU
# defaults) the features move by ~1e-3, enough to shift FID in its second decimal.
_PRECISION = lax.Precision.HIGHEST


def bilinear_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Interpolation matrix ``R`` [out_size, in_size] of PyTorch's 1-D bilinear resize.

    Implements ``interpolate(mode='bilinear', align_corners=False)`` along one axis, with the
    index arithmetic done in float32 as PyTorch's CPU kernel does it: source coordinate
    ``s = (i + 0.5) * in/out - 0.5`` clamped below at 0, neighbours ``floor(s)`` and
    ``min(floor(s) + 1, in - 1)`` weighted ``1 - frac`` and ``frac``. No antialiasing: when
    shrinking, every output pixel still reads only two input pixels.

    Args:
      in_size: input length.
      out_size: output length.

    Returns:
      float32 matrix with two (or one, at the border) non-zeros per row summing to 1.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size, dtype=np.float32) + np.float32(0.5)
    # PyTorch's compiled kernel evaluates ``scale * dst - 0.5`` as one fused multiply-add (a
    # single rounding to float32); float64 holds the float32 product exactly, so this mimics it.
    # Two roundings instead move the weights, and the resized image, by up to ~2e-6.
    src = (np.float64(scale) * dst.astype(np.float64) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lambda1 = src - i0.astype(np.float32)
    lambda0 = np.float32(1.0) - lambda1
    matrix = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, i0), lambda0)
    np.add.at(matrix, (rows, i1), lambda1)
    return matrix


def to_rgb(images: np.ndarray) -> np.ndarray:
    """NHWC images with three channels: grayscale (one channel) replicated, as the network needs."""
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def preprocess(images: jax.Array) -> jax.Array:
    """Resizes NHWC images to 299x299 and maps them to [-1, 1], as pytorch-fid does.

    Args:
      images: [N, H, W, 3], uint8 in [0, 255] or float in [0, 1].

    Returns:
      float32 [N, 299, 299, 3] in [-1, 1] (the input of `FIDInceptionV3`).
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"Expected NHWC RGB images [N, H, W, 3], got shape {images.shape}.")
    x = jnp.asarray(images)
    x = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
    _, height, width, _ = x.shape
    # The resize is separable: one matmul per spatial axis with PyTorch's interpolation weights.
    resize_h = jnp.asarray(bilinear_resize_matrix(height, INCEPTION_SIZE))
    resize_w = jnp.asarray(bilinear_resize_matrix(width, INCEPTION_SIZE))
    x = jnp.einsum("oh,nhwc->nowc", resize_h, x, precision=_PRECISION)
    x = jnp.einsum("pw,nowc->nopc", resize_w, x, precision=_PRECISION)
    return 2.0 * x - 1.0


def _avg_pool_3x3(x):
    # Border windows average over real pixels only (the 2015 graph's pooling).
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x):
    return nn.max_pool(x, (3, 3), strides=(2, 2))


class BasicConv2d(nn.Module):
    """Conv without bias -> BatchNorm (inference mode, eps 1e-3) -> ReLU."""

    features: int
    kernel_size: tuple[int, int]
    strides: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x):
        pad_h, pad_w = self.padding
        x = nn.Conv(
            self.features,
            self.kernel_size,
            strides=self.strides,
            padding=((pad_h, pad_h), (pad_w, pad_w)),
            use_bias=False,
            precision=_PRECISION,
            name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
        return nn.relu(x)


class InceptionA(nn.Module):
    """Mixed_5b..5d: 1x1, 5x5, double 3x3 and (no-pad-count) avg-pool branches at 35x35."""

    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv2d(64, (1, 1), name="branch1x1")(x)
        b5 = BasicConv2d(48, (1, 1), name="branch5x5_1")(x)
        b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv2d(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a: grid reduction 35x35 -> 17x17."""

    @nn.compact
    def __call__(self, x):
        b3 = BasicConv2d(384, (3, 3), strides=2, name="branch3x3")(x)
        bd = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv2d(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    """Mixed_6b..6e: factorised 7x7 branches at 17x17."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c = self.channels_7x7
        b1 = BasicConv2d(192, (1, 1), name="branch1x1")(x)
        b7 = BasicConv2d(c, (1, 1), name="branch7x7_1")(x)
        b7 = BasicConv2d(c, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv2d(c, (1, 1), name="branch7x7dbl_1")(x)
        bd = BasicConv2d(c, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv2d(c, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv2d(c, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv2d(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a: grid reduction 17x17 -> 8x8."""

    @nn.compact
    def __call__(self, x):
        b3 = BasicConv2d(192, (1, 1), name="branch3x3_1")(x)
        b3 = BasicConv2d(320, (3, 3), strides=2, name="branch3x3_2")(b3)
        b7 = BasicConv2d(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv2d(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """Mixed_7b (avg-pool branch) and Mixed_7c (max-pool branch): expanded filter banks at 8x8."""

    pool: str

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv2d(320, (1, 1), name="branch1x1")(x)
        b3 = BasicConv2d(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        bd = BasicConv2d(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [
                BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
            ],
            axis=-1,
        )
        if self.pool == "avg":
            pooled = _avg_pool_3x3(x)
        elif self.pool == "max":
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        else:
            raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}.")
        bp = BasicConv2d(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """The 2015 FID Inception-v3 on preprocessed 299x299 input.

    Call with the output of `preprocess`; returns ``{'pool_3': [N, 2048], 'logits': [N, 1008]}``
    where ``pool_3`` is the spatial mean of Mixed_7c and ``logits = fc(pool_3)``. Variables:
    ``params`` (conv kernels HWIO, BatchNorm scale/bias, fc) and ``batch_stats`` (BatchNorm
    running mean/var); load them with `inception_weights.load_inception_params`.
    """

    @nn.compact
    def __call__(self, x):
        if x.shape[1:] != (INCEPTION_SIZE, INCEPTION_SIZE, 3):
            raise ValueError(
                f"FIDInceptionV3 takes preprocessed [N, {INCEPTION_SIZE}, {INCEPTION_SIZE}, 3] "
                f"input, got {x.shape}; resize with `preprocess` first (the network is only "
                "defined at 299x299)."
            )
        x = BasicConv2d(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x = InceptionC(128, name="Mixed_6b")(x)
        x = InceptionC(160, name="Mixed_6c")(x)
        x = InceptionC(160, name="Mixed_6d")(x)
        x = InceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE("avg", name="Mixed_7b")(x)
        x = InceptionE("max", name="Mixed_7c")(x)
        pool_3 = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(NUM_LOGITS, precision=_PRECISION, name="fc")(pool_3)
        return {"pool_3": pool_3, "logits": logits}


def make_inception_fn(variables, devices=None) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """Returns a jitted ``fn(images) -> {'pool_3', 'logits'}`` giving host NumPy arrays.

    Args:
      variables: ``{'params': ..., 'batch_stats': ...}`` from
        `inception_weights.load_inception_params`.
      devices: devices to split each batch over (default: this process's local devices); batches
        are zero-padded to a multiple of their number.

    Returns:
      A function of NHWC images (uint8 in [0, 255] or float in [0, 1], any size); it
      preprocesses them like pytorch-fid and runs `FIDInceptionV3`, split over ``devices``.
    """
    model = FIDInceptionV3()
    devices = list(jax.local_devices() if devices is None else devices)
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    variables = jax.device_put(variables, replicated)
    # Separate jits: the network compiles once per batch size, whatever the image size.
    preprocess_fn = jax.jit(preprocess)
    network_fn = jax.jit(model.apply)

    def inception_fn(images):
        images = np.asarray(images)
        num_images = len(images)
        # Pad to a multiple of the device count so the batch splits evenly; padding is dropped.
        padding = -num_images % len(devices)
        if padding:
            images = np.concatenate([images, np.zeros((padding,) + images.shape[1:], images.dtype)])
        outputs = network_fn(variables, preprocess_fn(jax.device_put(images, split)))
        return {name: np.asarray(value)[:num_images] for name, value in outputs.items()}

    return inception_fn


def compute_inception_outputs(
    inception_fn: Callable[[np.ndarray], dict[str, np.ndarray]],
    batches: Iterable[np.ndarray],
    batch_size: int,
) -> dict[str, np.ndarray]:
    """Runs ``inception_fn`` over every image of ``batches`` in fixed-size chunks.

    Incoming batches may have any (varying) size; they are re-cut into chunks of ``batch_size``
    so that the network compiles once, and the last partial chunk is zero-padded and its padding
    discarded, so no image is dropped (the original's statistics missed the remainder, see
    score_sde PR #5 and docs/original_code.md#training-evaluation-and-data).

    Args:
      inception_fn: e.g. `make_inception_fn(variables)`.
      batches: iterable of NHWC image batches (uint8 or [0, 1] float), all of one image shape.
      batch_size: images per network call.

    Returns:
      ``{'pool_3': [N, 2048], 'logits': [N, 1008]}`` for all N images, in input order.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    outputs: dict[str, list[np.ndarray]] = {}
    pending: list[np.ndarray] = []
    num_pending = 0

    def run(chunk, num_real):
        for name, value in inception_fn(chunk).items():
            outputs.setdefault(name, []).append(np.asarray(value)[:num_real])

    for batch in batches:
        batch = np.asarray(batch)
        pending.append(batch)
        num_pending += len(batch)
        if num_pending < batch_size:
            continue
        stacked = np.concatenate(pending)
        num_full = len(stacked) // batch_size * batch_size
        for start in range(0, num_full, batch_size):
            run(stacked[start : start + batch_size], batch_size)
        pending = [stacked[num_full:]]
        num_pending = len(pending[0])
    if num_pending:
        rest = np.concatenate(pending)
        padding = np.zeros((batch_size - len(rest),) + rest.shape[1:], rest.dtype)
        run(np.concatenate([rest, padding]), len(rest))
    if not outputs:
        raise ValueError("No images: the batches iterable was empty.")
    return {name: np.concatenate(values) for name, values in outputs.items()}
