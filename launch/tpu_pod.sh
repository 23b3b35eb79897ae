#!/usr/bin/env bash
# Cloud TPU VM pod slice: create, install, train on every worker at once, tail logs, stop, delete.
set -euo pipefail

# The Python the package needs (setup.cfg python_requires); tpu-ubuntu2204-base ships 3.10.
python_version=3.12
# On the workers: the venv's Python ($HOME expands there).
venv_python="\$HOME/score_sde_venv/bin/python"

usage() {
  cat <<USAGE
Usage: $(basename "$0") COMMAND -n TPU_NAME -z ZONE [options] [-- TRAIN_FLAGS...]

Commands:
  create   create the TPU VM slice (-t ACCELERATOR_TYPE, -v RUNTIME_VERSION)
  install  copy this repository to every worker and install it with its TPU extra into a
           Python $python_version venv (~/score_sde_venv, made by uv: the image's Python is older)
  train    start 'python -m score_sde_jax.train TRAIN_FLAGS' (the venv's) on all workers at once
           (in the background, logging to ~/score_sde_train.log on each worker)
  logs     tail the training log of worker 0 (-w WORKER to pick another)
  stop     send SIGTERM to training on every worker (it checkpoints, then exits)
  delete   delete the TPU VM slice

Options:
  -n TPU_NAME          name of the slice (required)
  -z ZONE              zone, e.g. us-central2-b (required)
  -p PROJECT           GCP project (default: gcloud's configured project)
  -t ACCELERATOR_TYPE  e.g. v4-32 (create; default v4-32)
  -v RUNTIME_VERSION   TPU software version (create; default tpu-ubuntu2204-base)
  -w WORKER            worker index for 'logs' (default 0)
  -h                   show this help
TRAIN_FLAGS go after '--', e.g. -- --config=configs/ve/cifar10_ncsnpp_continuous.py
  --workdir=gs://BUCKET/exp (orbax writes checkpoints to a bucket directly).
USAGE
}

command="${1:-}"
if [ -z "$command" ] || [ "$command" = "-h" ] || [ "$command" = "--help" ]; then
  usage
  exit 0
fi
shift

name="" zone="" project="" accelerator="v4-32" version="tpu-ubuntu2204-base" worker=0
while getopts "n:z:p:t:v:w:h" opt; do
  case "$opt" in
    n) name="$OPTARG" ;;
    z) zone="$OPTARG" ;;
    p) project="$OPTARG" ;;
    t) accelerator="$OPTARG" ;;
    v) version="$OPTARG" ;;
    w) worker="$OPTARG" ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift

if [ -z "$name" ] || [ -z "$zone" ]; then
  echo "error: -n TPU_NAME and -z ZONE are required" >&2
  usage >&2
  exit 2
fi
command -v gcloud >/dev/null || { echo "error: gcloud is not installed" >&2; exit 2; }

gcloud_tpu=(gcloud compute tpus tpu-vm)
location=(--zone="$zone")
[ -n "$project" ] && location+=(--project="$project")
on_all() { "${gcloud_tpu[@]}" ssh "$name" "${location[@]}" --worker=all --command="$1"; }

case "$command" in
  create)
    "${gcloud_tpu[@]}" create "$name" "${location[@]}" \
      --accelerator-type="$accelerator" --version="$version"
    ;;
  install)
    repo="$(cd "$(dirname "$0")/.." && pwd)"
    "${gcloud_tpu[@]}" scp --recurse "$repo" "$name":score_sde_jax_src "${location[@]}" --worker=all
    # uv fetches a standalone CPython when the image has none of this version.
    on_all "set -e
python3 -m pip install -q --user uv
python3 -m uv venv -q --allow-existing --python $python_version ~/score_sde_venv
python3 -m uv pip install -q --python $venv_python -e ~/score_sde_jax_src'[tpu]'
$venv_python -c 'import sys, jax, score_sde_jax; print(sys.version.split()[0], jax.__version__)'"
    ;;
  train)
    if [ $# -eq 0 ]; then
      echo "error: pass training flags after '--', at least --workdir=gs://BUCKET/DIR" >&2
      exit 2
    fi
    flags="$(printf '%q ' "$@")"
    on_all "cd ~/score_sde_jax_src && nohup $venv_python -m score_sde_jax.train $flags > ~/score_sde_train.log 2>&1 &"
    ;;
  logs)
    "${gcloud_tpu[@]}" ssh "$name" "${location[@]}" --worker="$worker" --command="tail -f ~/score_sde_train.log"
    ;;
  stop)
    on_all "pkill -TERM -f score_sde_jax.train || true"
    ;;
  delete)
    "${gcloud_tpu[@]}" delete "$name" "${location[@]}" --quiet
    ;;
  *)
    echo "error: unknown command '$command'" >&2
    usage >&2
    exit 2
    ;;
esac
