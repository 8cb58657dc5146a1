"""XLA flags of the test processes: ``--xla_force_host_platform_device_count`` for the mesh tests,
and two codegen flags that compile faster, where the installed jaxlib still has them.

The suite is mostly XLA compilation (a fresh clone on the 2-core machine: about 60 % of its CPU
time; with both flags, backend compilation 331 s and tracing 133 s of the workers' 839 s), so it
compiles as users do not:

- XLA's legacy CPU fusion emitters compile the same programs 35-45 % faster (the differentiable
  model's ``fit_session`` on 4 tracks × 2 s: 2.24 s → 1.33 s; spectral subtraction's
  ``reduce_session``: 0.69 s → 0.37 s). Users run XLA's default (the new emitters): they run
  2-15 % faster once compiled.
- LLVM at optimisation level 1 instead of XLA's default 3: the whole default run, both flags
  against the emitters alone, back to back on one 2-core machine with an empty compile cache
  (2026-12-07): 507 s → 440 s of pytest, 435 s → 331 s of backend compilation summed over both
  workers; every test passed both ways. On a 2-core AVX2-only AMD EPYC VM level 1 runs the
  differentiable model's Adam steps 1.6-2.7× slower (3.0 against 1.1 ms a step on 5 tracks; a fit
  on 7 tracks × 20 s 6.0 s against 3.4 s), but the whole run was still no slower: 816 and 882 s
  with both flags, 934 s with the emitters alone (one run each, 2026-12-07, later).

Tried on the same VM without a gain (2026-12-07, one whole default run each, cold cache): LLVM
level 0 (764 s, four tests fail on changed rounding); the differentiable model's three jitted
programs at level 3 through ``compiler_options`` and the rest at level 1 (802 s; the fits run
1.4-2× faster but the suite's fits are short and compile-bound; one failure, of
``test_blocks_of_any_size_write_the_same_files_and_clipping_is_reported``, which compares FLOAT WAV
files byte for byte and fails whenever the two writes straddle a second, since libsndfile's PEAK
chunk holds the write time);
JAX's persistent cache from each worker's start and in the processes that tests start (817 s: 522
of 4216 compilations hit it, 68 s of compilation saved). Against 783-802 s with these flags in
the same hours. A compile log of one run: 66 % of the workers' test time is tracing, lowering
and compiling (980 of 1487 s), 3762 compilations of small eager operations take 161 s and 456 of
whole programs 509 s.

Also tried there without a gain (2026-12-07, later): ``--xla_llvm_disable_expensive_passes=true``
on top of both flags compiled the differentiable model's fit (4 tracks × 2 s) in 2.53 s against
2.86 s (mean of 3 and 4 fresh processes), but the whole default run took 790 s against 784 s
(its four failures were those of a bug in the working tree's lazy import of pyroomacoustics,
fixed before commit 5487688); three pytest workers
instead of two took 146 s against 119 s for ``test_spectral_subtraction.py`` and
``test_unison.py``; and without jaxtyping's runtime checks (``-o addopts``) the same two files took
122 s against 119 s, so the shape checks cost nothing measurable.

Also tried there (2026-12-07, stop 45; ``test_spectral_subtraction.py``, ``test_unison.py`` and
``test_phase_check.py`` in two workers, 90 tests, an empty compile cache each, one after the other):
these flags 131 s and 136 s; with ``--xla_cpu_multi_thread_eigen=false`` (one Eigen thread per
worker, so the two workers' thread pools do not contend for the two cores) 145 s and 145 s; with
``--xla_cpu_parallel_codegen_split_count=1`` 138 s. A compile log of a whole default run (stop 45,
``jax_log_compiles``): 652 s backend compilation, 187 s lowering and 128 s tracing of the workers'
1459 s; the same program (name and argument shapes) compiled twice in the two workers within one
file cost 0.3 s, so ``--dist loadfile`` would not save compilations that ``worksteal`` repeats.
``JAX_TRACEBACK_IN_LOCATIONS_LIMIT=0`` (no Python tracebacks in the HLO's locations; jax's default
keeps 100 frames) compiled spectral subtraction's ``reduce_sessions`` in 0.92-0.99 s against
1.14-1.18 s in fresh processes, but the same three files took 147 s and 153 s against 142 s.

:data:`DEFAULT_CODEGEN` compiles one program as users do, for the tests that compare bleedjax with
other code at float32 precision; ``tests/test_default_codegen.py`` runs ``bleedjax reduce`` with
XLA's defaults for four methods (two in the heavy run) and compares its files with the suite's.
"""

from __future__ import annotations

import os
import subprocess
import sys

LEGACY_EMITTERS = "--xla_cpu_use_fusion_emitters=false"
LLVM_LEVEL_1 = "--xla_backend_optimization_level=1"
SUITE_CODEGEN = (LEGACY_EMITTERS, LLVM_LEVEL_1)
DEFAULT_CODEGEN = {"xla_cpu_use_fusion_emitters": True, "xla_backend_optimization_level": 3}
"""``compiler_options`` of a jitted function's ``.lower(...).compile(...)``: XLA's default CPU
emitters and LLVM level, whatever the process's ``XLA_FLAGS``."""


def _known(flag: str) -> bool:
    """Whether this jaxlib accepts ``flag`` (XLA aborts the process on a flag it does not know,
    and newer XLA removes the legacy emitters)."""
    probe = [sys.executable, "-c", "import jax; jax.numpy.zeros(1).block_until_ready()"]
    env = os.environ | {"XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(probe, env=env, capture_output=True, check=False, timeout=120).returncode == 0


def suite_flags(devices: int = 8) -> str:
    """``XLA_FLAGS`` of the test processes: ``devices`` CPU devices, and each of
    :data:`SUITE_CODEGEN` that this jaxlib has (one probe when it has all of them: 1.5 s each)."""
    known = SUITE_CODEGEN if _known(" ".join(SUITE_CODEGEN)) else tuple(filter(_known, SUITE_CODEGEN))
    return " ".join([f"--xla_force_host_platform_device_count={devices}", *known])


def with_devices(devices: int) -> str:
    """``XLA_FLAGS`` for a process that a test starts: this process's flags with ``devices`` CPU
    devices, so that a program compiled in both is compiled alike."""
    own = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    return " ".join([f"--xla_force_host_platform_device_count={devices}", *own])


def uses_suite_codegen() -> bool:
    """Whether this process compiles with any of :data:`SUITE_CODEGEN`."""
    return any(flag in SUITE_CODEGEN for flag in os.environ.get("XLA_FLAGS", "").split())


def without_suite_codegen() -> str:
    """This process's ``XLA_FLAGS`` without :data:`SUITE_CODEGEN` (same device count): XLA's
    defaults, as users compile."""
    return " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if f not in SUITE_CODEGEN)
