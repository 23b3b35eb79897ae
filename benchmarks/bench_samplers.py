"""Sampler benchmarks: throughput, and accuracy against NFE on an exact-score mixture; prints JSON.

Section ``throughput`` (the default; top-level keys): two score networks with random weights,
both VP noise predictors behind `score_fns.get_score_fn`: (a) a 2-D MLP, (b) a small conv net
on 16×16×3 images. Timings exclude compilation (reported separately) and use whatever devices
jax sees.

Section ``accuracy`` (key ``accuracy``): the few-step samplers (`sampling.get_heun_sampler`,
`sampling.get_dpm_solver_sampler`) at several step counts, next to the PC sampler with
N = 1000 and a tight diffrax probability-flow ODE solve, on the 2-D Gaussian mixture of the
core tests (tests/test_sampling.py) with its exact score, for VE, VP and sub-VP; all samplers
of an SDE start from the same prior draws. Per sampler: score evaluations (``nfe``), the
energy distance of ``--points`` samples to the exact mixture (`evaluation.energy_distance`), its
``excess`` over the floor μ₀ (the expected distance of as many exact samples) and, for the
few-step samplers, ``path_rms``, the RMS distance to the ODE solution from the same prior draw
(discretisation error without sampling noise), and ``as_close_as_pc_1000``, the criterion of
tests/test_fast_sampling.py: ``energy`` ≤ PC-1000's + ``tolerance`` (3 μ₀, wider than 99.7 %
of the differences between two sets of exact samples). ``exact`` holds μ₀ and the mean and
standard deviation of the distance over sets of exact samples.

    python benchmarks/bench_samplers.py [--quick] [--sections throughput,accuracy]
        [--points 100000]

The accuracy section takes ~10 min of CPU time at the default 100 000 points (most of it in
the PC sampler and the ODE solve), ~2 min with --quick (20 000 points).
"""

import argparse
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax import gmm, sampling, score_fns, sde_lib
from score_sde_jax.evaluation.energy_distance import MixtureEnergyDistance
from score_sde_jax.sampling.solvers import DEFAULT_ODE_METHOD

# The accuracy section's reference: a tight probability-flow ODE solve.
ODE_REFERENCE = f"ode_{DEFAULT_ODE_METHOD}_tol1e-6"

# The 2-D part of the core tests' mixture (tests/test_sampling.py).
WEIGHTS = [0.25, 0.25, 0.5]
MEANS = [[-1.5, 1.0], [1.5, 1.0], [0.0, -1.0]]
COVS = [[[0.3, 0.1], [0.1, 0.2]], [[0.2, -0.05], [-0.05, 0.3]], [[0.4, 0.0], [0.0, 0.1]]]


