"""Input pipeline: model-space values, flips, dequantization, order, sharding and resumption."""

import grain
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from score_sde_jax.data import datasets, digits, image_io, pipeline
from score_sde_jax.data.source import Source

NUM_DIGITS_TRAIN = 1797 - digits.NUM_EVAL


def digits_config(**data):
    config = ml_collections.ConfigDict()
    config.data = dict(
        dataset="DIGITS",
        image_size=16,
        num_channels=1,
        centered=False,
        uniform_dequantization=False,
        random_flip=False,
        num_threads=2,
    )
    config.data.update(data)
    config.training = dict(batch_size=32)
    config.eval = dict(batch_size=20)
    return config


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def batches(config, n=3, seed=0, **kwargs):
    train_iter, _ = pipeline.create_datasets(
        config, seed=seed, process_index=kwargs.pop("process_index", 0), **kwargs
    )
    return take(train_iter, n)


class IndexSource(Source):
    """Example i is a 2 x 3 single-channel image of constant value i (i < 256): indices visible."""

    def __init__(self, n):
        super().__init__(
            "index",
            n,
            lambda i: (np.full((2, 3, 1), i, np.uint8), i),
            lambda x: x,
            (2, 3, 1),
            is_image=True,
            channels=(1, False),
        )


def index_loader(n=60, global_batch=8, process_index=0, process_count=1, **kwargs):
    options = dict(single_pass=False, random_flip=False, uniform_dequantization=False)
    options.update(kwargs)
    return pipeline.BatchLoader(
        IndexSource(n),
        seed=3,
        split="train",
        global_batch_size=global_batch,
        process_index=process_index,
        process_count=process_count,
        centered=False,
        **options,
    )


def decoded_indices(batch):
    return np.round(batch["image"][:, 0, 0, 0] * 255).astype(int)


def test_digits_shapes_values_and_centering():
    (plain,) = batches(digits_config(), n=1)
    (centered,) = batches(digits_config(centered=True), n=1)
    _, eval_iter = pipeline.create_datasets(digits_config(), seed=0, process_index=0)
    eval_batch = next(eval_iter)
    assert plain["image"].shape == (32, 16, 16, 1) and plain["image"].dtype == np.float32
    assert plain["label"].shape == (32,) and plain["label"].dtype == np.int32
    assert eval_batch["image"].shape == (20, 16, 16, 1) and "mask" not in eval_batch
    assert set(np.unique(plain["label"])) <= set(range(10))
    # Without dequantization the values are k / 255 for uint8 k, spanning [0, 1].
    k = plain["image"] * 255
    np.testing.assert_allclose(k, np.round(k), atol=1e-4)
    assert plain["image"].min() == 0.0 and plain["image"].max() == 1.0
    np.testing.assert_allclose(centered["image"], 2 * plain["image"] - 1, atol=1e-6)
    assert pipeline.image_shape(digits_config()) == (16, 16, 1)


def test_digits_pad_keeps_native_pixels():
    (padded,) = batches(digits_config(resize="pad", image_size=12), n=1)
    images, _ = digits.digits_uint8()
    image = padded["image"][:, :, :, 0]
    assert np.all(image[:, :2] == 0) and np.all(image[:, 10:] == 0) and np.all(image[:, :, :2] == 0)
    native = {img.tobytes() for img in images[:, :, :, 0]}
    assert all(np.round(x[2:10, 2:10] * 255).astype(np.uint8).tobytes() in native for x in image)


def test_uniform_dequantization_range():
    (plain,) = batches(digits_config(), n=1)
    (deq,) = batches(digits_config(uniform_dequantization=True), n=1)
    k = np.round(plain["image"] * 255)
    # (k + u) / 256 lies in [k / 256, (k + 1) / 256).
    assert np.all(deq["image"] >= k / 256) and np.all(deq["image"] < (k + 1) / 256)
    u = deq["image"] * 256 - k  # the noise, U[0, 1)
    assert abs(u.mean() - 0.5) < 0.02 and abs(u.std() - np.sqrt(1 / 12)) < 0.02
    np.testing.assert_array_equal(deq["label"], plain["label"])


def test_dequantize_never_reaches_next_level():
    k = np.arange(256, dtype=np.uint8)
    u = np.full(256, np.nextafter(np.float32(1), np.float32(0)))  # the largest u < 1
    y = pipeline.uniform_dequantize(k, u)
    assert np.all(y < (k.astype(np.float32) + 1) / 256) and np.all(y >= k / 256)


def test_to_uint8_inverts_division_by_255():
    k = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(image_io.to_uint8(k.astype(np.float32) / 255.0), k)


