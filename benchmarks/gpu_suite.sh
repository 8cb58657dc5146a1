#!/usr/bin/env bash
# The speed benchmarks (and the spectral-subtraction quality benchmark) on whatever accelerator
# JAX finds, in priority order, under one overall deadline: one call on a lent GPU machine.
#
#   benchmarks/gpu_suite.sh OUT_DIR [SECONDS] [full|quick|subtraction]
#
# Each step runs in its own process with the time that is left (at most its own limit), so a
# slow or failing step never stops the ones after it. OUT_DIR receives suite.log (everything,
# in order) and results.tar (each step's log and JSON), rewritten after every step, so a run
# cut short still returns what it measured. `quick` runs tiny sizes, to check the script on a
# CPU before spending device time; `subtraction` runs spectral subtraction's schedules, its speed
# benchmark with both presets, and its tests. PYTHON picks the interpreter (python3 by default).
#
# On a machine with JAX but without this package installed, run it from the repository root as
#   ln -sfn ../configs bleedjax/configs; export PYTHONPATH=$PWD
# (the install maps configs/ to bleedjax.configs) with soundfile, ml_collections,
# pyroomacoustics, grain, tensorflow-datasets and mir_eval importable, and ../shared/data there.
set -u
out=${1:?usage: gpu_suite.sh OUT_DIR [SECONDS] [full|quick|subtraction]}
budget=${2:-540}
scale=${3:-full}
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
start=$(date +%s)
mkdir -p "$out/steps"
exec > >(tee -a "$out/suite.log") 2>&1
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false

step() {
  local name=$1 limit=$2
  shift 2
  local left=$((budget - ($(date +%s) - start) - 10))
  if ((left < 30)); then
    echo "=== $name: SKIPPED (${left}s left)"
    return
  fi
  ((limit > left)) && limit=$left
  echo "=== $name (limit ${limit}s): $*"
  local t0=$(date +%s)
  timeout -k 10 "$limit" "$python" "$@" >"$out/steps/$name.log" 2>&1
  local rc=$?
  echo "--- $name: exit $rc after $(($(date +%s) - t0)) s"
  grep -v -E "^\[|it/s\]|WARNING: All log messages" "$out/steps/$name.log" | tail -n 45
  tar -C "$out" -cf "$out/results.tar" steps
}

if [ "$scale" = quick ]; then
  kamir=(--quick --presets K4 --numpy-budget 0)
  kamir_breakdown=(--quick --presets K4 --numpy-budget 0 --repeats 2)
  subtraction=(--quick --tracks 4 --parts sessions batch cli --numpy-budget 0 --numpy-iterations 2 --batch-sessions 4 --batch-seconds 2 --repeats 2)
  kam_nmf=(--minutes 0.1 --batch 2 --batch-seconds 3 --memory-minutes --repeats 2)
  differentiable=(--sessions 2 --chunk 2 --seconds 2)
  neural=(--sessions 2 --seconds 4 --batch-size 2 --repeats 1 --train configs/tunet.py:runlocal --train-steps 2)
  quality=(--seeds 1)
  threads=2
else
  kamir=(--presets K1 K2 K3 K4 K5 --batch-size 100 --repeats 5 --numpy-budget 0)
  kamir_breakdown=(--presets K4 --batch-size 100 --repeats 3 --numpy-budget 0)
  subtraction=(--parts sessions batch cli --tracks 4 8 16 32 --numpy-budget 0 --numpy-iterations 5 --repeats 5)
  kam_nmf=(--memory-minutes --repeats 3)
  differentiable=(--sessions 100 --chunk 100)
  neural=(--sessions 100 --batch-size 50 --repeats 3 --train configs/tunet.py:bundled configs/tunet.py --train-steps 5)
  quality=(--seeds 1)
  threads=$(nproc)
fi

echo "=== machine"
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>/dev/null || echo "no nvidia-smi"
nproc
step versions 60 -c "
import importlib, jax, jax.numpy as jnp
for name in ['jax', 'jaxlib', 'flax', 'optax', 'orbax.checkpoint', 'chex', 'numpy', 'scipy', 'soundfile', 'ml_collections', 'pyroomacoustics', 'grain', 'tensorflow_datasets', 'mir_eval']:
    try:
        print(name, getattr(importlib.import_module(name), '__version__', '?'))
    except Exception as error:
        print(name, 'MISSING', type(error).__name__, error)
print(jax.devices(), jax.default_backend())
x = jnp.ones((1024, 1024))
print('matmul ok', float((x @ x)[0, 0]))
import bleedjax.cli, bleedjax.methods.spectral_subtraction, bleedjax.methods.kamir
print('bleedjax imports ok')
"
if [ "$scale" = subtraction ]; then
  step speed_ss_schedules 120 "$here/speed_ss_schedules.py" --tracks 4 16 --unrolls 1 4 8 16 --repeats 5 --threads "$threads" --json "$out/steps/speed_ss_schedules.json"
  step speed_ss_schedules_paper 60 "$here/speed_ss_schedules.py" --tracks 16 --unrolls 1 8 --preset paper --repeats 5 --threads "$threads" --json "$out/steps/speed_ss_schedules_paper.json"
  step speed_spectral_subtraction 150 "$here/speed_spectral_subtraction.py" --parts sessions batch --tracks 4 8 16 32 --numpy-budget 0 --numpy-iterations 3 --repeats 5 --preset refined --threads "$threads" --json "$out/steps/speed_spectral_subtraction.json"
  step speed_spectral_subtraction_paper 80 "$here/speed_spectral_subtraction.py" --parts sessions --tracks 4 16 --numpy-budget 0 --numpy-iterations 3 --repeats 5 --preset paper --threads "$threads" --json "$out/steps/speed_spectral_subtraction_paper.json"
  step tests_spectral_subtraction 150 -m pytest -p no:cacheprovider tests/test_spectral_subtraction.py
  echo "=== done after $(($(date +%s) - start)) s"
  exit 0
fi
step speed_kamir 150 "$here/speed_kamir.py" "${kamir[@]}" --threads "$threads" --json "$out/steps/speed_kamir.json"
step speed_spectral_subtraction 200 "$here/speed_spectral_subtraction.py" "${subtraction[@]}" --preset refined --threads "$threads" --json "$out/steps/speed_spectral_subtraction.json"
step speed_kam_nmf 90 "$here/speed_kam_nmf.py" "${kam_nmf[@]}" --skip-numpy --json "$out/steps/speed_kam_nmf.json"
step speed_differentiable 100 "$here/speed_differentiable.py" "${differentiable[@]}" --json "$out/steps/speed_differentiable.json"
step quality_spectral_subtraction 150 "$here/quality_spectral_subtraction.py" "${quality[@]}" --json "$out/steps/quality_spectral_subtraction.json"
step speed_neural 120 "$here/speed_neural.py" "${neural[@]}" --json "$out/steps/speed_neural.json"
step speed_kamir_breakdown 90 "$here/speed_kamir.py" "${kamir_breakdown[@]}" --breakdown --threads "$threads" --json "$out/steps/speed_kamir_breakdown.json"
echo "=== done after $(($(date +%s) - start)) s"