def time_embedding(labels, dim):
    """Sinusoidal embedding of the network label (999·t for VP)."""
    freqs = jnp.exp(-jnp.log(10_000.0) * jnp.arange(dim // 2) / (dim // 2))
    angles = labels[:, None] * freqs[None]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class MLP(nn.Module):
    width: int = 128

    @nn.compact
    def __call__(self, x, labels):
        h = jnp.concatenate([x, time_embedding(labels, 32)], axis=-1)
        for _ in range(3):
            h = nn.silu(nn.Dense(self.width)(h))
        return nn.Dense(x.shape[-1])(h)


class ConvNet(nn.Module):
    channels: int = 32

    @nn.compact
    def __call__(self, x, labels):
        emb = nn.Dense(self.channels)(time_embedding(labels, 32))[:, None, None, :]
        h = nn.Conv(self.channels, (3, 3))(x)
        for _ in range(3):
            h = h + nn.Conv(self.channels, (3, 3))(nn.silu(nn.GroupNorm(8)(h) + emb))
        return nn.Conv(x.shape[-1], (3, 3))(nn.silu(h))


def build(module, shape, sde):
    params = module.init(jax.random.key(0), jnp.zeros(shape), jnp.zeros(shape[:1]))["params"]

    def model_fn(params, x, labels, rng=None):
        return module.apply({"params": params}, x, labels)

    return params, score_fns.get_score_fn(sde, model_fn, continuous=True)


def measure(sample, params, batch):
    start = time.perf_counter()
    x, nfe = sample(jax.random.key(0), params)
    jax.block_until_ready(x)
    first = time.perf_counter() - start
    start = time.perf_counter()
    x, nfe = sample(jax.random.key(1), params)
    jax.block_until_ready(x)
    seconds = time.perf_counter() - start
    nfe = jnp.asarray(nfe)
    return {
        "batch": batch,
        "seconds": round(seconds, 3),
        "compile_seconds": round(first - seconds, 2),
        "samples_per_s": round(batch / seconds, 2),
        "nfe_mean": float(nfe.mean()),
        "nfe_max": int(nfe.max()),
    }


def throughput(quick, results):
    """Adds the rows of section ``throughput`` (keys ``N``, ``mlp_2d``, ``conv_16x16x3``)."""
    n = 100 if quick else 1000
    sde = sde_lib.VPSDE(0.1, 20.0, n)
    cases = {
        "mlp_2d": (MLP(), (256 if quick else 1024, 2)),
        "conv_16x16x3": (ConvNet(), (8 if quick else 16, 16, 16, 3)),
    }
    results["N"] = n
    for name, (module, shape) in cases.items():
        params, score_fn = build(module, shape, sde)
        pc = sampling.get_pc_sampler(sde, score_fn, shape, "euler_maruyama", "none", 0.16)
        pc_corrected = sampling.get_pc_sampler(
            sde, score_fn, shape, "reverse_diffusion", "langevin", 0.16
        )
        ode = sampling.get_ode_sampler(sde, score_fn, shape, rtol=1e-5, atol=1e-5)
        results[name] = {
            "pc_euler_maruyama": measure(pc, params, shape[0]),
            "pc_reverse_diffusion_langevin": measure(pc_corrected, params, shape[0]),
            f"ode_{DEFAULT_ODE_METHOD}_tol1e-5": measure(ode, params, shape[0]),
        }


def run_together(samplers, params, z):
    """{key: (x, nfe)} of several samplers started from the same prior draw z, one program."""

    @jax.jit
    def run(params, z):
        return {key: f(jax.random.key(1), params, z=z) for key, f in samplers.items()}

    return jax.device_get(run(params, z))


def accuracy(quick, points):
    """NFE against energy distance to the exact mixture (see the module docstring)."""
    mixture = gmm.mixture(WEIGHTS, MEANS, COVS)
    energy = MixtureEnergyDistance(WEIGHTS, MEANS, COVS)
    floor = energy.floor(points)
    exact = [
        energy(gmm.sample(jax.random.key(100 + i), mixture, points)[0])
        for i in range(4 if quick else 16)
    ]
    spread = float(np.std(exact, ddof=1))
    steps = {
        "heun": [8, 16, 24] if quick else [4, 8, 12, 16, 24],
        "dpm2": [8, 16, 24] if quick else [4, 8, 12, 16, 24],
        "dpm3": [4, 8, 16] if quick else [4, 8, 12, 16],
    }
    sdes = {
        "ve": sde_lib.VESDE(0.01, 10.0, 1000),
        "vp": sde_lib.VPSDE(0.1, 20.0, 1000),
        "subvp": sde_lib.subVPSDE(0.1, 20.0, 1000),
    }
    shape = (points, 2)
    table = {
        "setting": "2-D three-component mixture of tests/test_sampling.py, exact score; "
        "energy distance of `points` samples to the exact mixture",
        "points": points,
        "exact": {
            "floor": floor,
            "mean": float(np.mean(exact)),
            "spread": spread,
            "sets": len(exact),
        },
        "tolerance": 3 * floor,
        "seconds": {},
    }
    for name, sde in sdes.items():
        score_fn = gmm.get_score_fn_2d(sde)
        # (sampler, steps, grid): the default grids, then the others at 49 NFE.
        configs = [(kind, n, None) for kind, counts in steps.items() for n in counts]
        configs += [("heun", 24, "time_uniform" if name == "ve" else "karras")]
        configs += [("dpm2", 24, g) for g in ("log_snr", "time_uniform")]
        configs += [("dpm3", 16, g) for g in ("log_snr", "time_uniform")]
        samplers = {}
        for kind, n, schedule in configs:
            label = f"{kind}_{n}" + (f"_{schedule}" if schedule else "")
            if kind == "heun":
                samplers[label] = sampling.get_heun_sampler(
                    sde, score_fn, shape, n, schedule=schedule
                )
            elif name != "ve":
                samplers[label] = sampling.get_dpm_solver_sampler(
                    sde, score_fn, shape, n, order=int(kind[-1]), schedule=schedule
                )
        predictor = "reverse_diffusion" if name == "ve" else "euler_maruyama"
        samplers["pc_1000"] = sampling.get_pc_sampler(
            sde, score_fn, shape, predictor, "none", snr=0.16
        )
        samplers[ODE_REFERENCE] = sampling.get_ode_sampler(
            sde, score_fn, shape, rtol=1e-6, atol=1e-6, denoise=True
        )
        start = time.perf_counter()
        results = run_together(samplers, mixture, sde.prior_sampling(jax.random.key(0), shape))
        reference = results[ODE_REFERENCE][0]
        pc_energy = energy(results["pc_1000"][0])
        rows = {}
        for label, (x, nfe) in results.items():
            e = energy(x)
            row = {"nfe": float(np.mean(nfe)), "energy": e, "excess": e - floor}
            if label not in ("pc_1000", ODE_REFERENCE):
                row["path_rms"] = float(np.sqrt(np.mean(np.sum((x - reference) ** 2, -1))))
                row["as_close_as_pc_1000"] = bool(e <= pc_energy + table["tolerance"])
            rows[label] = row
        table[name] = dict(sorted(rows.items(), key=lambda kv: kv[1]["nfe"]))
        table["seconds"][name] = round(time.perf_counter() - start, 1)
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and samples")
    parser.add_argument(
        "--sections", default="throughput", help="comma-separated: throughput, accuracy"
    )
    parser.add_argument(
        "--points", type=int, default=None, help="samples per accuracy row (100000; quick 20000)"
    )
    args = parser.parse_args()
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - {"throughput", "accuracy"})
    if unknown or not sections:
        raise ValueError(f"Unknown sections {unknown}; valid: throughput, accuracy.")
    results = {"devices": [str(d) for d in jax.devices()]}
    if "throughput" in sections:
        throughput(args.quick, results)
    if "accuracy" in sections:
        points = args.points or (20_000 if args.quick else 100_000)
        results["accuracy"] = accuracy(args.quick, points)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
