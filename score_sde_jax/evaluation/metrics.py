"""FID, KID and Inception Score from Inception features, as TF-GAN computes them
(docs/original_code.md#training-evaluation-and-data).

All functions take host arrays (NumPy or anything ``np.asarray`` accepts) and compute in float64:
they run once per evaluation on at most a few 50,000 x 2048 matrices, where float32 would cost
digits of FID and speed does not matter.
"""

import numpy as np
from scipy import special


def _as_features(features, name: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"{name} must be [num_samples, dim], got shape {features.shape}.")
    return features


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of features, the Gaussian that FID compares
    (docs/original_code.md#training-evaluation-and-data).

    Args:
      features: [N, D] (e.g. pool_3 activations), N >= 2.

    Returns:
      ``(mu [D], sigma [D, D])`` in float64; sigma is the unbiased (N - 1) sample covariance, as
      TF-GAN's ``frechet_classifier_distance_from_activations`` and pytorch-fid use.
    """
    features = _as_features(features, "features")
    if len(features) < 2:
        raise ValueError(f"Need at least 2 samples for a covariance, got {len(features)}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix; round-off negative eigenvalues -> 0."""
    eigvals, eigvecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def fid_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017).

    FID = |mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    The trace of the (non-symmetric) matrix root is computed as
    Tr((sigma1 sigma2)^(1/2)) = Tr((S sigma2 S)^(1/2)) with S = sigma1^(1/2), both roots by
    symmetric eigendecomposition: the two matrices are similar, and the second is symmetric PSD,
    so the result is real and stable even for rank-deficient covariances (fewer samples than
    dimensions), where ``scipy.linalg.sqrtm(sigma1 @ sigma2)`` needs pytorch-fid's eps-offset
    and imaginary-part fix-ups. This is TF-GAN's formulation (``trace_sqrt_product``).

    Args:
      mu1: [D] mean of the first set. sigma1: [D, D] its covariance.
      mu2: [D] mean of the second set. sigma2: [D, D] its covariance.

    Returns:
      The FID as a Python float.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    dim = mu1.shape[0]
    for name, value, shape in (
        ("mu1", mu1, (dim,)),
        ("mu2", mu2, (dim,)),
        ("sigma1", sigma1, (dim, dim)),
        ("sigma2", sigma2, (dim, dim)),
    ):
        if value.shape != shape:
            raise ValueError(f"{name} has shape {value.shape}, expected {shape} (mu1 is {dim}-d).")
    sqrt_sigma1 = _sqrtm_psd(sigma1)
    product = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    eigvals = np.linalg.eigvalsh((product + product.T) / 2)
    trace_sqrt_product = np.sum(np.sqrt(np.clip(eigvals, 0.0, None)))
    mean_term = np.sum((mu1 - mu2) ** 2)
    return float(mean_term + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product)


def fid_from_features(features_a, features_b) -> float:
    """FID between two feature sets: `fid_from_stats` of their `feature_stats`."""
    return fid_from_stats(*feature_stats(features_a), *feature_stats(features_b))


def _block_bounds(num: int, num_blocks: int) -> np.ndarray:
    # TF-GAN's split: the first blocks get num // num_blocks items, the last (num % num_blocks)
    # blocks one more.
    size = num // num_blocks
    num_plus_one = num - size * num_blocks
    sizes = [size] * (num_blocks - num_plus_one) + [size + 1] * num_plus_one
    return np.concatenate([[0], np.cumsum(sizes)])


