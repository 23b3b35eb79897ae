"""FID / KID / IS against plain NumPy-SciPy references and closed forms; dataset statistics files."""

import ml_collections
import numpy as np
import pytest
import scipy.linalg
import scipy.special

from score_sde_jax.data import datasets
from score_sde_jax.evaluation import dataset_stats, inception, metrics


def _correlated_features(seed, num, dim, shift=0.0):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    return rng.standard_normal((num, dim)) @ mixing + shift + rng.uniform(size=dim)


def _reference_fid(a, b):
    # pytorch-fid / TTUR style: scipy's sqrtm of the product, real part.
    mu_a, mu_b = a.mean(0), b.mean(0)
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(sigma_a @ sigma_b).real
    return np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a + sigma_b - 2 * covmean)


def test_feature_stats_is_mean_and_unbiased_covariance():
    x = _correlated_features(0, 50, 6)
    mu, sigma = metrics.feature_stats(x.astype(np.float32))
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-6)
    centred = x - x.mean(0)
    np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-5, atol=1e-7)


def test_fid_matches_scipy_sqrtm_reference():
    a = _correlated_features(1, 600, 48)
    b = _correlated_features(2, 500, 48, shift=0.3)
    want = _reference_fid(a, b)
    assert want > 1.0
    np.testing.assert_allclose(metrics.fid_from_features(a, b), want, rtol=1e-6)
    mu_a, sigma_a = metrics.feature_stats(a)
    mu_b, sigma_b = metrics.feature_stats(b)
    np.testing.assert_allclose(
        metrics.fid_from_stats(mu_a, sigma_a, mu_b, sigma_b), want, rtol=1e-6
    )


def test_fid_of_a_set_with_itself_is_zero():
    a = _correlated_features(3, 300, 32)
    assert abs(metrics.fid_from_features(a, a)) < 1e-9
    # Fewer samples than dimensions: singular covariance, still ~0 (scipy's sqrtm struggles here).
    b = _correlated_features(4, 20, 64)
    mu, sigma = metrics.feature_stats(b)
    assert abs(metrics.fid_from_stats(mu, sigma, mu, sigma)) < 1e-6 * np.trace(sigma)


def test_fid_closed_form_commuting_gaussians():
    rng = np.random.default_rng(5)
    dim = 10
    var1, var2 = rng.uniform(0.1, 3.0, dim), rng.uniform(0.1, 3.0, dim)
    mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    # Diagonal covariances.
    np.testing.assert_allclose(
        metrics.fid_from_stats(mu1, np.diag(var1), mu2, np.diag(var2)), want, rtol=1e-10
    )
    # Same eigenvectors (commuting, non-diagonal): the rotation changes nothing.
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    sigma1, sigma2 = q @ np.diag(var1) @ q.T, q @ np.diag(var2) @ q.T
    np.testing.assert_allclose(metrics.fid_from_stats(mu1, sigma1, mu2, sigma2), want, rtol=1e-10)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2.
    np.testing.assert_allclose(
        metrics.fid_from_stats([1.0], [[4.0]], [-2.0], [[9.0]]), 9.0 + 1.0, rtol=1e-12
    )


