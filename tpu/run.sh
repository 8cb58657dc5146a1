#!/usr/bin/env bash
# Runs `bleedjax train` on every worker of the slice at once (one JAX process per worker, joined
# by jax.distributed), with a gs:// workdir. Rerunning the same RUN_NAME resumes from its last
# checkpoint, so a failed or preempted run is simply started again (retries do that too).
#
#   BUCKET=gs://my-bucket RUN_NAME=tunet-v4-32 tpu/run.sh
#   CONFIG=configs/tunet.py TRAIN_ARGS="--set data.data_dir=gs://my-bucket/tfds" tpu/run.sh
#   DRY_RUN=1 tpu/run.sh
#
# Settings (environment): TPU_NAME, ZONE, PROJECT, BUCKET, RUN_NAME, WORKDIR (default
# $BUCKET/runs/$RUN_NAME), CONFIG, TRAIN_ARGS (more `bleedjax train` arguments), REMOTE_DIR,
# VENV, RETRIES, RETRY_SLEEP, DRY_RUN=1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CONFIG="${CONFIG:-configs/tunet.py}"
RUN_NAME="${RUN_NAME:-tunet}"
WORKDIR="${WORKDIR:-$BUCKET/runs/$RUN_NAME}"
TRAIN_ARGS="${TRAIN_ARGS:-}"

if [[ "$WORKDIR" != gs://* ]]; then
  echo "WORKDIR must be a gs:// path that every worker can reach, got $WORKDIR" >&2
  exit 2
fi
printf -v train_command 'bleedjax train --config %q --workdir %q' "$CONFIG" "$WORKDIR"
command="set -euo pipefail
cd ~/$REMOTE_DIR
export BLEEDJAX_DISTRIBUTED=1
~/$VENV/bin/$train_command $TRAIN_ARGS"
on_workers "$command"
