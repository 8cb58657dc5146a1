#!/usr/bin/env bash
# Requests a TPU VM or pod slice as a queued resource and waits until it is ACTIVE. Idempotent:
# an existing queued resource of the same name is reused.
#
#   TPU_NAME=bleedjax ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 tpu/create.sh
#   DRY_RUN=1 tpu/create.sh          # print the gcloud commands only
#
# Settings (environment): TPU_NAME, QUEUED_RESOURCE, ZONE, ACCELERATOR_TYPE, RUNTIME_VERSION,
# PROJECT, SPOT=1, RETRIES, RETRY_SLEEP, WAIT_SECONDS (default 3600), DRY_RUN=1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WAIT_SECONDS="${WAIT_SECONDS:-3600}"
capacity=()
if [[ "$SPOT" == 1 ]]; then
  capacity=(--spot)
fi

describe=(gcloud compute tpus queued-resources describe "$QUEUED_RESOURCE" --zone="$ZONE"
  "${project_flags[@]}" --format="value(state.state)")

if [[ "$DRY_RUN" != 1 ]] && state="$("${describe[@]}" 2>/dev/null)"; then
  echo "queued resource $QUEUED_RESOURCE exists (state $state); not creating it again"
else
  retry gcloud compute tpus queued-resources create "$QUEUED_RESOURCE" --zone="$ZONE" \
    "${project_flags[@]}" --node-id="$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
    --runtime-version="$RUNTIME_VERSION" "${capacity[@]}"
fi

if [[ "$DRY_RUN" == 1 ]]; then
  run "${describe[@]}"
  exit 0
fi
deadline=$((SECONDS + WAIT_SECONDS))
while true; do
  state="$("${describe[@]}" || echo UNKNOWN)"
  echo "$QUEUED_RESOURCE: $state"
  case "$state" in
    ACTIVE) break ;;
    FAILED|SUSPENDED) echo "queued resource $QUEUED_RESOURCE is $state" >&2; exit 1 ;;
  esac
  if (( SECONDS >= deadline )); then
    echo "queued resource $QUEUED_RESOURCE not ACTIVE after ${WAIT_SECONDS}s" >&2
    exit 1
  fi
  sleep 30
done