def test_fid_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="sigma2"):
        metrics.fid_from_stats(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


def _reference_mmd2(x, y):
    # Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written out pair by pair.
    d = x.shape[1]

    def k(a, b):
        return (np.dot(a, b) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_single_block_is_unbiased_mmd():
    a = _correlated_features(6, 40, 8)
    b = _correlated_features(7, 30, 8, shift=0.5)
    want = _reference_mmd2(a, b)
    assert want > 0.01
    value, std = metrics.kid_and_std(a, b)
    np.testing.assert_allclose(value, want, rtol=1e-6)
    assert np.isnan(std)
    np.testing.assert_allclose(metrics.kid(a, b), want, rtol=1e-6)


def test_kid_blocks_follow_tfgan_split():
    # 10 and 7 features, blocks of at most 4: ceil(10 / 4) = 3 blocks; the last N % 3 blocks get
    # one more item -> A: [0:3], [3:6], [6:10]; B: [0:2], [2:4], [4:7].
    a = _correlated_features(8, 10, 5)
    b = _correlated_features(9, 7, 5, shift=0.2)
    blocks = [
        _reference_mmd2(a[0:3], b[0:2]),
        _reference_mmd2(a[3:6], b[2:4]),
        _reference_mmd2(a[6:10], b[4:7]),
    ]
    value, std = metrics.kid_and_std(a, b, max_block_size=4)
    np.testing.assert_allclose(value, np.mean(blocks), rtol=1e-6)
    np.testing.assert_allclose(std, np.std(blocks, ddof=1) / np.sqrt(3), rtol=1e-6)


def test_kid_of_a_distribution_with_itself_is_near_zero():
    a = _correlated_features(10, 1000, 16)
    b = _correlated_features(11, 1000, 16, shift=0.5)
    assert abs(metrics.kid(a[:500], a[500:])) < 0.02 * metrics.kid(a[:500], b[:500])
    with pytest.raises(ValueError, match="2 features per block"):
        metrics.kid(a[:3], b[:3], max_block_size=2)


def test_inception_score_matches_reference_and_closed_forms():
    logits = np.random.default_rng(12).standard_normal((64, 20)) * 3
    p_yx = scipy.special.softmax(logits, axis=1)
    p_y = p_yx.mean(0)
    want = np.exp(np.mean(np.sum(p_yx * (np.log(p_yx) - np.log(p_y)), axis=1)))
    np.testing.assert_allclose(metrics.inception_score(logits), want, rtol=1e-6)
    # Identical predictions: IS = 1. Confident predictions spread evenly over 10 of 1008
    # classes: IS = 10.
    np.testing.assert_allclose(
        metrics.inception_score(np.tile(logits[:1], (8, 1))), 1.0, rtol=1e-12
    )
    confident = np.zeros((50, 1008))
    confident[np.arange(50), np.arange(50) % 10] = 1000.0
    np.testing.assert_allclose(metrics.inception_score(confident), 10.0, rtol=1e-12)


def _fake_inception_fn(images):
    # Stand-in with the real function's interface: features encode the image, so the order and
    # completeness of the outputs can be checked exactly.
    flat = images.reshape(len(images), -1).astype(np.float32)
    return {"pool_3": flat[:, :4] * 2.0, "logits": flat[:, :2]}


def test_compute_inception_outputs_keeps_every_image_in_order():
    images = np.random.default_rng(13).integers(0, 256, (23, 4, 4, 3), dtype=np.uint8)
    calls = []

    def fn(chunk):
        calls.append(len(chunk))
        return _fake_inception_fn(chunk)

    batches = [images[:5], images[5:6], images[6:20], images[20:]]
    outputs = inception.compute_inception_outputs(fn, batches, batch_size=8)
    np.testing.assert_array_equal(outputs["pool_3"], _fake_inception_fn(images)["pool_3"])
    np.testing.assert_array_equal(outputs["logits"], _fake_inception_fn(images)["logits"])
    assert calls == [8, 8, 8]  # fixed-size calls; the last 7 images padded, not dropped


def test_stats_file_round_trip_and_original_layout(tmp_path):
    images = np.random.default_rng(14).integers(0, 256, (11, 4, 4, 3), dtype=np.uint8)
    pool_3 = dataset_stats.compute_pool3([images[:6], images[6:]], _fake_inception_fn, batch_size=4)
    assert pool_3.shape == (11, 4) and pool_3.dtype == np.float32
    written = dataset_stats.save_stats(tmp_path / "ours.npz", pool_3)
    loaded = dataset_stats.load_stats(tmp_path / "ours.npz")
    mu, sigma = pool_3.astype(np.float64).mean(0), np.cov(pool_3.astype(np.float64), rowvar=False)
    for result in (written, loaded):
        np.testing.assert_allclose(result.mu, mu, rtol=1e-12)
        np.testing.assert_allclose(result.sigma, sigma, rtol=1e-12)
        np.testing.assert_array_equal(result.pool_3, pool_3)
    # The original's cifar10_stats.npz layout: only the features, under 'pool_3'.
    np.savez(tmp_path / "original.npz", pool_3=pool_3)
    original = dataset_stats.load_stats(tmp_path / "original.npz")
    np.testing.assert_allclose(original.mu, mu, rtol=1e-12)
    np.testing.assert_allclose(original.sigma, sigma, rtol=1e-12)
    np.savez(tmp_path / "bad.npz", features=pool_3)
    with pytest.raises(ValueError, match="neither"):
        dataset_stats.load_stats(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="tools.stats"):
        dataset_stats.load_stats(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="to_uint8"):
        dataset_stats.compute_pool3([images.astype(np.float32) / 255], _fake_inception_fn)


def test_dataset_pool3_covers_every_image_in_order():
    # DIGITS (bundled with scikit-learn): 1,617 gray training images; the last batch is partial.
    config = ml_collections.ConfigDict(
        {"data": {"dataset": "DIGITS", "image_size": 8, "num_channels": 1, "resize": "pad"}}
    )
    pool_3 = dataset_stats.compute_dataset_pool3(
        config, _fake_inception_fn, split="train", batch_size=500
    )
    assert pool_3.shape == (1617, 4)
    source = datasets.get_source(config, "train")
    for i in (0, 999, 1616):
        gray = source[i][0].astype(np.float32)  # replicated to RGB before the network
        np.testing.assert_array_equal(
            pool_3[i], 2.0 * np.concatenate([gray[0, 0], gray[0, 0], gray[0, 0], gray[0, 1]])
        )
    assert dataset_stats.stats_filename(config) == "digits_8_stats.npz"
    config.data.dataset = "CIFAR10"
    assert dataset_stats.stats_filename(config) == "cifar10_stats.npz"
    config.data.update({"dataset": "LSUN", "category": "bedroom", "image_size": 256})
    assert dataset_stats.stats_filename(config) == "lsun_bedroom_256_stats.npz"
