"""This package against the PyTorch port of the original, side by side in one run; prints JSON.

    python benchmarks/compare_pytorch.py --pytorch-repo PATH/score_sde_pytorch \\
        --pytorch-python PATH/venv/bin/python [--digits-workdir RUN] [--cases a,b]
        [--repeats 5] [--threads 2] [--idle-threshold 0.1] [--idle-wait 120]
        [--max-minutes M] [--device cpu|gpu] [--steps-per-call N] [--out FILE]

``--pytorch-repo`` is a checkout of ``yang-song/score_sde_pytorch`` (never vendored or fetched
here) and ``--pytorch-python`` an interpreter with torch, numpy, scipy and ml_collections. Two
worker processes run this file: ``jax`` (this interpreter) and ``torch`` (that one). For each
case the jax worker builds the network, writes its weights in the port's layout and the inputs,
the torch worker loads both, each checks its output against the other's, and then timed calls
alternate between the two (ABAB…, the order flipping every round). Before every timed call the
driver waits (at most ``--idle-wait`` s) until processes other than the workers use less than
``--idle-threshold`` of the machine (``/proc/stat``); medians of wall and process-CPU seconds are
reported with the ratio ours/port, the number of calls whose gate timed out ("not idle") and the
median share of all CPUs that other processes used during the timed calls ("others' CPU").
Compile time (ours) is reported apart and never timed.

Cases (float32 on both sides, ``--threads`` threads each):
  * ``ncsnpp_cifar10`` / ``ddpmpp_cifar10``: ``ve/cifar10_ncsnpp_continuous`` and
    ``vp/cifar10_ddpmpp_continuous`` at batch 8: forward (eval mode) and train step
    (loss, gradient, Adam with warm-up and clipping, EMA: `training.train_step` against the port's
    ``losses.get_step_fn``), with initial parameters from `models.init_params`;
  * ``ncsnpp_small``: NCSN++ with nf 32, ch_mult (1, 2), two blocks per level, 16 px, batch 32;
  * ``pc_small``: the PC sampler (reverse diffusion + Langevin, snr 0.16, N = 100) on the small
    network at batch 4, per score evaluation, next to the network forward alone at batch 4;
  * ``ode_digits`` / ``bpd_digits`` (with ``--digits-workdir``, a trained run of the default
    digits config): the probability-flow ODE sampler and bits/dim at rtol = atol = 1e-5 on the
    run's EMA weights, 16 samples / 16 held-out digits: ours with its default dopri5 and with
    tsit5 (per-sample steps), the port with scipy's RK45 (one step size for the flattened
    batch). NFE of the batch (ours: its slowest sample), wall time, and the agreement of
    samples / bits per dim.

``--device gpu`` runs the GPU cases instead, on the first GPU for both sides:
``ncsnpp_cifar10_gpu`` / ``ddpmpp_cifar10_gpu``, the two CIFAR-10 networks at batch 128: forward,
float32 train step (TF32 convolutions on both sides, their default) and ``train_bf16`` (ours: the
network computing in bfloat16, ``model.dtype``; the port: ``torch.autocast`` to bfloat16 around its
step, no loss scaling needed in bfloat16). A timed call is ``--steps-per-call`` steps (10 on a
GPU, 1 on a CPU; forwards and train steps only) waited for once; times are per step. The notes
give each side's examples/s, model TFLOP/s and MFU (the same model FLOPs, `models.flops`, for
both) and peak memory (ours: the compiled program's; the port:
``torch.cuda.max_memory_allocated``). The port runs with ``cudnn.benchmark`` on.

Runtime shims for the port, applied in its worker only: ``torch.utils.cpp_extension.load`` is
replaced by a stub while ``op`` is imported (its CUDA kernels are not built on a CPU and
``op.upfirdn2d`` uses its pure-PyTorch path on CPU tensors anyway); for the digits config
(positional embedding, 250 noise scales) the port's network gets a 1000-entry ``sigmas`` buffer
because it indexes it with 999·t even when ``scale_by_sigma`` is off (the value is unused).
On a GPU its FIR resampling (``upfirdn2d``) takes that pure-PyTorch path too: its CUDA kernel is
not built, and it has no bfloat16 version for autocast.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = {
    "ncsnpp_cifar10": {"config": "ve/cifar10_ncsnpp_continuous", "batch": 8},
    "ddpmpp_cifar10": {"config": "vp/cifar10_ddpmpp_continuous", "batch": 8},
    "ncsnpp_small": {"config": "ve/cifar10_ncsnpp_continuous", "batch": 32, "small": True},
    "pc_small": {
        "config": "ve/cifar10_ncsnpp_continuous",
        "batch": 4,
        "small": True,
        "num_scales": 100,
    },
    "ode_digits": {"config": "digits", "batch": 16},
    "bpd_digits": {"config": "digits", "batch": 16},
    "ncsnpp_cifar10_gpu": {"config": "ve/cifar10_ncsnpp_continuous", "batch": 128, "gpu": True},
    "ddpmpp_cifar10_gpu": {"config": "vp/cifar10_ddpmpp_continuous", "batch": 128, "gpu": True},
}
TASKS = {
    "ncsnpp_cifar10": ("forward", "train"),
    "ddpmpp_cifar10": ("forward", "train"),
    "ncsnpp_small": ("forward", "train"),
    "pc_small": ("forward", "pc"),
    "ode_digits": ("ode", "ode_tsit5"),
    "bpd_digits": ("bpd", "bpd_tsit5"),
    "ncsnpp_cifar10_gpu": ("forward", "train", "train_bf16"),
    "ddpmpp_cifar10_gpu": ("forward", "train", "train_bf16"),
}
STEPS_PER_CALL = {"cpu": 1, "gpu": 10}  # default --steps-per-call: steps per timed call
TOL = 1e-5  # rtol = atol of every adaptive solve, both sides
PC = {"predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16}


def _steps(task, steps):
    """Steps per timed call of ``task``: forwards and train steps run ``steps`` in a row, as a
    training loop does; a sampler, ODE solve or bits/dim call is one whole run."""
    return steps if task == "forward" or task.startswith("train") else 1


def _timed(fn, steps=1):
    """Runs ``fn()`` ``steps`` times; returns the last result dict (its values made Python
    numbers, which waits for the device) plus wall and process-CPU seconds per call."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        out = fn() or {}
    out = {k: v if isinstance(v, int | float) else float(v) for k, v in out.items()}
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {**out, "wall_s": wall / steps, "cpu_s": cpu / steps}


