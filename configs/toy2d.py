"""A 2-D toy problem: a residual MLP with the VP SDE on a Gaussian mixture (seconds on a CPU).

The data are 10,000 points of eight isotropic Gaussians (std 0.1) on the circle of radius 2
(`score_sde_jax.data.toy2d.toy_mixture`); snapshots are scatter plots. Same key layout as the
paper configs (docs/configs.md).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The toy config; every key can be overridden with ``--config.<section>.<key>=...``."""
    config = ml_collections.ConfigDict()

    config.training = training = ml_collections.ConfigDict()
    training.sde = "vpsde"
    training.continuous = True
    training.reduce_mean = True
    training.likelihood_weighting = False
    training.batch_size = 256
    training.n_iters = 3000
    training.n_jitted_steps = 10
    training.log_freq = 500
    training.eval_freq = 500
    training.snapshot_freq = 3000
    training.snapshot_freq_for_preemption = 500
    training.snapshot_sampling = True
    training.max_to_keep = 2
    training.grad_accum_steps = 1
    training.snapshot_batch_size = 2048

    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.method = "pc"
    sampling.predictor = "euler_maruyama"
    sampling.corrector = "none"
    sampling.n_steps_each = 1
    sampling.noise_removal = True
    sampling.probability_flow = False
    sampling.snr = 0.16

    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.begin_ckpt = 1
    evaluate.end_ckpt = 1
    evaluate.batch_size = 512
    evaluate.enable_sampling = True
    evaluate.num_samples = 4096
    evaluate.enable_loss = True
    evaluate.enable_bpd = True
    evaluate.bpd_dataset = "test"

    config.data = data = ml_collections.ConfigDict()
    data.dataset = "TOY2D"
    data.num_train = 10000
    data.num_eval = 2000
    data.data_seed = 0
    data.random_flip = False
    data.centered = False
    data.uniform_dequantization = False

    config.model = model = ml_collections.ConfigDict()
    model.name = "mlp"
    model.nf = 128
    model.num_layers = 3
    model.nonlinearity = "swish"
    model.embedding_type = "positional"
    model.dropout = 0.0
    model.scale_by_sigma = False
    model.sigma_min = 0.01
    model.sigma_max = 5.0
    model.num_scales = 500
    model.beta_min = 0.1
    model.beta_max = 20.0
    model.ema_rate = 0.995

    config.optim = optim = ml_collections.ConfigDict()
    optim.weight_decay = 0.0
    optim.optimizer = "Adam"
    optim.lr = 2e-3
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.warmup = 100
    optim.grad_clip = 1.0

    config.seed = 42
    return config
