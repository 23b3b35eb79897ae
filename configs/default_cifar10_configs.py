"""Defaults shared by every CIFAR-10 experiment config (docs/configs.md).

Keys and values are the original's. Experiment configs (``configs/<sde>/cifar10_*.py``) start
from `get_default_configs()` and set the SDE, sampler and network. Keys the original lacks are
marked "added" and default to the original's behaviour.
"""

import ml_collections
from ml_collections import config_dict


def get_default_configs() -> ml_collections.ConfigDict:
    """The CIFAR-10 defaults (docs/configs.md); no SDE, sampler or network is chosen here."""
    config = ml_collections.ConfigDict()

    config.training = training = ml_collections.ConfigDict()
    training.batch_size = 128  # global batch, split over all devices of all processes
    # Rounded up to a multiple of n_jitted_steps (docs/original_code.md, D16).
    training.n_iters = 1300001
    training.snapshot_freq = 50000  # kept checkpoint + snapshot samples every this many steps
    training.log_freq = 50
    training.eval_freq = 100
    training.snapshot_freq_for_preemption = 10000  # frequent checkpoint, only the latest kept
    training.snapshot_sampling = True  # sample a PNG grid at every snapshot
    training.likelihood_weighting = False
    training.continuous = True
    training.n_jitted_steps = 5  # optimizer steps per dispatch (lax.scan)
    training.reduce_mean = False
    # Added: preemption checkpoints kept besides the snapshot_freq ones (>= 2 so that a
    # corrupt latest checkpoint has a fallback).
    training.max_to_keep = 2
    # Added: micro-batches per optimizer step (gradient accumulation; 1 = off).
    training.grad_accum_steps = 1
    # Added: number of snapshot samples; unset = training.batch_size, as in the original.
    training.snapshot_batch_size = config_dict.placeholder(int)

    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.n_steps_each = 1
    sampling.noise_removal = True
    sampling.probability_flow = False
    sampling.snr = 0.16

    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.begin_ckpt = 9
    evaluate.end_ckpt = 26
    evaluate.batch_size = 1024
    evaluate.enable_sampling = False
    evaluate.num_samples = 50000
    evaluate.enable_loss = True
    evaluate.enable_bpd = False
    evaluate.bpd_dataset = "test"

    config.data = data = ml_collections.ConfigDict()
    data.dataset = "CIFAR10"
    data.image_size = 32
    data.random_flip = True
    data.centered = False
    data.uniform_dequantization = False
    data.num_channels = 3

    config.model = model = ml_collections.ConfigDict()
    model.sigma_min = 0.01
    model.sigma_max = 50.0
    model.num_scales = 1000
    model.beta_min = 0.1
    model.beta_max = 20.0
    model.dropout = 0.1
    model.embedding_type = "fourier"

    config.optim = optim = ml_collections.ConfigDict()
    optim.weight_decay = 0.0
    optim.optimizer = "Adam"
    optim.lr = 2e-4
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.warmup = 5000
    optim.grad_clip = 1.0

    config.seed = 42
    return config
