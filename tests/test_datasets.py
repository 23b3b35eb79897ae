"""Dataset sources: preprocessing with known answers, image folders, tfrecords, prepare_data, σ_max."""

import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image
from scipy.spatial.distance import pdist

from score_sde_jax import prepare_data
from score_sde_jax.data import (
    datasets,
    digits,
    image_folder,
    pipeline,
    preprocessing,
    tfrecord,
)
from score_sde_jax.data.source import Source
from score_sde_jax.tools import sigma_max


@pytest.fixture(scope="module")
def tf():
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    return tf


def make_config(dataset, image_size, num_channels=3, **data):
    config = ml_collections.ConfigDict()
    config.data = dict(
        dataset=dataset,
        image_size=image_size,
        num_channels=num_channels,
        centered=False,
        uniform_dequantization=False,
        random_flip=False,
        num_threads=2,
    )
    config.data.update(data)
    config.training = dict(batch_size=4)
    config.eval = dict(batch_size=2)
    return config


def coordinate_image(h, w):
    """uint8 [h, w, 3]: channel 0 = row, channel 1 = column (mod 256): crops are readable."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.uint8)


def smooth_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    coarse = rng.random((h // 8 + 2, w // 8 + 2, 3)) * 255
    return preprocessing.resize(coarse.astype(np.uint8), h, w, "bicubic")


def test_celeba_crop_box_and_resize():
    image = coordinate_image(218, 178)
    crop = preprocessing.central_crop(image, datasets.CELEBA_CROP)
    assert crop.shape == (140, 140, 3)
    assert (crop[0, 0, 0], crop[0, 0, 1]) == (39, 19)  # (218 - 140) // 2, (178 - 140) // 2
    assert (crop[-1, -1, 0], crop[-1, -1, 1]) == (178, 158)
    # A black face box inside a white frame: the crop + resize sees only the box.
    framed = np.full((218, 178, 3), 255, np.uint8)
    framed[39:179, 19:159] = 0
    out = datasets.DATASETS["CELEBA"].tfds.preprocess(64)(framed)
    assert out.shape == (64, 64, 3) and np.all(out == 0)


def test_short_side_sizes_are_integers_rounded_half_to_even():
    assert preprocessing.short_side_size(218, 178, 64) == (78, 64)  # 78.38 -> 78
    assert preprocessing.short_side_size(10, 25, 128) == (128, 320)
    assert preprocessing.short_side_size(2, 5, 3) == (3, 8)  # 7.5 -> 8
    assert preprocessing.short_side_size(2, 7, 3) == (3, 10)  # 10.5 -> 10, as tf.round
    assert preprocessing.resize_small(smooth_image(40, 100), 16).shape == (16, 40, 3)


def test_lsun_paths_crop_box():
    # 256 px: largest central square (columns 30..129 of 100 x 160), then bicubic resize.
    image = np.full((100, 160, 3), 255, np.uint8)
    image[:, 30:130] = 7
    out = datasets.DATASETS["LSUN"].tfds.preprocess(32)(image)
    assert out.shape == (32, 32, 3) and np.all(out == 7)
    # 128 px: short side to 128 (100 x 160 -> 128 x 205), then central crop of columns 38..165
    # (original columns 29.7..129.7: inside a box at 20..139 plus the filter's reach).
    image[:, 20:140] = 7
    out = datasets.DATASETS["LSUN"].tfds.preprocess(128)(image)
    assert out.shape == (128, 128, 3) and np.all(out == 7)
    wide = coordinate_image(20, 40)
    assert preprocessing.short_side_size(20, 40, 10) == (10, 20)
    np.testing.assert_array_equal(
        preprocessing.central_crop(preprocessing.resize_small(wide, 10), 10),
        preprocessing.resize_small(wide, 10)[:, 5:15],
    )


def test_resize_matches_tf_antialiased_resize_and_clips(tf):
    image = smooth_image(218, 178)
    for method in ("bilinear", "bicubic"):
        for size in ((64, 64), (37, 53), (300, 250)):
            ours = preprocessing.resize(image, *size, method=method)
            ref = tf.image.resize(image.astype(np.float32), size, method=method, antialias=True)
            ref = np.clip(np.round(ref.numpy()), 0, 255)
            assert ours.dtype == np.uint8 and ours.shape == (*size, 3)
            assert np.abs(ours - ref).max() <= 1 and np.mean(ours == ref) > 0.99
    # Bicubic overshoots at a hard edge; the original cast that to uint8 unclipped (docs/data.md, Resizing).
    edge = np.zeros((8, 8, 3), np.uint8)
    edge[:, 4:] = 255
    raw = tf.image.resize(edge.astype(np.float32), (32, 32), "bicubic", antialias=True).numpy()
    assert raw.max() > 255.5 and raw.min() < -0.5
    ours = preprocessing.resize(edge, 32, 32, "bicubic")
    np.testing.assert_array_equal(ours, np.clip(np.round(raw), 0, 255).astype(np.uint8))


def test_cifar_resize_is_identity_at_native_size():
    image = smooth_image(32, 32)
    preprocess = datasets.DATASETS["CIFAR10"].tfds.preprocess(32)
    np.testing.assert_array_equal(preprocess(image), image)
    assert datasets.DATASETS["CIFAR10"].tfds.preprocess(16)(image).shape == (
        16,
        16,
        3,
    )


def test_pad_to_centres_the_image():
    padded = preprocessing.pad_to(np.full((8, 8, 1), 9, np.uint8), 16)
    assert padded.shape == (16, 16, 1) and padded.sum() == 64 * 9
    assert np.all(padded[4:12, 4:12] == 9)
    with pytest.raises(ValueError, match="resize"):
        preprocessing.pad_to(padded, 8)


def test_flip_and_dequantization_on_a_synthetic_image():
    image = coordinate_image(4, 6)
    loader = pipeline.BatchLoader(
        Source(
            "synthetic",
            1,
            lambda i: (image, 0),
            lambda x: x,
            (4, 6, 3),
            is_image=True,
            channels=(3, False),
        ),
        seed=0,
        split="train",
        global_batch_size=1,
        process_index=0,
        process_count=1,
        single_pass=False,
        random_flip=True,
        uniform_dequantization=True,
        centered=False,
    )
    # The same example in 200 epochs: each draw is a flip or not, dequantized within its level.
    x = loader.transform(np.stack([image] * 200), np.arange(200), np.zeros(200, np.int64))
    flipped = x[:, 0, 0, 1] * 256 >= 5  # column 5 comes first when mirrored
    k = np.where(flipped[:, None, None, None], image[:, ::-1], image)
    assert np.all(x >= k / 256) and np.all(x < (k + 1.0) / 256)
    assert 70 <= flipped.sum() <= 130
    u = x * 256 - k
    assert abs(u.mean() - 0.5) < 0.02 and abs(u.std() - np.sqrt(1 / 12)) < 0.02


def test_digits_are_sklearns_scaled_to_uint8():
    from sklearn.datasets import load_digits

    reference = load_digits()
    images, labels = digits.digits_uint8()
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[..., 0], np.round(reference.images * 255 / 16))
    np.testing.assert_array_equal(labels, reference.target)
    assert images.max() == 255  # v = 16


def test_match_channels():
    gray = np.full((2, 2, 1), 50, np.uint8)
    red = np.zeros((2, 2, 4), np.uint8)
    red[..., 0], red[..., 3] = 255, 128
    np.testing.assert_array_equal(
        preprocessing.match_channels(gray, 3, True, "x"), np.full((2, 2, 3), 50)
    )
    np.testing.assert_array_equal(
        preprocessing.match_channels(red, 3, True, "x")[0, 0], [255, 0, 0]
    )
    assert preprocessing.match_channels(red, 1, True, "x")[0, 0, 0] == 76  # round(0.299 * 255)
    with pytest.raises(ValueError, match="x has 1 channels but data.num_channels=3.*convert"):
        preprocessing.match_channels(gray, 3, False, "x")


def write_folder(root):
    rng = np.random.default_rng(0)
    sizes = [(20, 30), (64, 48), (33, 33), (17, 40), (50, 50)]
    for i, (h, w) in enumerate(sizes):
        sub = root / ("cats" if i % 2 else "dogs")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(root / "dogs/x.JPG")


def test_image_folder_batches(tmp_path):
    write_folder(tmp_path)
    config = make_config("folder", 16, path=str(tmp_path), random_flip=True)
    files, labels = image_folder.list_images(tmp_path)
    assert [f.name for f in files] == ["1.png", "3.png", "0.png", "2.png", "4.png", "x.JPG"]
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 1, 1])  # cats = 0, dogs = 1
    per_process = [
        pipeline.create_datasets(config, seed=0, process_index=p, process_count=2)[0]
        for p in (0, 1)
    ]
    steps = [[next(it) for _ in range(3)] for it in per_process]  # 12 examples = 2 epochs
    assert steps[0][0]["image"].shape == (2, 16, 16, 3)
    seen = np.concatenate([b["label"] for b in steps[0] + steps[1]])
    assert np.sum(seen == 0) == 4 and np.sum(seen == 1) == 8
    source = datasets.get_source(config, "train")
    np.testing.assert_array_equal(
        source[3][0], preprocessing.crop_resize(np.asarray(Image.open(files[3])), 16, "bicubic")
    )


def test_image_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        datasets.get_source(make_config("folder", 16, path=str(empty)))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.get_source(make_config("folder", 16, path=str(tmp_path / "missing")))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="Cannot read image .*a.png"):
        datasets.get_source(make_config("folder", 16, path=str(bad)))
    gray = tmp_path / "gray"
    gray.mkdir()
    Image.fromarray(np.full((20, 20), 200, np.uint8)).save(gray / "g.png")
    with pytest.raises(ValueError, match="has 1 channels but data.num_channels=3"):
        datasets.get_source(make_config("folder", 8, path=str(gray)))
    converted = datasets.get_source(make_config("folder", 8, path=str(gray), convert_channels=True))
    np.testing.assert_array_equal(converted[0][0], np.full((8, 8, 3), 200))


def write_stylegan_tfrecords(tf, path, images):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image in images:
            chw = image.transpose(2, 0, 1)
            feature = {
                "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=chw.shape)),
                "data": tf.train.Feature(bytes_list=tf.train.BytesList(value=[chw.tobytes()])),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


def test_ffhq_tfrecords_round_trip(tf, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "ffhq-r03.tfrecords"
    write_stylegan_tfrecords(tf, path, images)
    assert len(tfrecord.tfrecord_offsets(path)) == 5
    config = make_config("FFHQ", 8, tfrecords_path=str(path))
    for split in ("train", "eval"):  # no held-out split: both read the file
        source = datasets.get_source(config, split)
        np.testing.assert_array_equal(np.stack([source[i][0] for i in range(5)]), images)
    feature = {"x": tf.train.Feature(int64_list=tf.train.Int64List(value=[-3, 2**40]))}
    record = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
    assert tfrecord.parse_tf_example(record) == {"x": [-3, 2**40]}
    with pytest.raises(ValueError, match="holds 8 x 8 images but data.image_size=16"):
        datasets.get_source(make_config("celebahq", 16, tfrecords_path=str(path)))[0]
    truncated = tmp_path / "truncated.tfrecords"
    truncated.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        datasets.get_source(make_config("ffhq", 8, tfrecords_path=str(truncated)))
    with pytest.raises(ValueError, match="not in tfds"):
        datasets.get_source(make_config("ffhq", 8))


def test_prepare_data_writes_array_record(tmp_path):
    import tensorflow_datasets as tfds

    builder = tfds.testing.DummyMnist(data_dir=str(tmp_path))
    prepare_data.prepare_builder(builder)
    source = tfds.data_source(builder.name, split="train", data_dir=str(tmp_path), download=False)
    assert len(source) == 20 and source[0]["image"].shape == (28, 28, 1)
    assert prepare_data.resolve_name("CIFAR10") == "cifar10"
    assert prepare_data.resolve_name("svhn") == "svhn_cropped"
    assert prepare_data.resolve_name("lsun", category="church_outdoor") == "lsun/church_outdoor"
    assert prepare_data.resolve_name("celebahq", resolution=1024) == "celeb_a_hq/1024"
    assert prepare_data.resolve_name("lsun/bedroom") == "lsun/bedroom"
    with pytest.raises(ValueError, match="data.category"):
        prepare_data.resolve_name("lsun")
    with pytest.raises(ValueError, match="FFHQ is not in tfds"):
        prepare_data.resolve_name("ffhq")


def test_max_pairwise_distance_known_answer():
    rng = np.random.default_rng(0)
    d = 300
    x = rng.uniform(0.25, 0.75, (700, d))
    x[123], x[456] = 0.0, 1.0  # opposite corners of the unit cube: distance sqrt(d)
    distance, pair = sigma_max.max_pairwise_distance(x, chunk_size=256)
    assert sorted(pair) == [123, 456]
    np.testing.assert_allclose(distance, np.sqrt(d), rtol=1e-12)


def test_sigma_max_of_digits_equals_brute_force():
    config = make_config("digits", 8, num_channels=1)
    result = sigma_max.estimate_sigma_max(config, num_samples=10_000)
    images = digits.digits_uint8()[0][: -digits.NUM_EVAL]
    images = images.reshape(len(images), -1).astype(np.float32) / np.float32(255)  # model space
    assert result["num_samples"] == result["num_examples"] == len(images)
    np.testing.assert_allclose(result["sigma_max"], pdist(images).max(), rtol=1e-12)


def test_sigma_max_cli(tmp_path):
    config_file = tmp_path / "toy.py"
    config_file.write_text(
        "import ml_collections\n"
        "def get_config():\n"
        "    c = ml_collections.ConfigDict()\n"
        "    c.data = dict(dataset='toy2d', mixture_means=[[0.0, 0.0], [6.0, 8.0]],\n"
        "                  mixture_stds=0.01, num_train=200)\n"
        "    c.model = dict(sigma_max=50.0)\n"
        "    return c\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-m", "score_sde_jax.tools.sigma_max", f"--config={config_file}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    # Two tight clusters 10 apart: the largest distance is 10 plus a few stds.
    value = float(result.stdout.split("max pairwise distance ")[1].split()[0])
    assert 10.0 < value < 10.1 and "over 200 of 200" in result.stdout
