"""Offline default of ``python -m score_sde_jax.train_classifier``: a WRN-10-1 on the digits.

A noise-conditional classifier p_φ(y | x, σ) of scikit-learn's 1,797 8×8 handwritten digits
(labels: the digit; the last 180 images are held out), trained on VE-perturbed images
y + σ z, y ∈ [0, 1] (paper App. I.1). It guides class-conditional sampling of the digits score model
(`configs/digits.py`): `wideresnet.get_classifier_fn` shows it that model's
x(t) at σ = s(t) / (2 m(t)), about 0.005 at the sampler's t = 1e-3 and 76 at t = 1 for the VP SDE,
hence the σ range [0.005, 100]. Every value is our choice. About four CPU minutes on a 2-core
machine; held-out accuracy after the 1,500 steps: 97 % at σ in [0.005, 0.036], 95 % up to 0.26,
56 % up to 1.9, 19 % up to 14 and chance (11 %) above.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The digits classifier config; override any key with ``--config.<section>.<key>=...``."""
    config = ml_collections.ConfigDict()

    config.training = training = ml_collections.ConfigDict()
    training.batch_size = 64
    training.n_iters = 1500
    training.n_jitted_steps = 1  # fastest on a CPU
    training.log_freq = 100
    training.eval_freq = 500
    training.snapshot_freq = 1500
    training.snapshot_freq_for_preemption = 500
    training.max_to_keep = 2

    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.batch_size = 64  # the 180 held-out digits in 3 batches (the last one padded)

    config.data = data = ml_collections.ConfigDict()
    data.dataset = "DIGITS"
    data.image_size = 8
    data.resize = "bilinear"
    data.random_flip = False  # mirrored digits are not digits
    data.centered = False  # classifier inputs live in [0, 1] (VE data space)
    data.uniform_dequantization = False
    data.num_channels = 1

    config.classifier = classifier = ml_collections.ConfigDict()
    classifier.blocks_per_group = 1
    classifier.channel_multiplier = 1
    classifier.num_classes = 10
    classifier.sigma_min = 0.005
    classifier.sigma_max = 100.0
    # Pixel mean / std of the training digits in [0, 1].
    classifier.data_mean = (0.3045,)
    classifier.data_std = (0.3749,)
    classifier.ema_rate = 0.995
    classifier.num_eval_bands = 5

    config.optim = optim = ml_collections.ConfigDict()
    optim.weight_decay = 0.0
    optim.optimizer = "Adam"
    optim.lr = 1e-3
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.warmup = 100
    optim.grad_clip = 1.0

    config.seed = 42
    return config
