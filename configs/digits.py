"""Offline default: a small NCSN++ with the VP SDE on scikit-learn's handwritten digits.

The 1,797 8×8 digits ship with scikit-learn, so nothing is downloaded; they are used at their
native 8×8 size, centred to [-1, 1] (the last 180 are held out). Same key layout as the paper
configs (docs/configs.md); the values are scaled down so that training plus the final sample grid
take a few minutes on a 2-core CPU (about 22 steps/s). The VP SDE is used because its
noise-predicting network and the Euler–Maruyama sampler need no corrector tuning and give clean
digits after a short run. ``n_jitted_steps = 1`` keeps the compiled program to one step, and
the EMA decay is 0.995 instead of the paper's 0.999/0.9999, which would still weigh the random
initialisation heavily after 1,500 steps.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The digits config; every key can be overridden with ``--config.<section>.<key>=...``."""
    config = ml_collections.ConfigDict()

    config.training = training = ml_collections.ConfigDict()
    training.sde = "vpsde"
    training.continuous = True
    training.reduce_mean = True
    training.likelihood_weighting = False
    training.batch_size = 64
    training.n_iters = 1500
    training.n_jitted_steps = 1
    training.log_freq = 100
    training.eval_freq = 500
    training.snapshot_freq = 1500
    training.snapshot_freq_for_preemption = 500
    training.snapshot_sampling = True
    training.max_to_keep = 2
    training.grad_accum_steps = 1
    training.snapshot_batch_size = 64

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
    evaluate.batch_size = 128
    evaluate.enable_sampling = True
    evaluate.num_samples = 1024
    evaluate.enable_loss = True
    evaluate.enable_bpd = False
    evaluate.bpd_dataset = "test"

    config.data = data = ml_collections.ConfigDict()
    data.dataset = "DIGITS"
    data.image_size = 8
    data.resize = "bilinear"
    data.random_flip = False  # mirrored digits are not digits
    data.centered = True
    data.uniform_dequantization = False
    data.num_channels = 1

    config.model = model = ml_collections.ConfigDict()
    model.name = "ncsnpp"
    model.sigma_min = 0.01
    model.sigma_max = 50.0
    model.num_scales = 250
    model.beta_min = 0.1
    model.beta_max = 20.0
    model.dropout = 0.0
    model.embedding_type = "positional"
    model.scale_by_sigma = False
    model.ema_rate = 0.995
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 16
    model.ch_mult = (1, 2, 2)
    model.num_res_blocks = 1
    model.attn_resolutions = (4,)
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = True
    model.fir_kernel = [1, 3, 3, 1]
    model.skip_rescale = True
    model.resblock_type = "biggan"
    model.progressive = "none"
    model.progressive_input = "residual"
    model.progressive_combine = "sum"
    model.attention_type = "ddpm"
    model.init_scale = 0.0
    model.fourier_scale = 16
    model.conv_size = 3

    config.optim = optim = ml_collections.ConfigDict()
    optim.weight_decay = 0.0
    optim.optimizer = "Adam"
    optim.lr = 2e-3
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.warmup = 200
    optim.grad_clip = 1.0

    config.seed = 42
    return config