# ---------------------------------------------------------------------------------------------
# The jax side.
# ---------------------------------------------------------------------------------------------


class JaxSide:
    """This package: builds each case, writes the port's weights and the shared inputs."""

    def __init__(self, threads, steps):
        del threads  # XLA:CPU uses every core of the machine (pin the process with taskset)
        import jax

        # Before JAX starts its CPU backend, as in every command: its XLA flag and host memory.
        import score_sde_jax  # noqa: F401

        self.jax, self.steps = jax, steps
        self.case = None

    def config(self, case, digits_workdir=None):
        """The case's config (original keys) as a JSON-able dict, shared with the port."""
        from benchmarks import common
        from score_sde_jax import checkpoints

        spec = CASES[case]
        if spec["config"] == "digits":
            config = checkpoints.RunFolder(digits_workdir).saved_config()
        else:
            config = common.load_config(spec["config"])
        if spec.get("small"):
            config.model.update(nf=32, ch_mult=(1, 2), num_res_blocks=2, attn_resolutions=(8,))
            config.data.image_size = 16
        if "num_scales" in spec:
            config.model.num_scales = spec["num_scales"]
        config.training.batch_size = spec["batch"]
        self.config_, self.case, self.workdir = config, case, digits_workdir
        return {"config": json.loads(config.to_json())}

    def setup(self, port_params, tmpdir):
        """Builds the network and this case's functions; writes ``weights.npz``, ``inputs.npz``."""
        import jax.numpy as jnp

        from score_sde_jax import models, score_fns, sde_lib

        config, jax = self.config_, self.jax
        self.model, self.sde = models.get_model(config), sde_lib.get_sde(config)
        batch, size = CASES[self.case]["batch"], config.data.image_size
        shape = (batch, size, size, config.data.num_channels)
        inputs = _inputs(config, self.case, shape, self.sde)
        wall = time.perf_counter()
        self.params = self._params(config, shape)
        init_s = time.perf_counter() - wall
        order = models.abstract_params(self.model, tuple(shape[1:]))
        tops = list(dict.fromkeys(path[0] for path in order))
        weights = port_state_dict(self.params, tops, port_params)
        np.savez(os.path.join(tmpdir, "weights.npz"), **weights)
        np.savez(os.path.join(tmpdir, "inputs.npz"), **inputs)
        labels = score_fns.get_labels(self.sde, jnp.asarray(inputs["t"]), True)
        self.inputs = {k: jnp.asarray(v) for k, v in inputs.items()} | {"labels": labels}
        self.report = {
            "num_params": int(sum(p.size for p in jax.tree.leaves(self.params))),
            "init_s": round(init_s, 2),
            "device_kind": jax.devices()[0].device_kind,
            "compile_and_first_call_s": {},
        }
        self.fns = {}
        for task in TASKS[self.case]:
            wall = time.perf_counter()
            self.fns[task] = getattr(self, f"_build_{task.split('_')[0]}")(task, shape)
            _timed(self.fns[task])
            self.report["compile_and_first_call_s"][task] = round(time.perf_counter() - wall, 2)
        return self.report

    def _params(self, config, shape):
        import jax.numpy as jnp

        from score_sde_jax import models

        if self.workdir is not None and CASES[self.case]["config"] == "digits":
            from score_sde_jax import checkpoints

            return checkpoints.load_checkpoint_params(config, workdir=self.workdir).params
        x = jnp.zeros((1, *shape[1:]), jnp.float32)
        return models.init_params(self.model, self.jax.random.PRNGKey(0), x, jnp.ones((1,)))

    def _build_forward(self, task, shape):
        apply = self.jax.jit(lambda p, x, y: self.model.apply({"params": p}, x, y, train=False))
        x, labels = self.inputs["x"], self.inputs["labels"]

        def run():
            self.out = apply(self.params, x, labels).block_until_ready()

        return run

    def _build_train(self, task, shape):
        """One `training.train_step` per call; ``train_bf16``: the network computing in bfloat16
        (``model.dtype``), parameters and optimizer in float32. Records the compiled program's
        memory and, for ``train``, the model FLOPs of one step (`models.flops`)."""
        import jax.numpy as jnp

        from benchmarks import common
        from score_sde_jax import models, training
        from score_sde_jax.models import flops

        config, jax = self.config_, self.jax
        if task.endswith("bf16"):
            config = config.copy_and_resolve_references()
            config.model.dtype = "bfloat16"
        optimizer = training.create_optimizer(config)
        state = training.TrainState.create(jax.tree.map(jnp.copy, self.params), optimizer)
        fn = common.train_step_fn(config, models.get_model(config), optimizer)
        box = {"state": state, "rng": jax.random.PRNGKey(1)}
        batch = {"image": self.inputs["x"]}
        step = jax.jit(fn, donate_argnums=0).lower(state, batch, box["rng"]).compile()
        self.report.setdefault("memory", {})[task] = common.compiled_memory(step)
        if task == "train":
            self.report["model_flops_per_step"] = flops.count_flops(fn, state, batch, box["rng"])

        def run():
            box["rng"], rng = jax.random.split(box["rng"])
            box["state"], metrics = step(box["state"], batch, rng)
            return {"loss": metrics["loss"]}

        return run

    def _score_fn(self):
        from score_sde_jax import models

        return models.get_score_fn(self.sde, self.model, continuous=True)

    def _build_pc(self, task, shape):
        from score_sde_jax import sampling

        sample = sampling.get_pc_sampler(self.sde, self._score_fn(), shape, n_steps=1, **PC)
        z, key = self.inputs["z"], self.jax.random.PRNGKey(2)

        def run():
            x, nfe = sample(key, self.params, z)
            x.block_until_ready()
            return {"nfe": int(nfe)}

        return run

    def _build_ode(self, task, shape):
        from score_sde_jax import sampling

        sample = sampling.get_ode_sampler(
            self.sde, self._score_fn(), shape, rtol=TOL, atol=TOL, **_method(task)
        )
        z, key = self.inputs["z"], self.jax.random.PRNGKey(3)

        def run():
            x, nfe = sample(key, self.params, z)
            self.out = np.asarray(x)
            return {"nfe": int(np.max(nfe)), "nfe_mean": float(np.mean(nfe))}

        return run

    def _build_bpd(self, task, shape):
        from score_sde_jax import likelihood

        fn = likelihood.get_likelihood_fn(
            self.sde,
            self._score_fn(),
            rtol=TOL,
            atol=TOL,
            centered=self.config_.data.centered,
            **_method(task),
        )
        data, key = self.inputs["data"], self.jax.random.PRNGKey(4)

        def run():
            bpd, _, nfe = fn(key, self.params, data)
            return {"nfe": int(np.max(nfe)), "bpd": float(np.mean(bpd))}

        return run

    def run(self, task):
        return _timed(self.fns[task], _steps(task, self.steps))

    def output(self, task, path):
        """Saves the last output of ``task`` (NCHW like the port's) for the agreement check."""
        np.save(path, np.transpose(np.asarray(self.out), (0, 3, 1, 2)))
        return {}


