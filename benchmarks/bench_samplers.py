"""Throughput and NFE of the PC and probability-flow ODE samplers; prints JSON.

Two score networks with random weights, both VP noise predictors behind
`score_fns.get_score_fn`: (a) a 2-D MLP, (b) a small conv net on 16×16×3 images. Timings
exclude compilation (reported separately) and use whatever devices jax sees.

    python benchmarks/bench_samplers.py [--quick]
"""

import argparse
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde_jax import sampling, score_fns, sde_lib


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and samples")
    quick = parser.parse_args().quick
    n = 100 if quick else 1000
    sde = sde_lib.VPSDE(0.1, 20.0, n)
    cases = {
        "mlp_2d": (MLP(), (256 if quick else 1024, 2)),
        "conv_16x16x3": (ConvNet(), (8 if quick else 16, 16, 16, 3)),
    }
    results = {"devices": [str(d) for d in jax.devices()], "N": n}
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
            "ode_tsit5_tol1e-5": measure(ode, params, shape[0]),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