def test_random_flip_mirrors_about_half_of_the_examples():
    plain = batches(digits_config(), n=4)
    flipped = batches(digits_config(random_flip=True), n=4)
    x = np.concatenate([b["image"] for b in plain])
    y = np.concatenate([b["image"] for b in flipped])
    same = np.all(x == y, axis=(1, 2, 3))
    mirrored = np.all(x[:, :, ::-1] == y, axis=(1, 2, 3))
    asymmetric = ~np.all(x == x[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored)
    frac = np.mean(mirrored[asymmetric])
    assert 0.3 < frac < 0.7, frac
    # Flips do not change the dequantization noise: flipped noise = noise of the flipped image.
    deq = batches(digits_config(uniform_dequantization=True), n=4)
    deq_flip = batches(digits_config(uniform_dequantization=True, random_flip=True), n=4)
    noise = np.concatenate([b["image"] for b in deq]) * 256 - np.round(x * 255)
    noise_flip = np.concatenate([b["image"] for b in deq_flip]) * 256 - np.round(y * 255)
    np.testing.assert_allclose(noise, noise_flip, atol=1e-4)


def test_same_seed_same_batches_different_seed_different_order():
    config = digits_config(random_flip=True, uniform_dequantization=True)
    a, b, c = batches(config, seed=7), batches(config, seed=7), batches(config, seed=8)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
    assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_each_epoch_is_a_fresh_permutation_and_batches_straddle_epochs():
    loader = index_loader(n=60, global_batch=8)
    stream = np.concatenate([decoded_indices(loader(step)) for step in range(15)])  # 120 = 2 epochs
    first, second = stream[:60], stream[60:]
    assert sorted(first) == list(range(60)) and sorted(second) == list(range(60))
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, np.arange(60))
    # Step 7 covers positions 56..63: the end of epoch 0 and the start of epoch 1.
    np.testing.assert_array_equal(decoded_indices(loader(7)), stream[56:64])


def test_process_shards_are_disjoint_and_cover_each_epoch():
    shards = [index_loader(n=64, global_batch=8, process_index=p, process_count=2) for p in (0, 1)]
    seen = [np.concatenate([decoded_indices(s(step)) for step in range(8)]) for s in shards]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(np.concatenate(seen)) == list(range(64))


def test_global_batch_does_not_depend_on_process_count():
    config = digits_config(random_flip=True, uniform_dequantization=True, centered=True)
    single = batches(config, n=3, process_count=1)
    halves = [batches(config, n=3, process_index=p, process_count=2) for p in (0, 1)]
    for step in range(3):
        assert halves[0][step]["image"].shape == (16, 16, 16, 1)
        for key in ("image", "label"):
            joined = np.concatenate([halves[0][step][key], halves[1][step][key]])
            np.testing.assert_array_equal(joined, single[step][key])


def test_batch_size_must_divide_by_process_count():
    with pytest.raises(ValueError, match="global batch size.*process count 3"):
        pipeline.create_datasets(digits_config(), seed=0, process_index=0, process_count=3)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="CIFAR10, SVHN, CELEBA, LSUN"):
        pipeline.create_datasets(digits_config(dataset="mnist"), seed=0, process_index=0)


def test_get_state_set_state_resumes_exactly():
    config = digits_config(random_flip=True, uniform_dequantization=True)
    train_iter, _ = pipeline.create_datasets(config, seed=1, process_index=0)
    take(train_iter, 3)
    state = train_iter.get_state()
    expected = take(train_iter, 2)
    resumed, _ = pipeline.create_datasets(config, seed=1, process_index=0)
    resumed.set_state(state)
    for x, y in zip(take(resumed, 2), expected, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])


def test_orbax_checkpoint_of_the_iterator(tmp_path):
    import orbax.checkpoint as ocp

    config = digits_config(random_flip=True)
    train_iter, _ = pipeline.create_datasets(config, seed=2, process_index=0)
    take(train_iter, 5)
    with ocp.CheckpointManager(tmp_path) as manager:
        manager.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(train_iter)))
        manager.wait_until_finished()
    expected = next(train_iter)
    resumed, _ = pipeline.create_datasets(config, seed=2, process_index=0)
    with ocp.CheckpointManager(tmp_path) as manager:
        manager.restore(
            5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed))
        )
    np.testing.assert_array_equal(next(resumed)["image"], expected["image"])


