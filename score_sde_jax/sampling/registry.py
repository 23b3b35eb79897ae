"""Samplers by name: the one table behind ``--sampler``, evaluation and training snapshots.

`SAMPLERS` maps each name to how its sampler is built from a config; `get_sampler` builds one
for a network's ``model_fn``. A new sampler is one entry of `SAMPLERS`
(docs/sampling.md#samplers-by-name).
"""

import dataclasses
import functools
from collections.abc import Callable

import ml_collections
from absl import flags

from score_sde_jax import errors, score_fns, sde_lib
from score_sde_jax.sampling import few_step, ode, pc


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """Which sampler to run and its options (the sampling flags of ``sample`` / ``evaluate``).

    Attributes:
      name: one of `SAMPLERS`; None: ``config.sampling.method``.
      num_steps: 'pc': number of noise levels N (default ``model.num_scales``; continuous-time
        models only); 'ode': fixed steps instead of adaptive ones; 'sde': solver steps (default
        N); 'heun' / 'dpm2' / 'dpm3': required.
      solver: 'ode': diffrax method (default 'dopri5'); 'sde': 'euler' (default) or 'heun'.
      rtol, atol: tolerances of the adaptive ODE solver.
      reproduce_original: 'pc' only: the original's batch-shared Langevin step, corrector-first
        order and Euler–Maruyama dt = 1/N (samples then depend on their batch-mates).
    """

    name: str | None = None
    num_steps: int | None = None
    solver: str | None = None
    rtol: float = 1e-5
    atol: float = 1e-5
    reproduce_original: bool = False

    def describe(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass(frozen=True)
class SamplerEntry:
    """How the sampler of one name is built.

    Attributes:
      build: ``build(sde, score_fn, shape, spec, eps, s) -> sample(rng, params, z=None) -> (x,
        nfe)``, ``s`` the config's ``sampling`` section.
      discrete_levels: the sampler steps the SDE's own N levels with the network's own time
        conditioning (``training.continuous``) and ``num_steps`` sets N. Otherwise it evaluates
        the score at arbitrary times (`continuous_time_score_fn`).
      needs_num_steps: ``num_steps`` is required.
      has_original_mode: accepts ``reproduce_original``.
    """

    build: Callable
    discrete_levels: bool = False
    needs_num_steps: bool = False
    has_original_mode: bool = False


def _solver_kwargs(spec):
    return {} if spec.solver is None else {"method": spec.solver}


def _build_pc(sde, score_fn, shape, spec, eps, s):
    return pc.get_pc_sampler(
        sde,
        score_fn,
        shape,
        predictor=s.predictor.lower(),
        corrector=s.corrector.lower(),
        snr=s.snr,
        n_steps=s.n_steps_each,
        probability_flow=s.probability_flow,
        denoise=s.noise_removal,
        eps=eps,
        reproduce_original=spec.reproduce_original,
    )


def _build_ode(sde, score_fn, shape, spec, eps, s):
    return ode.get_ode_sampler(
        sde,
        score_fn,
        shape,
        rtol=spec.rtol,
        atol=spec.atol,
        eps=eps,
        denoise=s.noise_removal,
        num_steps=spec.num_steps,
        **_solver_kwargs(spec),
    )


def _build_sde(sde, score_fn, shape, spec, eps, s):
    kwargs = dict(num_steps=spec.num_steps, eps=eps, denoise=s.noise_removal)
    return ode.get_sde_sampler(sde, score_fn, shape, **kwargs, **_solver_kwargs(spec))


def _build_heun(sde, score_fn, shape, spec, eps, s):
    return few_step.get_heun_sampler(
        sde, score_fn, shape, spec.num_steps, eps=eps, denoise=s.noise_removal
    )


def _build_dpm_solver(sde, score_fn, shape, spec, eps, s, *, order):
    return few_step.get_dpm_solver_sampler(
        sde, score_fn, shape, spec.num_steps, order=order, eps=eps, denoise=s.noise_removal
    )


# The samplers of ``--sampler``, in the order the flags list them.
SAMPLERS = {
    "pc": SamplerEntry(_build_pc, discrete_levels=True, has_original_mode=True),
    "ode": SamplerEntry(_build_ode),
    "sde": SamplerEntry(_build_sde),
    "heun": SamplerEntry(_build_heun, needs_num_steps=True),
    "dpm2": SamplerEntry(functools.partial(_build_dpm_solver, order=2), needs_num_steps=True),
    "dpm3": SamplerEntry(functools.partial(_build_dpm_solver, order=3), needs_num_steps=True),
}


def _names(predicate) -> str:
    return "/".join(name for name, entry in SAMPLERS.items() if predicate(entry))


def _resolve(config, spec: SamplerSpec | None):
    """The validated spec (its name set) and its `SamplerEntry`."""
    spec = spec or SamplerSpec()
    name = str(spec.name or config.sampling.method).lower()
    if name not in SAMPLERS:
        raise errors.UsageError(f"Unknown sampler {name!r}; valid names: {list(SAMPLERS)}.")
    entry = SAMPLERS[name]
    if entry.needs_num_steps and spec.num_steps is None:
        raise errors.UsageError(
            f"--sampler={name} needs --num_steps", "e.g. --num_steps=18 for heun, 20 for dpm"
        )
    if spec.reproduce_original and not entry.has_original_mode:
        original = _names(lambda e: e.has_original_mode)
        raise errors.UsageError(f"--reproduce_original applies to --sampler={original} only.")
    return dataclasses.replace(spec, name=name), entry


def _sampling_config(config, spec: SamplerSpec, entry: SamplerEntry):
    """``config`` with ``model.num_scales`` = the requested number of levels (discrete levels)."""
    if not entry.discrete_levels or spec.num_steps is None:
        return config
    if not config.training.continuous:
        raise errors.UsageError(
            f"--num_steps changes the {spec.name.upper()} sampler's noise levels, which a "
            "discrete-time model (training.continuous=False) was trained on; keep N = "
            f"{config.model.num_scales} or use "
            f"--sampler={_names(lambda e: not e.discrete_levels)}."
        )
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.num_scales = int(spec.num_steps)
    return config


def continuous_time_score_fn(config, sde, model_fn):
    """The score function for solvers that evaluate it at arbitrary times (ODE, SDE, likelihood).

    The original hard-codes ``continuous=True`` there (docs/original_code.md, D9), which crashes
    discrete VE models (they take integer noise indices); those get their discrete labels (rounded
    times) instead. Discrete VP models keep the original's approximation (999·t labels, continuous
    std).
    """
    continuous = config.training.continuous or not isinstance(sde, sde_lib.VESDE)
    return score_fns.get_score_fn(sde, model_fn, continuous=continuous)


def get_sde(config, spec: SamplerSpec | None = None) -> sde_lib.SDE:
    """The SDE that the sampler of ``spec`` runs (its N set by ``num_steps`` for 'pc')."""
    spec, entry = _resolve(config, spec)
    with errors.config_values("the SDE of the config"):
        return sde_lib.get_sde(_sampling_config(config, spec, entry))


def get_sampler(config, model_fn, shape, spec: SamplerSpec | None = None):
    """The sampler ``spec`` names for the network ``model_fn(params, x, labels, rng=None)``.

    Args:
      config: the model's config; its ``sampling`` section configures the sampler
        (docs/configs.md), ``sde_lib.get_sampling_eps`` gives the end time.
      model_fn: the network (e.g. ``models.get_model_fn(models.get_model(config))``).
      shape: sample shape [B, ...].
      spec: the `SamplerSpec`; default ``config.sampling.method`` with default options.

    Returns:
      ``sample(rng, params, z=None) -> (x, nfe)``: ``rng`` one key or B per-sample keys, ``z`` an
      optional prior sample, ``x`` in model space and ``nfe`` the score evaluations per sample.

    Raises:
      errors.UsageError (a ValueError): unknown sampler (valid names listed), missing
        ``num_steps``, DPM-Solver on a VE SDE, ... (the samplers check their options with
        ValueError; all of them are settings of the user).
    """
    spec, entry = _resolve(config, spec)
    config = _sampling_config(config, spec, entry)
    with errors.config_values(f"the {spec.name!r} sampler"):
        sde = sde_lib.get_sde(config)
        if entry.discrete_levels:
            score_fn = score_fns.get_score_fn(sde, model_fn, continuous=config.training.continuous)
        else:
            score_fn = continuous_time_score_fn(config, sde, model_fn)
        eps = sde_lib.get_sampling_eps(config)
        return entry.build(sde, score_fn, tuple(shape), spec, eps, config.sampling)


def define_flags() -> None:
    """Defines the sampler flags of the ``sample`` and ``evaluate`` commands (`SamplerSpec`)."""
    flags.DEFINE_enum(
        "sampler",
        None,
        list(SAMPLERS),
        "Sampler (default: config.sampling.method). "
        f"{_names(lambda e: e.needs_num_steps)} need --num_steps.",
    )
    flags.DEFINE_integer(
        "num_steps",
        None,
        "pc: noise levels N (default model.num_scales); ode: fixed steps (default adaptive); "
        "sde: steps (default N); heun/dpm2/dpm3: steps (required).",
    )
    flags.DEFINE_string("solver", None, "ode: diffrax method (dopri5); sde: euler or heun.")
    flags.DEFINE_float("rtol", 1e-5, "Relative tolerance of the adaptive ODE solver.")
    flags.DEFINE_float("atol", 1e-5, "Absolute tolerance of the adaptive ODE solver.")
    flags.DEFINE_bool(
        "reproduce_original",
        False,
        "pc only: the original's batch-shared Langevin step, corrector-first order and "
        "dt = 1/N (samples then depend on the batch size).",
    )


def spec_from_flags() -> SamplerSpec:
    """The `SamplerSpec` of the flags of `define_flags`."""
    f = flags.FLAGS
    return SamplerSpec(f.sampler, f.num_steps, f.solver, f.rtol, f.atol, f.reproduce_original)