def _method(task):
    """Solver keyword of an ODE / bpd task: the package's default, or tsit5 for ``*_tsit5``."""
    return {"method": "tsit5"} if task.endswith("tsit5") else {}


def _inputs(config, case, shape, sde):
    """Inputs both sides use (NHWC here, transposed by the port): x, t, z and digits data."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=shape).astype(np.float32)
    if config.data.centered:
        x = 2 * x - 1
    inputs = {"x": x, "t": rng.uniform(1e-3, 1.0, size=shape[:1]).astype(np.float32)}
    z = rng.standard_normal(shape).astype(np.float32)
    inputs["z"] = z * np.float32(getattr(sde, "sigma_max", 1.0))
    if CASES[case]["config"] == "digits":
        from score_sde_jax.data import digits

        images = np.asarray(digits.digits_uint8()[0][-digits.NUM_EVAL :][: shape[0]])
        y = (images.astype(np.float32) + rng.uniform(size=images.shape)) / 256.0
        inputs["data"] = (2 * y - 1 if config.data.centered else y).astype(np.float32)
    return inputs


def port_state_dict(params, tops, port_params):
    """Our flax ``params`` as the port's state_dict (name -> array in its layout).

    Inverse of `score_sde_jax.checkpoints.load_pytorch`'s mapping: the port keeps its top-level
    layers in ``all_modules`` in creation order, so its i-th indexed entry is our i-th top-level
    module with parameters (``tops``, creation order); inside a module the names agree except
    ``kernel``/``scale`` = ``weight``. Conv kernels HWIO -> OIHW, dense kernels transposed; the
    port's buffers (``sigmas``) stay its own.
    """
    names = [name for name, _ in port_params if name.startswith("all_modules.")]
    top_of = dict(zip(sorted({int(n.split(".")[1]) for n in names}), tops, strict=True))
    out = {}
    for name, shape in port_params:
        if not name.startswith("all_modules."):
            continue
        _, index, *path = name.split(".")
        node = params[top_of[int(index)]]
        for part in path[:-1]:
            node = node[part]
        leaf = next(k for k in (path[-1], "kernel", "scale") if k in node)
        value = np.asarray(node[leaf])
        if value.ndim == 4:
            value = value.transpose(3, 2, 0, 1)
        elif value.ndim == 2 and leaf == "kernel":
            value = value.T
        if list(value.shape) != list(shape):
            raise ValueError(f"{name}: the port's shape is {shape}, ours {value.shape}.")
        out[name] = value
    return out


# ---------------------------------------------------------------------------------------------
# The port's side.
# ---------------------------------------------------------------------------------------------


class TorchSide:
    """The PyTorch port, imported from ``repo`` with the shims of the module docstring."""

    def __init__(self, threads, steps, repo, device="cpu"):
        import torch
        import torch.utils.cpp_extension as cpp

        torch.set_num_threads(threads)
        self.steps = steps
        self.device = torch.device(device)
        sys.path.insert(0, os.path.abspath(repo))
        load, cpp.load = cpp.load, lambda *args, **kwargs: None
        try:
            import op  # noqa: F401  (its CUDA ops are only called on CUDA tensors)
        finally:
            cpp.load = load
        import likelihood
        import losses
        import sampling
        import sde_lib
        from models import ema, ncsnpp  # noqa: F401  (registers the networks)
        from models import utils as mutils

        self.torch, self.losses, self.sampling, self.likelihood = (
            torch,
            losses,
            sampling,
            likelihood,
        )
        self.sde_lib, self.ema, self.mutils = sde_lib, ema, mutils
        if self.device.type == "cuda":
            _native_upfirdn2d()
            torch.backends.cudnn.benchmark = True  # the port at its fastest

    def build(self, config):
        """The port's network for ``config``; returns its state_dict names and shapes."""
        import ml_collections

        config = ml_collections.ConfigDict(config)
        config.device = self.device
        model_config = ml_collections.ConfigDict(config.to_dict())
        if model_config.model.embedding_type == "positional":  # shim: it indexes sigmas by 999t
            model_config.model.num_scales = max(model_config.model.num_scales, 1000)
        self.config = config
        self.model = self.mutils.get_model(config.model.name)(model_config).to(self.device)
        self.sde, self.eps = _port_sde(self.sde_lib, config)
        return {"params": [(k, list(v.shape)) for k, v in self.model.state_dict().items()]}

    def setup(self, tmpdir, tasks):
        """Loads our weights and inputs, builds each task and runs it once (warm-up)."""
        torch, cuda = self.torch, self.device.type == "cuda"
        state = self.model.state_dict()
        with np.load(os.path.join(tmpdir, "weights.npz")) as weights:
            state.update({k: torch.from_numpy(weights[k]) for k in weights.files})
        self.model.load_state_dict(state)
        with np.load(os.path.join(tmpdir, "inputs.npz")) as inputs:
            self.inputs = {
                k: torch.from_numpy(v.transpose(0, 3, 1, 2).copy() if v.ndim == 4 else v).to(
                    self.device
                )
                for k, v in ((k, inputs[k]) for k in inputs.files)
            }
        self.outs, self.fns = {}, {}
        report = {"num_params": int(sum(p.numel() for p in self.model.parameters()))}
        for task in tasks:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            self.fns[task] = getattr(self, f"_build_{task.split('_')[0]}")(task)
            report.setdefault("first_call_s", {})[task] = round(_timed(self.fns[task])["wall_s"], 2)
            if cuda:
                report.setdefault("peak_bytes", {})[task] = torch.cuda.max_memory_allocated()
        return report

    def _labels(self, x, t):
        if isinstance(self.sde, self.sde_lib.VESDE):
            return self.sde.marginal_prob(self.torch.zeros_like(x), t)[1]
        return t * 999

    def _build_forward(self, task):
        x, t = self.inputs["x"], self.inputs["t"]
        labels = self._labels(x, t)

        def run():
            self.model.eval()
            with self.torch.no_grad():
                self.outs[task] = self.model(x, labels).cpu().numpy()

        return run

    def _build_train(self, task):
        config, losses = self.config, self.losses
        state = {
            "model": self.model,
            "optimizer": losses.get_optimizer(config, self.model.parameters()),
            "ema": self.ema.ExponentialMovingAverage(
                self.model.parameters(), decay=config.model.ema_rate
            ),
            "step": 0,
        }
        step_fn = losses.get_step_fn(
            self.sde,
            train=True,
            optimize_fn=losses.optimization_manager(config),
            reduce_mean=config.training.reduce_mean,
            continuous=config.training.continuous,
            likelihood_weighting=config.training.likelihood_weighting,
        )
        x, torch = self.inputs["x"], self.torch
        if not task.endswith("bf16"):
            return lambda: {"loss": step_fn(state, x).detach()}

        def run():  # the port's mixed precision at its best: autocast to bfloat16, no scaler
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return {"loss": step_fn(state, x).detach()}

        return run

    def _build_pc(self, task):
        sampling = self.sampling
        sampler = sampling.get_pc_sampler(
            self.sde,
            tuple(self.inputs["x"].shape),
            sampling.get_predictor(PC["predictor"]),
            sampling.get_corrector(PC["corrector"]),
            lambda x: x,
            PC["snr"],
            n_steps=1,
            continuous=True,
            eps=self.eps,
            device="cpu",
        )
        return lambda: {"nfe": int(sampler(self.model)[1])}

    def _build_ode(self, task):
        z = self.inputs["z"]
        sampler = self.sampling.get_ode_sampler(
            self.sde, tuple(z.shape), lambda x: x, rtol=TOL, atol=TOL, eps=self.eps, device="cpu"
        )

        def run():
            x, nfe = sampler(self.model, z=z)
            self.outs[task] = x.numpy()
            return {"nfe": int(nfe)}

        return run

    def _build_bpd(self, task):
        centered = self.config.data.centered
        fn = self.likelihood.get_likelihood_fn(
            self.sde, (lambda x: (x + 1) / 2) if centered else (lambda x: x), rtol=TOL, atol=TOL
        )
        data = self.inputs["data"]

        def run():
            bpd, _, nfe = fn(self.model, data)
            return {"nfe": int(nfe), "bpd": float(bpd.mean())}

        return run

    def run(self, task):
        return _timed(self.fns[task], _steps(task, self.steps))

    def output(self, task, path):
        np.save(path, self.outs[task])
        return {}