def test_evaluation_pass_sees_every_example_once_in_order():
    config = digits_config(random_flip=True)
    per_process = [
        pipeline.create_datasets(config, seed=0, process_index=p, process_count=2, evaluation=True)
        for p in (0, 1)
    ]
    train = [list(it) for it, _ in per_process]
    held_out = [list(it) for _, it in per_process]
    assert len(train[0]) == len(train[1]) == -(-NUM_DIGITS_TRAIN // 32)
    images = np.concatenate(
        [np.concatenate([a["image"], b["image"]]) for a, b in zip(*train, strict=True)]
    )
    mask = np.concatenate(
        [np.concatenate([a["mask"], b["mask"]]) for a, b in zip(*train, strict=True)]
    )
    assert mask.sum() == NUM_DIGITS_TRAIN and np.all(mask[:NUM_DIGITS_TRAIN])
    assert np.all(images[~mask] == 0)
    # Dataset order, never flipped.
    source = datasets.get_source(config, "train")
    for i in (0, 500, NUM_DIGITS_TRAIN - 1):
        np.testing.assert_array_equal(images[i], source[i][0] / np.float32(255))
    eval_mask = np.concatenate([b["mask"] for batches in held_out for b in batches])
    assert eval_mask.sum() == digits.NUM_EVAL


def test_toy2d_points():
    config = digits_config(
        dataset="toy2d",
        mixture_weights=[0.25, 0.75],
        mixture_means=[[-1.0, 0.0], [3.0, 1.0]],
        mixture_stds=[0.1, 0.2],
        num_train=4000,
        num_eval=400,
        random_flip=True,
        centered=True,
        uniform_dequantization=True,
    )
    assert pipeline.image_shape(config) == (2,)
    config.training.batch_size = 4000
    train_iter, eval_iter = pipeline.create_datasets(config, seed=0, process_index=0)
    batch = next(train_iter)
    x, label = batch["image"], batch["label"]
    assert x.shape == (4000, 2) and x.dtype == np.float32 and eval_iter is not None
    # One epoch: the fixed point set, passed through unchanged (not flipped / centered).
    source = datasets.get_source(config, "train")
    points = np.stack([source[i][0] for i in range(len(source))])
    np.testing.assert_array_equal(np.sort(x, axis=0), np.sort(points, axis=0))
    assert abs(np.mean(label == 1) - 0.75) < 3 * np.sqrt(0.75 * 0.25 / 4000)
    for k, (mean, std) in enumerate([((-1.0, 0.0), 0.1), ((3.0, 1.0), 0.2)]):
        component = x[label == k]
        np.testing.assert_allclose(component.mean(0), mean, atol=4 * std / np.sqrt(len(component)))
        np.testing.assert_allclose(component.std(0), std, rtol=0.1)
    eval_points = datasets.get_source(config, "eval")[0][0]
    assert not np.any(np.all(points == eval_points, axis=1))


def cifar_config():
    config = digits_config(dataset="CIFAR10", image_size=32, num_channels=3, random_flip=True)
    config.training.batch_size = 8
    config.eval.batch_size = 4
    return config


def test_cifar10_under_mock_data():
    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        train_iter, eval_iter = pipeline.create_datasets(cifar_config(), seed=0, process_index=0)
        train, held_out = next(train_iter), next(eval_iter)
    assert train["image"].shape == (8, 32, 32, 3) and train["image"].dtype == np.float32
    assert train["label"].shape == (8,) and train["label"].dtype == np.int32
    assert held_out["image"].shape == (4, 32, 32, 3)
    assert 0 <= train["image"].min() and train["image"].max() <= 1
    assert train["image"].std() > 0.1  # mock images are random pixels, not zeros


@pytest.mark.parametrize(
    "dataset, image_size, extra",
    [
        ("SVHN", 32, {}),
        ("CELEBA", 64, {}),
        ("LSUN", 128, {"category": "bedroom"}),
        ("CELEBAHQ", 256, {}),
    ],
)
def test_other_tfds_datasets_under_mock_data(dataset, image_size, extra):
    config = cifar_config()
    config.data.update(dict(dataset=dataset, image_size=image_size, **extra))
    config.training.batch_size = 2
    config.eval.batch_size = 2
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        train_iter, eval_iter = pipeline.create_datasets(config, seed=0, process_index=0)
        train, held_out = next(train_iter), next(eval_iter)
    for batch in (train, held_out):
        assert batch["image"].shape == (2, image_size, image_size, 3)
        assert 0 <= batch["image"].min() and batch["image"].max() <= 1


def test_unprepared_tfds_dataset_names_the_prepare_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m score_sde_jax.prepare_data cifar10"):
        pipeline.create_datasets(cifar_config(), seed=0, data_dir=str(tmp_path), process_index=0)
