# Shared settings and helpers for create.sh, setup.sh and run.sh (sourced, not run).
# Every setting can be overridden from the environment, e.g.
#   TPU_NAME=my-pod ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 BUCKET=gs://my-bucket tpu/run.sh
# DRY_RUN=1 prints each gcloud command instead of running it.

# The scripts take their settings from the environment only. -h/--help prints the calling
# script's header; any other argument is refused before anything runs (a stray argument must not
# start a training run, reinstall the workers or request a slice).
if [[ $# -gt 0 ]]; then
  if [[ "$1" == "-h" || "$1" == "--help" ]]; then
    sed -n '2,/^set -euo pipefail$/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
  fi
  echo "$(basename "$0"): takes no arguments, got '$*' (settings come from the environment; see --help)" >&2
  exit 2
fi

TPU_NAME="${TPU_NAME:-bleedjax}"
QUEUED_RESOURCE="${QUEUED_RESOURCE:-${TPU_NAME}-qr}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
PROJECT="${PROJECT:-}"              # empty: gcloud's configured project
BUCKET="${BUCKET:-gs://bleedjax-${USER:-runs}}"
SPOT="${SPOT:-0}"                   # 1: request spot capacity
REMOTE_DIR="${REMOTE_DIR:-bleedjax}"  # the package checkout on each worker, relative to $HOME
VENV="${VENV:-bleedjax-venv}"         # the virtual environment on each worker, relative to $HOME
RETRIES="${RETRIES:-5}"
RETRY_SLEEP="${RETRY_SLEEP:-20}"
DRY_RUN="${DRY_RUN:-0}"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

project_flags=()
if [[ -n "$PROJECT" ]]; then
  project_flags=(--project="$PROJECT")
fi

# quote ARG: ARG as one POSIX shell word (single quotes where needed; newlines kept).
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# run CMD...: run a command, or print it (shell-quoted, after "+ ") when DRY_RUN=1.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '+'
    local arg
    for arg in "$@"; do
      printf ' %s' "$(quote "$arg")"
    done
    printf '\n'
  else
    "$@"
  fi
}

# retry CMD...: run with up to RETRIES attempts, RETRY_SLEEP seconds apart (ssh and scp to TPU
# workers fail transiently while they boot or after maintenance).
retry() {
  local attempt=1
  until run "$@"; do
    if (( attempt >= RETRIES )); then
      echo "giving up after $attempt attempts: $*" >&2
      return 1
    fi
    echo "attempt $attempt failed; retrying in ${RETRY_SLEEP}s" >&2
    sleep "$RETRY_SLEEP"
    attempt=$((attempt + 1))
  done
}

# on_workers COMMAND: run one shell command string on every worker of the slice.
on_workers() {
  retry gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" "${project_flags[@]}" \
    --worker=all --command="$1"
}