def _polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    dim = x.shape[1]
    m, n = len(x), len(y)
    k_xx = (x @ x.T / dim + 1.0) ** 3
    k_yy = (y @ y.T / dim + 1.0) ** 3
    k_xy = (x @ y.T / dim + 1.0) ** 3
    return (
        (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
        + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
        - 2.0 * k_xy.mean()
    )


def kid_and_std(features_a, features_b, max_block_size: int = 1024) -> tuple[float, float]:
    """Kernel Inception Distance and its standard error, exactly as TF-GAN blocks it
    (docs/original_code.md#training-evaluation-and-data).

    KID (Bińkowski et al. 2018) is the unbiased estimate of the squared MMD with the polynomial
    kernel k(x, y) = (x.y / d + 1)^3. Following TF-GAN's
    ``kernel_classifier_distance_and_std_from_activations`` (what the original evaluation
    calls, with the default ``max_block_size=1024``): both sets are cut, **in the given order**,
    into ``ceil(max(N_a, N_b) / max_block_size)`` contiguous blocks of near-equal size (the last
    ``N % num_blocks`` blocks one larger); block i of A is compared with block i of B, and KID is
    the mean of the per-block estimates. There is no random subset sampling (unlike the
    100 random subsets of 1000 in the KID paper, clean-fid or torch-fidelity), so the value
    depends on the order of the features. With at most ``max_block_size`` features per set it
    is the plain unbiased MMD^2 over all pairs. Computed in float64 (TF-GAN: the input dtype).

    Args:
      features_a: [N_a, D] features (e.g. the dataset's pool_3).
      features_b: [N_b, D] features (e.g. the samples' pool_3).
      max_block_size: largest block, 1024 in TF-GAN.

    Returns:
      ``(kid, std)``: the mean over blocks and the standard error of that mean
      (``sqrt(var_unbiased(blocks) / num_blocks)``, NaN with a single block).
    """
    features_a = _as_features(features_a, "features_a")
    features_b = _as_features(features_b, "features_b")
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"Feature dims differ: {features_a.shape[1]} vs {features_b.shape[1]}.")
    if max_block_size < 2:
        raise ValueError(f"max_block_size must be >= 2, got {max_block_size}.")
    num_blocks = -(-max(len(features_a), len(features_b)) // max_block_size)
    if min(len(features_a), len(features_b)) < 2 * num_blocks:
        raise ValueError(
            f"KID needs at least 2 features per block ({num_blocks} blocks), got "
            f"{len(features_a)} and {len(features_b)}."
        )
    bounds_a = _block_bounds(len(features_a), num_blocks)
    bounds_b = _block_bounds(len(features_b), num_blocks)
    estimates = np.array(
        [
            _polynomial_mmd2_unbiased(
                features_a[bounds_a[i] : bounds_a[i + 1]],
                features_b[bounds_b[i] : bounds_b[i + 1]],
            )
            for i in range(num_blocks)
        ]
    )
    mean = estimates.mean()
    if num_blocks == 1:
        return float(mean), float("nan")
    variance = np.sum((estimates - mean) ** 2) / (num_blocks - 1)
    return float(mean), float(np.sqrt(variance / num_blocks))


def kid(features_a, features_b, max_block_size: int = 1024) -> float:
    """Kernel Inception Distance (TF-GAN's block estimate); see `kid_and_std`."""
    return kid_and_std(features_a, features_b, max_block_size)[0]


def inception_score(logits) -> float:
    """Inception Score exp(E_x KL(p(y|x) || p(y))) from logits, single split
    (docs/original_code.md#training-evaluation-and-data).

    As TF-GAN's ``classifier_score_from_logits``: p(y|x) = softmax(logits) over all given
    classes (the FID Inception's 1008 logits in the original), p(y) = the mean of p(y|x) over
    the whole set (no splitting into 10 parts as in Salimans et al.'s code).

    Args:
      logits: [N, num_classes].

    Returns:
      The Inception Score as a Python float.
    """
    logits = _as_features(logits, "logits")
    log_p_yx = special.log_softmax(logits, axis=1)
    p_yx = np.exp(log_p_yx)
    # log p(y) via logsumexp stays finite where every p(y|x) underflows (0 * log 0 terms -> 0).
    log_p_y = special.logsumexp(log_p_yx, axis=0) - np.log(len(logits))
    kl = np.sum(p_yx * (log_p_yx - log_p_y), axis=1)
    return float(np.exp(kl.mean()))
