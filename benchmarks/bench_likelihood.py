"""Likelihood throughput: probability-flow ODE log-likelihood on a 2-D Gaussian mixture (VP SDE).

Two score functions (the mixture's exact score and a small MLP trained for a few hundred steps
with the continuous loss) × two divergences (Rademacher Hutchinson and exact trace). Prints one
JSON object: per case, compile time, steady-state examples/s and NFE statistics.

    python benchmarks/bench_likelihood.py [--batch 1024] [--train_steps 400]
"""

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from score_sde_jax import gmm, likelihood, losses, score_fns, sde_lib
from score_sde_jax.models import get_model
from score_sde_jax.sampling.solvers import DEFAULT_ODE_METHOD

MIXTURE = gmm.mixture(
    [0.3, 0.7],
    [[-1.4, 0.7], [0.6, -0.3]],
    [[[0.3, 0.1], [0.1, 0.2]], [[0.2, 0.0], [0.0, 0.4]]],
)


def train_mlp(sde, steps, batch_size=1024):
    """A 'mlp' score network (nf 64, 2 blocks) trained on the mixture with the continuous loss."""
    config = ml_collections.ConfigDict({"model": {"name": "mlp", "nf": 64, "num_layers": 2}})
    model = get_model(config)

    def model_fn(params, x, labels, rng):
        if rng is None:
            return model.apply({"params": params}, x, labels, train=False)
        return model.apply({"params": params}, x, labels, train=True, rngs={"dropout": rng})

    score_fn = score_fns.get_score_fn(sde, model_fn, continuous=True)
    loss_fn = losses.get_sde_loss_fn(sde, score_fn)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1,)))["params"]
    tx = optax.adam(optax.cosine_decay_schedule(3e-3, steps, alpha=0.05))

    @jax.jit
    def train(params, rng):
        def step(carry, rng):
            params, opt_state = carry
            data_rng, loss_rng = jax.random.split(rng)
            batch, _ = gmm.sample(data_rng, MIXTURE, batch_size)
            grads = jax.grad(loss_fn)(params, loss_rng, batch)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(rng, steps))
        return params

    return score_fn, train(params, jax.random.PRNGKey(1))


def bench(sde, score_fn, params, x, hutchinson_type, repeats=3):
    fn = likelihood.get_log_prob_fn(sde, score_fn, hutchinson_type)
    start = time.perf_counter()
    jax.block_until_ready(fn(jax.random.PRNGKey(0), params, x))
    compile_s = time.perf_counter() - start
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        log_p, _, nfe = jax.block_until_ready(fn(jax.random.PRNGKey(i + 1), params, x))
        times.append(time.perf_counter() - start)
    best = min(times)
    nfe = np.asarray(nfe)
    return {
        "compile_s": round(compile_s, 2),
        "seconds_per_batch": round(best, 4),
        "examples_per_s": round(x.shape[0] / best, 1),
        "nfe_mean": round(float(nfe.mean()), 1),
        "nfe_max": int(nfe.max()),
        "mean_log_p": round(float(np.mean(log_p)), 4),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--train_steps", type=int, default=400)
    args = parser.parse_args()

    sde = sde_lib.VPSDE()
    x, _ = gmm.sample(jax.random.PRNGKey(42), MIXTURE, args.batch)
    exact_log_p = gmm.get_log_prob_fn(sde)(MIXTURE, x, jnp.full((args.batch,), 1e-5))
    mlp_score_fn, mlp_params = train_mlp(sde, args.train_steps)

    results = {
        "device": str(jax.devices()[0].device_kind),
        "platform": platform.machine(),
        "sde": "vpsde(0.1, 20)",
        "batch": args.batch,
        "rtol_atol": 1e-5,
        "solver": DEFAULT_ODE_METHOD,
        "closed_form_mean_log_p": round(float(exact_log_p.mean()), 4),
        "cases": {},
    }
    for name, score_fn, params in (
        ("mixture_exact_score", gmm.get_score_fn(sde), MIXTURE),
        ("mlp", mlp_score_fn, mlp_params),
    ):
        for hutchinson_type in ("rademacher", "exact"):
            results["cases"][f"{name}/{hutchinson_type}"] = bench(
                sde, score_fn, params, x, hutchinson_type
            )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
