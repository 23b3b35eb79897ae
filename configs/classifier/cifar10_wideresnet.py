"""The noise-conditional WRN-28-10 classifier of CIFAR-10 used for class-conditional sampling.

As in the paper (App. I.1) and the original code (docs/original_code.md#controllable-generation):
a WRN-28-10 (blocks_per_group 4, channel_multiplier 10, 10 classes; 38,913,242 parameters)
conditioned on log σ, trained on CIFAR-10 images y ∈ [0, 1] perturbed with VE noise y + σ z,
normalised with the CIFAR-10 channel mean / std, and trained with cross-entropy losses mixed over
noise scales. The original's training code and settings
were not released, so the rest is our choice (marked below): the σ range is the CIFAR-10 VE
SDE's [σ_min, σ_max] = [0.01, 50] (docs/original_code.md#sdes-and-time-conditioning), so that
the classifier covers every σ(t) the VE sampler visits, with log σ uniform (the VE SDE's σ(t) at
uniform t); the optimizer settings are those of the score models
(docs/original_code.md#losses-optimizer-and-ema, docs/configs.md) with a shorter run.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """WRN-28-10 on CIFAR-10 (``--config.<section>.<key>=...`` overrides any key)."""
    config = ml_collections.ConfigDict()

    config.training = training = ml_collections.ConfigDict()
    training.batch_size = 128  # our choice
    training.n_iters = 200000  # our choice: about 512 epochs
    training.n_jitted_steps = 5
    training.log_freq = 50
    training.eval_freq = 10000  # a pass over the 10,000 test images per σ band
    training.snapshot_freq = 50000
    training.snapshot_freq_for_preemption = 10000
    training.max_to_keep = 2

    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.batch_size = 1000

    config.data = data = ml_collections.ConfigDict()
    data.dataset = "CIFAR10"
    data.image_size = 32
    data.random_flip = True  # our choice: standard CIFAR-10 augmentation
    data.centered = False  # fact: the classifier sees [0, 1] images
    data.uniform_dequantization = False
    data.num_channels = 3

    config.classifier = classifier = ml_collections.ConfigDict()
    classifier.blocks_per_group = 4  # fact: WRN-28-10
    classifier.channel_multiplier = 10  # fact
    classifier.num_classes = 10  # fact
    classifier.sigma_min = 0.01  # our choice: the VE SDE's σ_min
    classifier.sigma_max = 50.0  # our choice: the VE SDE's σ_max
    # Fact: the CIFAR-10 channel statistics (wideresnet.CIFAR10_MEAN / CIFAR10_STD).
    classifier.data_mean = (0.49139968, 0.48215841, 0.44653091)
    classifier.data_std = (0.24703223, 0.24348513, 0.26158784)
    classifier.ema_rate = 0.999  # our choice
    classifier.num_eval_bands = 5  # our choice: σ bands 0.01-0.055-0.3-1.7-9.1-50

    config.optim = optim = ml_collections.ConfigDict()  # our choice: the score models' Adam
    optim.weight_decay = 0.0
    optim.optimizer = "Adam"
    optim.lr = 2e-4
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.warmup = 5000
    optim.grad_clip = 1.0

    config.seed = 42
    return config
