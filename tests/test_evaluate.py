"""The evaluation tool (issue 6, item 2): `driver.evaluate` and ``python -m score_sde_jax.evaluate``.

A tiny MLP on 8x8 digits is trained for two steps (checkpoints at steps 1 and 2, i.e. checkpoint
indices 1 and 2 with snapshot_freq 1). Loss and bits/dim are recomputed independently from the
public APIs (input pipeline, losses, likelihood) with the seeds docs/evaluation.md documents; the FID
mode runs with the random-weight Inception of tests/fixtures/fid_inception.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from conftest import FIXTURES, REPO_ROOT
from test_inception import _regenerate_state_dict

from score_sde_jax import checkpoints, likelihood, losses, models, score_fns, sde_lib, training
from score_sde_jax.configs import digits
from score_sde_jax.data import pipeline
from score_sde_jax.evaluation import (
    checkpoint_index,
    dataset_stats,
    driver,
    inception_weights,
    metrics,
)
from score_sde_jax.sampling import generation, registry


def tiny_config():
    """Digits with an MLP at 8x8; no warmup and no EMA lag so the two checkpoints differ."""
    config = digits.get_config()
    t = config.training
    t.n_iters, t.n_jitted_steps, t.batch_size = 2, 1, 8
    t.log_freq = t.snapshot_freq = t.snapshot_freq_for_preemption = 1
    t.eval_freq, t.snapshot_sampling = 100, False
    config.optim.warmup, config.optim.lr = 0, 1e-2
    config.data.image_size = 8
    config.model.name, config.model.nf, config.model.num_layers = "mlp", 32, 1
    config.model.num_scales, config.model.ema_rate = 8, 0.0
    e = config.eval
    e.batch_size = 32  # the 180 held-out digits: 5 full batches and one padded one
    e.begin_ckpt, e.end_ckpt = 2, 2
    e.enable_loss, e.enable_bpd, e.enable_sampling = True, True, False
    return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    training.train_and_evaluate(tiny_config(), str(workdir))
    return workdir


@pytest.fixture(scope="module")
def config(workdir):
    config = checkpoints.RunFolder(workdir).saved_config()
    config.eval.bpd_num_repeats = 2
    config.eval.hutchinson_type = "gaussian"
    return config


@pytest.fixture(scope="module")
def report(config, workdir):
    return driver.evaluate(config, workdir, "eval_loss_bpd")


@pytest.fixture(scope="module")
def network(config, workdir):
    params = checkpoints.load_checkpoint_params(config, workdir=workdir, checkpoint=2).params
    sde = sde_lib.get_sde(config)
    return params, sde, models.get_model_fn(models.get_model(config))


def _key(seed, *indices):
    key = jax.random.PRNGKey(seed)
    for index in indices:
        key = jax.random.fold_in(key, index)
    return key


def test_eval_loss_equals_independent_computation(config, workdir, report, network):
    params, sde, model_fn = network
    t = config.training
    loss_fn = jax.jit(
        losses.get_loss_fn(
            sde,
            model_fn,
            continuous=t.continuous,
            reduce_mean=t.reduce_mean,
            likelihood_weighting=t.likelihood_weighting,
            train=False,
            per_example=True,
        )
    )
    _, eval_iter = pipeline.create_datasets(config, seed=config.seed + 1, evaluation=True)
    expected = []
    for b, batch in enumerate(eval_iter):
        # The documented key: fold_in(fold_in(PRNGKey(seed + 1), 0 = loss stream), batch).
        value = loss_fn(params, _key(config.seed + 1, 0, b), batch["image"])
        expected.append(np.asarray(value)[batch["mask"]])
    expected = np.concatenate(expected)
    assert expected.shape == (180,)
    with np.load(workdir / "eval_loss_bpd" / "ckpt_2_loss.npz") as z:
        np.testing.assert_allclose(z["all_losses"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(report["checkpoints"]["2"]["loss"], expected.mean(), rtol=1e-5)
    assert report["last"]["ckpt"] == 2 and report["last"]["step"] == 2
    assert report["best"]["loss"]["ckpt"] == 2


def test_bits_per_dim_equal_likelihood_api_with_same_seeds(config, workdir, report, network):
    params, sde, model_fn = network
    score_fn = score_fns.get_score_fn(sde, model_fn, continuous=True)
    likelihood_fn = likelihood.get_likelihood_fn(sde, score_fn, "gaussian", centered=True)
    dequantized = ml_collections.ConfigDict(config.to_dict())
    dequantized.data.uniform_dequantization = True
    dequantized.training.batch_size = config.eval.batch_size
    passes = []
    for r in range(2):
        # Pass r: pipeline seed (seed + 1) + r, probes fold_in(... PRNGKey(seed + 1), 1, r, b).
        _, eval_iter = pipeline.create_datasets(
            dequantized, seed=config.seed + 1 + r, evaluation=True
        )
        values = []
        for b, batch in enumerate(eval_iter):
            bpd, _, _ = likelihood_fn(_key(config.seed + 1, 1, r, b), params, batch["image"])
            values.append(np.asarray(bpd)[batch["mask"]])
        passes.append(np.concatenate(values))
        with np.load(workdir / "eval_loss_bpd" / f"test_ckpt_2_bpd_{r}.npz") as z:
            np.testing.assert_allclose(z["bpd"], passes[-1], rtol=1e-6)
    # Fresh dequantization and probes on each pass: the passes differ far beyond the tolerance.
    assert np.min(np.abs(passes[0] - passes[1]) / np.abs(passes[0])) > 1e-6 * 10
    np.testing.assert_allclose(report["checkpoints"]["2"]["bpd"], np.mean(passes), rtol=1e-6)
    assert report["seeds"]["bpd_data_seeds"] == [config.seed + 1, config.seed + 2]
    assert 0 < np.mean(passes) < 40


def test_fid_mode_without_inception_weights_stops_with_the_message(workdir, tmp_path):
    missing = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    env = dict(
        os.environ,
        JAX_NUM_CPU_DEVICES="1",
        JAX_PLATFORMS="cpu",
        SCORE_SDE_INCEPTION_WEIGHTS=str(missing),
    )
    command = [
        sys.executable,
        "-m",
        "score_sde_jax.evaluate",
        f"--workdir={workdir}",
        "--config=configs/digits.py",
        "--config.eval.enable_sampling=True",
        "--eval_folder=x",
    ]
    result = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert f"FID Inception weights not found at {missing}" in result.stderr
    assert "never downloads" in result.stderr
    assert not (workdir / "x").exists()


class _Preempted(Exception):
    pass


@pytest.fixture(scope="module")
def fid_resources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fid")
    with np.load(FIXTURES / "fid_inception" / "fid_inception_random.npz") as z:
        names = [str(n) for n in z["state_dict_names"]]
        state_dict = _regenerate_state_dict(names, json.loads(str(z["state_dict_shapes"])))
    weights = folder / "fid_inception_random.npz"
    inception_weights.save_converted(weights, inception_weights.convert_state_dict(state_dict))
    # Reference "dataset" features: any pool_3 set serves to check the bookkeeping.
    stats_path = folder / "stats.npz"
    dataset_stats.save_stats(stats_path, np.random.default_rng(0).normal(size=(10, 2048)) + 0.5)
    return str(weights), str(stats_path)


def test_fid_pipeline_runs_and_resumes_after_preemption(config, workdir, fid_resources):
    weights, stats_path = fid_resources
    config = ml_collections.ConfigDict(config.to_dict())
    e = config.eval
    e.begin_ckpt, e.end_ckpt = 1, 2
    e.enable_loss, e.enable_bpd, e.enable_sampling = False, False, True
    e.num_samples, e.batch_size, e.sample_seeds = 6, 4, (5,)
    kwargs = dict(inception_weights_path=weights, stats_path=stats_path, inception_batch_size=4)

    def preempt(unit, result):
        raise _Preempted(unit)

    with pytest.raises(_Preempted, match="ckpt_1/seed_5/round_0"):
        driver.evaluate(config, workdir, "eval_fid", callback=preempt, **kwargs)
    folder = workdir / "eval_fid" / "ckpt_1" / "seed_5"
    with open(workdir / "eval_fid" / "progress.json") as f:
        assert list(json.load(f)["done"]) == ["ckpt_1/seed_5/round_0"]
    first_round = os.stat(folder / "samples_0.npz").st_mtime_ns

    events = []
    report = driver.evaluate(
        config, workdir, "eval_fid", callback=lambda u, r: events.append(u), **kwargs
    )
    assert events == [
        "ckpt_1/seed_5/round_1",
        "ckpt_1/seed_5/metrics",
        "ckpt_2/seed_5/round_0",
        "ckpt_2/seed_5/round_1",
        "ckpt_2/seed_5/metrics",
    ]
    assert os.stat(folder / "samples_0.npz").st_mtime_ns == first_round

    # Metrics equal a recomputation from the stored Inception outputs. With n features the
    # covariances have rank < n, so FID has a cheap closed form through n x n Gram matrices:
    # Tr((S1 S2)^1/2) = sum sqrt(eig(C C')) / sqrt((n1 - 1)(n2 - 1)), C = A B' for the centred
    # feature rows A, B (an independent route to the same number).
    data = dataset_stats.load_stats(stats_path)
    reference = data.pool_3.astype(np.float64)
    a = reference - reference.mean(axis=0)
    fids = {}
    for k in (1, 2):
        folder_k = workdir / "eval_fid" / f"ckpt_{k}" / "seed_5"
        outputs = [np.load(folder_k / f"statistics_{r}.npz") for r in range(2)]
        pool_3 = np.concatenate([o["pool_3"] for o in outputs]).astype(np.float64)
        logits = np.concatenate([o["logits"] for o in outputs])
        assert pool_3.shape == (6, 2048) and logits.shape == (6, 1008)
        b = pool_3 - pool_3.mean(axis=0)
        cross = a @ b.T
        gram = cross @ cross.T / ((len(a) - 1) * (len(b) - 1))
        trace_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0, None)))
        fids[k] = (
            np.sum((reference.mean(axis=0) - pool_3.mean(axis=0)) ** 2)
            + np.sum(a**2) / (len(a) - 1)
            + np.sum(b**2) / (len(b) - 1)
            - 2 * trace_sqrt
        )
        result = report["checkpoints"][str(k)]
        # fid_from_stats square-roots ~2040 round-off eigenvalues of rank-deficient 2048 x 2048
        # matrices: that alone moves it by up to ~1e-7 relative.
        np.testing.assert_allclose(result["fid"], fids[k], rtol=1e-5)
        np.testing.assert_allclose(result["is"], metrics.inception_score(logits), rtol=1e-10)
        np.testing.assert_allclose(result["kid"], metrics.kid(data.pool_3, pool_3), rtol=1e-10)
    assert fids[1] != fids[2]
    assert (
        report["last"]["ckpt"] == 2 and report["last"]["fid"] == report["checkpoints"]["2"]["fid"]
    )
    best = min(fids, key=fids.get)
    assert report["best"]["fid"] == {"ckpt": best, "value": pytest.approx(fids[best]), "step": best}
    assert report["seeds"]["sample_seeds"] == [5]

    # The stored samples are `sample --seed=5` samples: sample i = fold_in(PRNGKey(5), i).
    with np.load(folder / "samples_1.npz") as z:
        stored = z["images"]
    params = checkpoints.load_checkpoint_params(config, workdir=workdir, checkpoint=1).params
    generator = generation.Generator(config, registry.SamplerSpec(name="pc"), 4)
    images, _ = generation.generate(generator, params, seed=5, num_samples=2, start=4)
    np.testing.assert_array_equal(stored, images)

    # A third run has nothing left to do; other settings in the same folder are refused.
    events.clear()
    assert driver.evaluate(config, workdir, "eval_fid", **kwargs) == report
    e.num_samples = 8
    with pytest.raises(ValueError, match="eval.num_samples: stored 6, now 8"):
        driver.evaluate(config, workdir, "eval_fid", **kwargs)


def test_checkpoint_index_maps_to_step(config, workdir, tmp_path):
    assert checkpoint_index.checkpoint_step(config, 2) == 2 * config.training.snapshot_freq
    assert checkpoint_index.find_checkpoint(config, workdir, 2) == 2
    with pytest.raises(FileNotFoundError, match=r"no step 3 .* among the steps \[1, 2\]"):
        checkpoint_index.find_checkpoint(config, workdir, 3)
    # A converted original checkpoint_k holds k * snapshot_freq + n_jitted_steps updates (D16).
    original = config.copy_and_resolve_references()
    original.training.snapshot_freq, original.training.n_jitted_steps = 5, 2
    shutil.copytree(workdir / "checkpoints" / "2", tmp_path / "checkpoints" / "7")
    assert checkpoint_index.find_checkpoint(original, tmp_path, 1) == 7
    with pytest.raises(FileNotFoundError, match=r"no step 10 .* or 12 \(converted"):
        checkpoint_index.find_checkpoint(original, tmp_path, 2)
    # In this run's own counting step 2 is checkpoint 2, never checkpoint 1 + one dispatch.
    shutil.copytree(workdir / "checkpoints" / "2", tmp_path / "own" / "checkpoints" / "2")
    with pytest.raises(FileNotFoundError, match=r"no step 1 \(= 1 x .*\) among the steps \[2\]"):
        checkpoint_index.find_checkpoint(config, tmp_path / "own", 1)
