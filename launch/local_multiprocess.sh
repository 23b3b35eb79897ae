#!/usr/bin/env bash
# Runs N cooperating JAX processes on this machine, each with its own CPU devices, through
# jax.distributed (the same code path as a pod or a cluster). Used by the tests.
set -euo pipefail

usage() {
  cat <<USAGE
Usage: $(basename "$0") -n NUM_PROCESSES -w WORKDIR [-d DEVICES_PER_PROCESS] [-p PORT] [-- TRAIN_FLAGS...]

Starts NUM_PROCESSES copies of 'python -m score_sde_jax.train' on localhost that form one
jax.distributed job (process 0 hosts the coordinator on 127.0.0.1:PORT). Logs go to
WORKDIR/process_<i>.log. Exits non-zero if any process fails.

  -n  number of processes (required)
  -w  work directory shared by all processes (required)
  -d  simulated CPU devices per process (default 1)
  -p  coordinator port (default: a free port)
  -h  show this help
The Python interpreter is \$PYTHON if set, else 'python' from PATH.
Flags after '--' are passed to every process (e.g. --config=... --config.training.n_iters=10).
USAGE
}

num_processes="" workdir="" devices=1 port=""
while getopts "n:w:d:p:h" opt; do
  case "$opt" in
    n) num_processes="$OPTARG" ;;
    w) workdir="$OPTARG" ;;
    d) devices="$OPTARG" ;;
    p) port="$OPTARG" ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift

if [ -z "$num_processes" ] || [ -z "$workdir" ]; then
  echo "error: -n NUM_PROCESSES and -w WORKDIR are required" >&2
  usage >&2
  exit 2
fi
python="${PYTHON:-python}"
if [ -z "$port" ]; then
  port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi

mkdir -p "$workdir"
pids=()
for ((i = 0; i < num_processes; i++)); do
  JAX_NUM_CPU_DEVICES="$devices" "$python" -m score_sde_jax.train \
    --workdir="$workdir" \
    --coordinator_address="127.0.0.1:$port" \
    --num_processes="$num_processes" \
    --process_id="$i" \
    "$@" >"$workdir/process_$i.log" 2>&1 &
  pids+=("$!")
done

status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "process $i failed; see $workdir/process_$i.log" >&2
    status=1
  fi
done
exit "$status"