def _native_upfirdn2d():
    """Shim for CUDA tensors: the port's FIR resampling takes its pure-PyTorch path, as on CPU
    (its CUDA kernel is not built here, and it has no bfloat16 version for autocast)."""
    from models import up_or_down_sampling

    native = sys.modules["op.upfirdn2d"].upfirdn2d_native

    def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)):
        return native(x, kernel, up, up, down, down, pad[0], pad[1], pad[0], pad[1])

    up_or_down_sampling.upfirdn2d = upfirdn2d


def _port_sde(sde_lib, config):
    """The port's SDE of ``config`` and its sampling end time (1e-5 VE, 1e-3 VP / sub-VP)."""
    m, name = config.model, config.training.sde.lower()
    if name == "vesde":
        return sde_lib.VESDE(sigma_min=m.sigma_min, sigma_max=m.sigma_max, N=m.num_scales), 1e-5
    cls = {"vpsde": sde_lib.VPSDE, "subvpsde": sde_lib.subVPSDE}[name]
    return cls(beta_min=m.beta_min, beta_max=m.beta_max, N=m.num_scales), 1e-3


# ---------------------------------------------------------------------------------------------
# The driver: workers, the idle gate, alternation, the table.
# ---------------------------------------------------------------------------------------------


class Worker:
    """A worker process answering one JSON request per line (``--worker jax|torch``)."""

    def __init__(self, name, command, env):
        self.name = name
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )

    def call(self, method, **kwargs):
        self.proc.stdin.write(json.dumps({"method": method, "kwargs": kwargs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker exited (code {self.proc.wait()}).")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.name} worker, {method}:\n{reply['error']}")
        return reply["result"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _serve(side):
    """Worker loop: requests on stdin, replies on the original stdout, everything else to stderr."""
    import traceback

    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"result": getattr(side, request["method"])(**request["kwargs"])}
        except Exception:
            reply = {"error": traceback.format_exc()}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


class IdleGate:
    """Waits until processes other than ``pids`` use less than ``threshold`` of all CPUs."""

    def __init__(self, pids, threshold, max_wait, window=0.5):
        self.pids, self.threshold, self.max_wait, self.window = pids, threshold, max_wait, window

    def ticks(self):
        with open("/proc/stat") as f:
            cpu = [int(v) for v in f.readline().split()[1:9]]
        ours = 0
        for pid in self.pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ours += int(fields[11]) + int(fields[12])  # utime + stime, all threads
        return sum(cpu), sum(cpu) - cpu[3] - cpu[4], ours

    def others_since(self, before) -> float:
        """Share of all CPUs that processes other than ``pids`` used since ``before``
        (a `ticks` reading)."""
        after = self.ticks()
        total = max(after[0] - before[0], 1)
        return round(max(0, (after[1] - before[1]) - (after[2] - before[2])) / total, 3)

    def wait(self):
        """Returns (others' share of the machine in the last window, seconds waited)."""
        start = time.monotonic()
        while True:
            before = self.ticks()
            time.sleep(self.window)
            others = self.others_since(before)
            waited = time.monotonic() - start
            if others < self.threshold or waited > self.max_wait:
                return others, round(waited, 1)


def _agreement(jax_worker, torch_worker, task, tmpdir):
    """max |ours − port| / max |port| of ``task``'s last outputs (forward output or samples)."""
    ours, port = os.path.join(tmpdir, "ours.npy"), os.path.join(tmpdir, "port.npy")
    jax_worker.call("output", task=task, path=ours)
    torch_worker.call("output", task=task, path=port)
    a, b = np.load(ours), np.load(port)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _summary(runs):
    out = {
        "wall_s": statistics.median(r["wall_s"] for r in runs),
        "cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "runs_wall_s": [round(r["wall_s"], 3) for r in runs],
        "others_load": [r["others_load"] for r in runs],
        "others_during": [r["others_during"] for r in runs],
        "not_idle": sum(r["others_load"] >= r["threshold"] for r in runs),
    }
    for key in ("nfe", "nfe_mean", "bpd", "loss"):
        if key in runs[-1]:
            out[key] = runs[-1][key]
    return out


def _time_task(workers, gate, task, repeats):
    """Alternating timed calls of ``task`` (order flipped every round); per-side summaries."""
    runs = {name: [] for name in workers}
    for r in range(repeats):
        for name in list(workers)[:: 1 if r % 2 == 0 else -1]:
            load, waited = gate.wait()
            before = gate.ticks()
            result = workers[name].call("run", task=task)
            during = gate.others_since(before)
            runs[name].append(
                result | {"others_load": load, "others_during": during, "threshold": gate.threshold}
            )
    summary = {name: _summary(r) for name, r in runs.items()}
    for key in ("wall_s", "cpu_s"):
        summary[f"ratio_{key.split('_')[0]}"] = round(
            summary["ours"][key] / summary["port"][key], 3
        )
    if "nfe" in summary["ours"]:
        for side in ("ours", "port"):
            summary[side]["wall_s_per_nfe"] = summary[side]["wall_s"] / summary[side]["nfe"]
        summary["ratio_per_nfe"] = round(
            summary["ours"]["wall_s_per_nfe"] / summary["port"]["wall_s_per_nfe"], 3
        )
    return summary


def _run_case(case, workers, gate, args):
    with tempfile.TemporaryDirectory() as tmpdir:
        config = workers["ours"].call("config", case=case, digits_workdir=args.digits_workdir)
        port_params = workers["port"].call("build", config=config["config"])["params"]
        result = {
            "setup": {"ours": workers["ours"].call("setup", port_params=port_params, tmpdir=tmpdir)}
        }
        result["setup"]["port"] = workers["port"].call(
            "setup", tmpdir=tmpdir, tasks=list(TASKS[case])
        )
        for task in TASKS[case]:
            if task == "forward" or task.startswith("ode"):
                result[f"{task}_rel_diff"] = _agreement(
                    workers["ours"], workers["port"], task, tmpdir
                )
        for task in TASKS[case]:
            result[task] = _time_task(workers, gate, task, args.repeats)
            print(f"# {case}/{task}: {_row(case, task, result[task])}", file=sys.stderr, flush=True)
    if "pc" in result:
        for side in ("ours", "port"):
            pc = result["pc"][side]
            pc["per_nfe_over_forward"] = round(
                pc["wall_s_per_nfe"] / result["forward"][side]["wall_s"], 3
            )
    return result


_COLUMNS = (
    "| case | task | port wall s | ours wall s | ratio | port CPU s | ours CPU s | ratio "
    "| NFE port / ours | not idle | others' CPU |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _row(case, task, s):
    port, ours = s["port"], s["ours"]
    nfe = f"{port['nfe']} / {ours['nfe']}" if "nfe" in ours else ""
    if task == "pc":
        nfe += f" ({ours['wall_s_per_nfe'] * 1e3:.1f} vs {port['wall_s_per_nfe'] * 1e3:.1f} ms/NFE)"
    return (
        f"| {case} | {task} | {port['wall_s']:.3f} | {ours['wall_s']:.3f} | "
        f"**{s['ratio_wall']:.2f}×** | {port['cpu_s']:.3f} | {ours['cpu_s']:.3f} | "
        f"{s['ratio_cpu']:.2f}× | {nfe} | {port['not_idle'] + ours['not_idle']} | "
        f"{100 * statistics.median(port['others_during'] + ours['others_during']):.0f} % |"
    )


def table(report):
    """The readable side-by-side table of a report (markdown)."""
    lines = [_COLUMNS]
    for case, result in report["cases"].items():
        lines += [_row(case, task, result[task]) for task in TASKS[case] if task in result]
    notes = []
    for case, result in report["cases"].items():
        diffs = {k: f"{v:.1e}" for k, v in result.items() if k.endswith("_rel_diff")}
        setup = result["setup"]["ours"]
        compile_s = setup["compile_and_first_call_s"]
        notes.append(
            f"{case}: agreement {diffs}; ours init {setup['init_s']} s, compile+first "
            f"call {compile_s}"
        )
        if "pc" in result:
            notes.append(
                f"{case}: PC per NFE / forward alone: ours "
                f"{result['pc']['ours']['per_nfe_over_forward']}, port "
                f"{result['pc']['port']['per_nfe_over_forward']}"
            )
        notes += _train_notes(case, result)
        for task in ("bpd", "bpd_tsit5"):
            if task in result:
                notes.append(
                    f"{case}/{task}: bits/dim ours {result[task]['ours']['bpd']:.4f}, "
                    f"port {result[task]['port']['bpd']:.4f}"
                )
    notes += [f"{case}: failed, {error}" for case, error in report.get("errors", {}).items()]
    notes += [f"{case}: skipped (--max-minutes)" for case in report.get("skipped_for_time", [])]
    return "\n".join(lines + [""] + notes)


def _train_notes(case, result):
    """Examples/s, model TFLOP/s, MFU and peak memory of each side's train steps (GPU cases)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from benchmarks import common

    ours = result["setup"]["ours"]
    flops = ours.get("model_flops_per_step")
    if not (CASES[case].get("gpu") and flops):
        return []
    notes = []
    for task in (t for t in TASKS[case] if t.startswith("train") and t in result):
        dtype = "bfloat16" if task.endswith("bf16") else "float32"
        peak = common.peak_flops(ours["device_kind"], dtype)
        memory = {
            "ours": ours["memory"][task]["peak_bytes"],
            "port": result["setup"]["port"].get("peak_bytes", {}).get(task),
        }
        for side in ("ours", "port"):
            seconds = result[task][side]["wall_s"]
            mfu = f", MFU {100 * flops / seconds / peak:.1f} %" if peak else ""
            gib = f", peak memory {memory[side] / 2**30:.1f} GiB" if memory[side] else ""
            notes.append(
                f"{case}/{task} {side}: {CASES[case]['batch'] / seconds:,.0f} examples/s, "
                f"{flops / seconds / 1e12:.2f} model TFLOP/s{mfu}{gib}"
            )
    return notes


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pytorch-repo", help="checkout of yang-song/score_sde_pytorch")
    parser.add_argument("--pytorch-python", default=None, help="interpreter with torch")
    parser.add_argument("--digits-workdir", default=None, help="a trained digits run (ODE, bpd)")
    parser.add_argument("--cases", default=None, help="comma-separated; default: all that apply")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per side and task")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (cores) per side")
    parser.add_argument(
        "--device", choices=("cpu", "gpu"), default="cpu", help="where both sides compute"
    )
    parser.add_argument("--idle-threshold", type=float, default=0.1)
    parser.add_argument("--idle-wait", type=float, default=120.0, help="max seconds per gate")
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="start no case after this long"
    )
    parser.add_argument(
        "--steps-per-call",
        type=int,
        default=None,
        help="consecutive forward / train steps per timed call (default: 1 on CPU, 10 on GPU)",
    )
    parser.add_argument("--out", default=None, help="also write the JSON here (and FILE.md)")
    parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.steps_per_call = args.steps_per_call or STEPS_PER_CALL[args.device]
    return args


def _worker_main(args):
    if args.device == "cpu":  # on a GPU the host cores compile and launch: leave them all
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
    if args.worker == "jax":
        _serve(JaxSide(args.threads, args.steps_per_call))
    else:
        device = _TORCH_DEVICE[args.device]
        _serve(TorchSide(args.threads, args.steps_per_call, args.pytorch_repo, device))


_TORCH_DEVICE = {"cpu": "cpu", "gpu": "cuda"}
# The jax worker's platform; on a GPU it allocates as it goes, so the port has memory too.
_JAX_ENV = {"cpu": {"JAX_PLATFORMS": "cpu"}, "gpu": {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}}


def main():
    args = _parse_args()
    if args.worker:
        return _worker_main(args)
    if not (args.pytorch_repo and args.pytorch_python):
        raise SystemExit("--pytorch-repo and --pytorch-python are required.")
    gpu = args.device == "gpu"
    cases = (
        args.cases.split(",")
        if args.cases
        else [
            c
            for c, spec in CASES.items()
            if spec.get("gpu", False) == gpu and (args.digits_workdir or spec["config"] != "digits")
        ]
    )
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise SystemExit(f"Unknown case(s) {unknown}; valid: {', '.join(CASES)}.")
    wrong = [c for c in cases if CASES[c].get("gpu", False) != gpu]
    if wrong:
        other = "cpu" if gpu else "gpu"
        raise SystemExit(f"Case(s) {wrong} are --device {other} cases; drop them or pass that.")
    common = [__file__, "--threads", str(args.threads), "--device", args.device]
    common += ["--steps-per-call", str(args.steps_per_call), "--worker"]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
        **_JAX_ENV[args.device],
    )
    workers = {
        "ours": Worker("jax", [sys.executable, *common, "jax"], env),
        "port": Worker(
            "torch",
            [args.pytorch_python, *common, "torch", "--pytorch-repo", args.pytorch_repo],
            dict(os.environ),
        ),
    }
    pids = [os.getpid()] + [w.proc.pid for w in workers.values()]
    gate = IdleGate(pids, args.idle_threshold, args.idle_wait)
    report = {"machine": _machine(args), "repeats": args.repeats, "cases": {}}
    start = time.perf_counter()
    try:
        for case in cases:
            if args.max_minutes and time.perf_counter() - start > 60 * args.max_minutes:
                report.setdefault("skipped_for_time", []).append(case)
                continue
            try:
                report["cases"][case] = _run_case(case, workers, gate, args)
            except Exception as error:  # a worker's error: report the other cases all the same
                report.setdefault("errors", {})[case] = repr(error)
            _write(report, args.out)  # what is done so far, should a later case not finish
    finally:
        for worker in workers.values():
            worker.close()
    report["machine"]["load_average_after"] = os.getloadavg()
    _emit(report, args.out)


def _machine(args):
    import platform

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    versions = subprocess.run(
        [
            args.pytorch_python,
            "-c",
            "import torch, numpy, scipy; print(torch.__version__, "
            "numpy.__version__, scipy.__version__, torch.cuda.is_available() and "
            "torch.cuda.get_device_name(0).replace(' ', '_'))",
        ],
        capture_output=True,
        text=True,
    ).stdout.split()
    import jax

    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "threads_per_side": args.threads,
        "steps_per_call": args.steps_per_call,
        "device": args.device,
        "jax": jax.__version__,
        "torch_numpy_scipy": versions,
        "port_commit": _git_head(args.pytorch_repo),
        "load_average_before": os.getloadavg(),
        "idle_threshold": args.idle_threshold,
    }


def _git_head(repo):
    """The checkout's commit; None where ``repo`` is no git checkout of its own (a copy)."""
    if not os.path.exists(os.path.join(repo, ".git")):
        return None
    result = subprocess.run(
        ["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return result.stdout.strip() or None


def _emit(report, out):
    print(json.dumps(report, indent=2))
    print(table(report), file=sys.stderr)
    _write(report, out)


def _write(report, out):
    """Writes ``report`` to ``out`` (JSON) and its table to ``out`` with suffix ``.md``."""
    if out:
        with open(out, "w") as f:
            f.write(json.dumps(report, indent=2) + "\n")
        with open(os.path.splitext(out)[0] + ".md", "w") as f:
            f.write(table(report) + "\n")


if __name__ == "__main__":
    main()
