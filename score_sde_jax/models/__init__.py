"""Score networks and the glue that turns a config into a network and a network into a score.

`get_model(config)` builds the Flax module named by ``config.model.name``;
`init_params(model, rng, x, labels)` computes its initial parameters (``model.init``'s, fast);
`abstract_params(model, example_shape)` traces its parameter shapes without computing them;
`get_score_fn(sde, model, continuous)` adapts its raw output to a score function
``score_fn(params, x, t, rng=None)`` (see `score_sde_jax.score_fns`).
"""

import functools
import importlib
import types
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import traverse_util

from score_sde_jax import score_fns
from score_sde_jax.models import batched_jaxpr

# model name -> module that defines and registers it; imported lazily so that building one
# network does not import every architecture.
_MODEL_MODULES = {
    "ncsnpp": "ncsnpp",
    "ddpm": "ddpm",
    "ncsn": "ncsnv2",
    "ncsnv2_64": "ncsnv2",
    "ncsnv2_128": "ncsnv2",
    "ncsnv2_256": "ncsnv2",
    "mlp": "mlp",
}

_MODELS = {}

# LLVM -O1 instead of -O3 for a program that runs once: same values (the same HLO, fused
# multiply-adds included), a fraction of the compile time.
_FAST_COMPILE = {"xla_backend_optimization_level": 1}


def register_model(name: str):
    """Class decorator: ``cls.from_config(config)`` becomes buildable as ``model.name = name``."""

    def decorator(cls):
        _MODELS[name] = cls
        return cls

    return decorator


def get_model(config):
    """Builds the (uninitialised) Flax module for ``config.model.name``."""
    name = config.model.name
    if name not in _MODEL_MODULES:
        raise ValueError(f"Unknown model {name!r}; valid names: {sorted(_MODEL_MODULES)}.")
    _check_knobs(config.model, name)
    importlib.import_module(f"{__name__}.{_MODEL_MODULES[name]}")
    return _MODELS[name].from_config(config)


# Memory knobs (not original keys): their "off" value and the networks that have them.
_KNOBS = {"dtype": ("float32", ("ncsnpp",)), "remat": (False, ("ncsnpp", "ddpm"))}


def _check_knobs(model_config, name):
    """A knob set on a network without it would be silently ignored: refuse it instead."""
    for knob, (off, networks) in _KNOBS.items():
        value = model_config.get(knob, off)
        if knob == "dtype":
            value = str(jnp.dtype(value))
        if value != off and name not in networks:
            raise ValueError(
                f"model.{knob}={value!r} is available for model.name in {list(networks)}, not "
                f"{name!r}; remove the override (or set it to {off!r})."
            )


def init_params(model, rng, x, labels, train: bool = False):
    """``model.init(rng, x, labels, train=train)["params"]``, bit for bit, in seconds.

    ``rng`` is a key or a dict of keys as `flax.linen.Module.init` takes; only the shapes of ``x``
    and ``labels`` matter. Outside a jax transformation the initialiser runs as one program with
    identical equations batched (`batched_jaxpr`), compiled at LLVM -O1: ~1/6 of the CPU time
    of ``jax.jit(model.init)`` for the 62M-parameter NCSN++. Inside one (``rng`` a tracer) it is
    plain ``model.init``.
    """

    def init(rng, x, labels):
        return model.init(rng, x, labels, train=train)["params"]

    if any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves((rng, x, labels))):
        return init(rng, x, labels)
    return batched_jaxpr.evaluate(init, rng, x, labels, compiler_options=_FAST_COMPILE)


@functools.lru_cache(maxsize=16)
def abstract_params(model, example_shape: tuple[int, ...]) -> Mapping:
    """Shapes and dtypes of ``model``'s parameters for inputs of ``example_shape``, uncomputed.

    Returns a read-only ``{path tuple: ShapeDtypeStruct}`` in the order flax created the
    parameters (the order of the PyTorch port's layer list). jax sorts dict keys when a tree
    leaves a traced function, so the order is recorded while tracing.
    """
    order = []

    def init(rng):
        x = jnp.zeros((1, *example_shape), jnp.float32)
        labels = jnp.zeros((1,), jnp.int32)  # integer labels suit every network, discrete VE too
        variables = model.init({"params": rng, "dropout": rng}, x, labels, train=False)
        order.extend(traverse_util.flatten_dict(variables["params"]))
        return variables["params"]

    shapes = traverse_util.flatten_dict(jax.eval_shape(init, jax.random.PRNGKey(0)))
    return types.MappingProxyType({path: shapes[path] for path in order})


def get_model_fn(model):
    """``model_fn(params, x, labels, rng)`` of a Linen score network: train mode (dropout on,
    key ``rng``) when ``rng`` is given, eval mode when it is ``None``."""

    def model_fn(params, x, labels, rng=None):
        if rng is None:
            return model.apply({"params": params}, x, labels, train=False)
        return model.apply({"params": params}, x, labels, train=True, rngs={"dropout": rng})

    return model_fn


def get_score_fn(sde, model, continuous: bool):
    """``score_fn(params, x, t, rng=None)`` of a network (see `score_fns`).

    See docs/original_code.md#sdes-and-time-conditioning.
    """
    return score_fns.get_score_fn(sde, get_model_fn(model), continuous)
