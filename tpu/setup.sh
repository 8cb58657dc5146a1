#!/usr/bin/env bash
# Copies this checkout to every worker and installs it with jax[tpu] into a virtual environment.
# Idempotent: rerunning replaces the code and reuses the environment.
#
#   TPU_NAME=bleedjax ZONE=us-central2-b tpu/setup.sh
#   DRY_RUN=1 tpu/setup.sh
#
# Settings (environment): TPU_NAME, ZONE, PROJECT, REMOTE_DIR, VENV, PYTHON (on the workers,
# default python3), RETRIES, RETRY_SLEEP, DRY_RUN=1. The committed HEAD is copied (git archive);
# commit first.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PYTHON="${PYTHON:-python3}"
staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
archive="$staging/bleedjax.tar.gz"
run git -C "$REPO_ROOT" archive --format=tar.gz --output="$archive" HEAD

retry gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:bleedjax.tar.gz" --zone="$ZONE" \
  "${project_flags[@]}" --worker=all

install="set -euo pipefail
rm -rf ~/$REMOTE_DIR && mkdir -p ~/$REMOTE_DIR && tar -xzf ~/bleedjax.tar.gz -C ~/$REMOTE_DIR
test -x ~/$VENV/bin/python || $PYTHON -m venv ~/$VENV
~/$VENV/bin/python -m pip install --quiet --upgrade pip
~/$VENV/bin/python -m pip install --quiet -e ~/$REMOTE_DIR 'jax[tpu]' gcsfs google-cloud-storage
~/$VENV/bin/python -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.device_count())'"
on_workers "$install"
