"""Bad input and faults (issue 16): every command answers with one line, before any work, and
loses nothing.

Each case runs a command as a user does, in a subprocess (``python -m score_sde_jax.X``), and
asserts its exit code (2: usage error, 1: any other user error; docs/commands.md#exit-codes),
that stderr holds exactly one ``error: ...`` line naming the problem and no traceback, and that
the training run it points at is byte-for-byte unchanged (every file hashed, except the
``stdout.txt`` log a training command appends to). The run is one tiny digits MLP (steps 1 and
2), trained once for the module.
"""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from conftest import FIXTURES, TINY, cli
from PIL import Image

ORIGINAL_CKPT = FIXTURES / "official_models" / "ncsnpp_ve_small_ckpt" / "checkpoint_1"


def assert_error(result, exit_code, *fragments):
    """Exit code ``exit_code``, one ``error:`` line on stderr holding every fragment, and no
    traceback."""
    stderr = result.stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "Event loop is closed" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-3000:]
    assert " — " in errors[0], errors[0]  # what is wrong — what to do
    for fragment in fragments:
        assert str(fragment) in errors[0], errors[0]
    assert result.returncode == exit_code, stderr[-3000:]
    return errors[0]


def tree_hash(folder) -> dict:
    """``{relative path: sha256}`` of every file under ``folder`` but the appended logs."""
    hashes = {}
    for root, _, files in os.walk(folder):
        for name in files:
            if name.startswith("stdout") and name.endswith(".txt"):
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                hashes[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return hashes


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny run with checkpoints at steps 1 and 2."""
    workdir = tmp_path_factory.mktemp("bad_input") / "run"
    result = cli("train", f"--workdir={workdir}", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2"]
    return workdir


@pytest.fixture(scope="module")
def damaged_run(run, tmp_path_factory):
    """A copy of `run` whose newest checkpoint (step 2) has a truncated array file."""
    workdir = tmp_path_factory.mktemp("damaged") / "run"
    shutil.copytree(run, workdir)
    data = workdir / "checkpoints" / "2" / "state" / "ocdbt.process_0" / "d"
    victim = max(data.iterdir(), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    return workdir


@pytest.fixture
def unchanged(run):
    """Asserts, after the test, that `run` is byte-for-byte what it was."""
    before = tree_hash(run)
    yield run
    assert tree_hash(run) == before


@pytest.fixture(scope="module")
def original_config(tmp_path_factory):
    """A config file for the released-format checkpoint of tests/fixtures/official_models."""
    with np.load(FIXTURES / "official_models" / "ncsnpp_ve_small.npz") as z:
        config = json.loads(str(z["config_json"]))["config"]
    path = tmp_path_factory.mktemp("configs") / "ncsnpp_ve_small.py"
    path.write_text(
        "from score_sde_jax import checkpoints\n\n\n"
        f"def get_config():\n    return checkpoints.config_from_json({json.dumps(config)!r})\n"
    )
    return path


def _png(path, value=128):
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


def image_folder(tmp_path, kind):
    """A folder for ``data.dataset=folder``: 'empty', 'no_images', 'truncated' or 'one_bad'."""
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "no_images":
        (folder / "notes.txt").write_text("not an image")
    if kind in ("truncated", "one_bad"):
        for i in range(8):
            _png(folder / f"{i}.png", 16 * i)
        bad = folder / "3.png"
        bad.write_bytes(bad.read_bytes()[:40])
    return folder


def _folder_flags(folder):
    return [*TINY, "--config.data.dataset=folder", f"--config.data.path={folder}"]


# ------------------------------------------------------------------------------------------------
# A good message, formerly under a traceback (train, train_classifier, convert_checkpoint).
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, devices, fragment",
    [
        ("--config.training.batch_size=0", 1, "batch_size"),
        ("--config.training.batch_size=3", 2, "batch_size"),  # not divisible by 2 devices
        ("--config.training.n_iters=-5", 1, "n_iters"),  # formerly accepted, exit 0
    ],
    ids=["zero_batch", "indivisible_batch", "negative_n_iters"],
)
def test_train_refuses_bad_config_values(tmp_path, override, devices, fragment):
    result = cli("train", f"--workdir={tmp_path / 'run'}", *TINY, override, devices=devices)
    assert_error(result, 2, fragment)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_workdir_under_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    result = cli("train", f"--workdir={tmp_path / 'file' / 'run'}", *TINY)
    assert_error(result, 1, tmp_path / "file", "is a file")


def test_train_resume_with_another_models_config(unchanged):
    result = cli("train", f"--workdir={unchanged}", *TINY, "--config.model.nf=16")
    assert_error(result, 1, "model.nf: run 32, given 16", "config")


def test_train_stops_on_a_non_finite_loss(tmp_path):
    workdir = tmp_path / "run"
    result = cli(
        "train",
        f"--workdir={workdir}",
        *TINY,
        "--config.training.n_iters=4",
        "--config.optim.lr=1e38",
    )
    assert_error(result, 1, "loss")


@pytest.mark.parametrize(
    "kind, fragment",
    [
        ("empty", "holds no images"),
        ("no_images", "holds no images"),
        ("truncated", "3.png"),
    ],
)
def test_train_on_a_bad_image_folder(tmp_path, kind, fragment):
    folder = image_folder(tmp_path, kind)
    result = cli("train", f"--workdir={tmp_path / 'run'}", *_folder_flags(folder))
    line = assert_error(result, 1, fragment)
    if kind == "truncated":
        assert "skip_unreadable_images" in line  # the way out
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_skip_unreadable_images_says_how_many(tmp_path):
    folder = image_folder(tmp_path, "one_bad")
    result = cli(
        "train",
        f"--workdir={tmp_path / 'run'}",
        *_folder_flags(folder),
        "--config.training.n_iters=1",
        "--config.data.skip_unreadable_images=True",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Skipped 1 unreadable image(s) of 8" in result.stderr
    assert "3.png" in result.stderr


def test_train_classifier_given_a_score_model_config(tmp_path):
    result = cli("train_classifier", f"--workdir={tmp_path / 'run'}", "--config=digits")
    assert_error(result, 2, "'classifier'", "classifier_digits")


def test_convert_shape_mismatch(tmp_path, original_config):
    result = cli(
        "convert_checkpoint",
        f"--config={original_config}",
        "--config.model.nf=8",
        f"--input={ORIGINAL_CKPT}",
        f"--workdir={tmp_path / 'run'}",
    )
    assert_error(result, 1, "does not match", "config the checkpoint was trained with")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_convert_into_a_run_with_checkpoints(unchanged, original_config):
    result = cli(
        "convert_checkpoint",
        f"--config={original_config}",
        f"--input={ORIGINAL_CKPT}",
        f"--workdir={unchanged}",
    )
    assert_error(result, 1, unchanged / "checkpoints")


def test_convert_missing_input_file(tmp_path, original_config):
    missing = tmp_path / "no_such_checkpoint"
    result = cli(
        "convert_checkpoint",
        f"--config={original_config}",
        f"--input={missing}",
        f"--workdir={tmp_path / 'run'}",
    )
    assert_error(result, 1, missing)


# ------------------------------------------------------------------------------------------------
# Messages that name the problem.
# ------------------------------------------------------------------------------------------------


def test_config_file_that_does_not_exist(tmp_path):
    missing = tmp_path / "no_such_config.py"
    result = cli("train", f"--workdir={tmp_path / 'run'}", f"--config={missing}")
    assert_error(result, 2, missing)


def test_config_name_that_does_not_exist(tmp_path):
    result = cli("train", f"--workdir={tmp_path / 'run'}", "--config=ve/cifar10_ncsnpp_continuos")
    assert_error(result, 2, "ve/cifar10_ncsnpp_continuous")  # the close match


def test_unknown_config_key(tmp_path):
    result = cli("train", f"--workdir={tmp_path / 'run'}", "--config.training.no_such_key=1")
    assert_error(result, 2, "no_such_key")


def test_verbose_shows_the_traceback(tmp_path):
    result = cli(
        "train", f"--workdir={tmp_path / 'run'}", "--config.training.no_such_key=1", "--verbose"
    )
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "error: " in result.stderr


def test_sample_unknown_step_lists_the_steps(unchanged, tmp_path):
    result = cli("sample", f"--workdir={unchanged}", "--checkpoint=999", "--num_samples=2")
    assert_error(result, 1, "999", "[1, 2]")
    assert "--config" not in result.stderr  # formerly: "pass --config", the wrong fix


@pytest.mark.parametrize(
    "args, exit_code, fragments",
    [
        (["--pretrained=cifar10"], 1, ["'cifar10'", "digits", "docs/pretrained.md"]),
        (["--pretrained=digits", "--checkpoint=1"], 2, ["--pretrained=digits", "--checkpoint"]),
    ],
    ids=["unknown", "with_checkpoint"],
)
def test_sample_bad_pretrained_model(args, exit_code, fragments, tmp_path):
    result = cli("sample", *args, f"--output={tmp_path / 'x.npz'}")
    assert_error(result, exit_code, *fragments)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------
# Checks before work.
# ------------------------------------------------------------------------------------------------


def test_sample_vp_reverse_diffusion_with_too_few_levels(tmp_path):
    # color_digits: VP with reverse diffusion + Langevin. At N <= beta_max = 20 the DDPM chain's
    # alpha_i = 1 - beta_i reaches 0: it used to return NaN images, it is refused now.
    output = tmp_path / "out" / "x.npz"
    result = cli("sample", "--pretrained=color_digits", "--num_steps=10", f"--output={output}")
    assert_error(result, 2, "reverse_diffusion", "N = 10", "N ≥ 21", "--sampler=")
    assert not output.parent.exists()


def test_sample_output_under_a_file_fails_before_sampling(unchanged, tmp_path):
    (tmp_path / "file").write_text("")
    output = tmp_path / "file" / "samples.npz"
    result = cli("sample", f"--workdir={unchanged}", f"--output={output}", "--num_samples=2")
    assert_error(result, 1, output, "is a file")
    assert "Sampling" not in result.stderr  # nothing was sampled


# ------------------------------------------------------------------------------------------------
# A damaged newest checkpoint.
# ------------------------------------------------------------------------------------------------


def test_sample_falls_back_to_the_newest_intact_checkpoint(damaged_run, tmp_path):
    before = tree_hash(damaged_run)
    output = tmp_path / "samples.npz"
    result = cli(
        "sample",
        f"--workdir={damaged_run}",
        f"--output={output}",
        "--num_samples=2",
        "--num_steps=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Event loop is closed" not in result.stderr
    assert "using checkpoint 1, the newest intact one" in result.stderr
    with np.load(output) as z:
        assert json.loads(str(z["metadata"]))["step"] == 1
    assert tree_hash(damaged_run) == before  # the damaged checkpoint is reported, not renamed


def test_sample_asked_for_the_damaged_step(damaged_run):
    result = cli("sample", f"--workdir={damaged_run}", "--checkpoint=2", "--num_samples=2")
    assert_error(result, 1, "Checkpoint 2", "damaged", "--checkpoint=1")


def test_evaluate_skips_the_damaged_checkpoint(damaged_run):
    before = tree_hash(damaged_run)
    result = cli(
        "evaluate",
        f"--workdir={damaged_run}",
        *TINY,
        "--config.eval.begin_ckpt=1",
        "--config.eval.end_ckpt=2",
        "--config.eval.enable_sampling=False",
        "--config.eval.enable_bpd=False",
        "--eval_folder=eval_damaged",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Event loop is closed" not in result.stderr
    assert "Skipping checkpoint 2" in result.stderr
    shutil.rmtree(damaged_run / "eval_damaged")
    assert tree_hash(damaged_run) == before
