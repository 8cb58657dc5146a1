"""Small helpers shared by the benchmarks: CPU limits, isolated worker processes with their peak
memory, best-of-N timing and plain-text tables.

A benchmark that wants one number per configuration runs each configuration in a fresh Python
process (:func:`run_worker`), so that one configuration's compiled code, caches and freed-but-kept
memory do not leak into the next one's time or peak memory. The worker reports its own peak
resident set size (:func:`peak_rss_bytes`, Linux ``VmHWM``).
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def limit_cpus(count: int) -> list[int]:
    """Restricts this process and its future children to ``count`` CPUs (affinity and BLAS threads).

    Call it before importing NumPy or JAX. JAX/XLA sizes its CPU thread pool from the affinity
    mask, OpenBLAS/MKL/OpenMP from the environment variables set here.

    Returns:
        the CPUs kept.
    """
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    kept = available[: max(1, count)]
    if kept:
        os.sched_setaffinity(0, kept)
    for name in THREAD_VARIABLES:
        os.environ[name] = str(len(kept) or count)
    return kept


def peak_rss_bytes() -> int:
    """Peak resident set size of this process: ``VmHWM`` on Linux, else ``ru_maxrss``.

    ``VmHWM`` belongs to the process's current address space, so unlike ``ru_maxrss`` of a child
    it does not include the parent's memory at the time of the fork.
    """
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def current_rss_bytes() -> int:
    """Resident set size of this process now (``VmRSS``), 0 where unknown."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def best_of(function: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    """Calls ``function`` ``repeats`` times; it must block until its work is done.

    Returns:
        the fastest wall time in seconds and all of them.
    """
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times), times


def run_worker(
    script: str | os.PathLike,
    task: dict,
    *,
    env: dict | None = None,
    timeout: float | None = None,
) -> dict:
    """Runs ``python SCRIPT --worker TASK_JSON --result FILE`` in a fresh process.

    The worker is expected to write a JSON object to ``FILE`` (see :func:`worker_main`). Its
    stderr goes to ours, so progress stays visible.

    Returns:
        the worker's JSON object, plus ``process_wall_s`` (start to exit, imports included).

    Raises:
        RuntimeError: the worker failed or wrote nothing.
    """
    with tempfile.TemporaryDirectory(prefix="bench_worker_") as folder:
        result_path = pathlib.Path(folder) / "result.json"
        command = [
            sys.executable,
            str(script),
            "--worker",
            json.dumps(task),
            "--result",
            str(result_path),
        ]
        start = time.perf_counter()
        completed = subprocess.run(
            command,
            env={**os.environ, **(env or {})},
            stdout=sys.stderr,
            timeout=timeout,
            check=False,
        )
        wall = time.perf_counter() - start
        if completed.returncode != 0 or not result_path.exists():
            raise RuntimeError(f"worker {task} failed with exit status {completed.returncode}")
        result = json.loads(result_path.read_text())
    result["process_wall_s"] = wall
    return result


# Started by a small Python process, so that the command's ru_maxrss is its own: a child started
# with vfork (Python 3.11's subprocess) inherits the starting process's peak at exec, which from
# a benchmark that has run JAX is 0.3-0.4 GiB; from this launcher it is a few tens of MB.
_LAUNCHER = """import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
print(f"ru_maxrss_kib {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(command: Sequence[str], env: dict | None = None) -> tuple[float, int]:
    """Runs ``command`` in a fresh process; its wall time and peak resident set size (bytes,
    ``ru_maxrss`` of the command, started from a small launcher: :data:`_LAUNCHER`). Raises with
    its stderr when it fails."""
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], env=env, capture_output=True,
                               text=True, check=False)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr)
    peak = [line for line in completed.stdout.splitlines() if line.startswith("ru_maxrss_kib ")][-1]
    return elapsed, int(peak.split()[1]) * 1024


def run_reduce_measured(
    session: pathlib.Path, out: pathlib.Path, arguments: Sequence[str], *, streamed: bool, cache: str
) -> tuple[float, int]:
    """``bleedjax reduce SESSION --out OUT ARGUMENTS --[no-]streaming`` of the repository's
    ``.venv`` through :func:`run_measured`, with ``BLEEDJAX_CACHE_DIR=cache``."""
    command = [str(pathlib.Path(__file__).resolve().parents[1] / ".venv" / "bin" / "bleedjax"), "reduce",
               str(session), "--out", str(out), *arguments, "--streaming" if streamed else "--no-streaming"]
    return run_measured(command, dict(os.environ, BLEEDJAX_CACHE_DIR=cache))


def worker_main(
    task_json: str, result_path: str, handlers: dict[str, Callable[[dict], dict]]
) -> None:
    """The worker side of :func:`run_worker`: ``handlers[task["kind"]](task)``, then the peak RSS."""
    task = json.loads(task_json)
    result = handlers[task["kind"]](task)
    result["peak_rss_bytes"] = peak_rss_bytes()
    write_json(result_path, result)


def write_json(path: str | os.PathLike, payload) -> None:
    """Writes ``payload`` as indented JSON, creating parent folders."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def format_seconds(seconds: float | None) -> str:
    """``0.0123`` → ``"12.3 ms"``, ``12.3`` → ``"12.30 s"``, ``None`` → ``"–"``."""
    if seconds is None:
        return "–"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 100.0:
        return f"{seconds:.2f} s"
    return f"{seconds:.0f} s"


def format_bytes(count: float | None) -> str:
    """Bytes in binary units: ``"1.25 GiB"``; ``None`` → ``"–"``."""
    if count is None:
        return "–"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count:.0f} B"


def format_ratio(value: float | None, digits: int = 1) -> str:
    """``12.345`` → ``"12.3×"``; ``None`` → ``"–"``."""
    return "–" if value is None else f"{value:.{digits}f}×"


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], title: str | None = None
) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[k]) for row in cells) for k in range(len(headers))]

    def line(row):
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return "  ".join(parts).rstrip()

    out = [title, "=" * len(title)] if title else []
    out += [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells[1:]]
    return "\n".join(out)


class Timing(NamedTuple):
    """One timed call: wall-clock seconds and the CPU seconds (user + system) of this process."""

    wall: float
    cpu: float


def process_cpu_seconds() -> float:
    """User + system CPU seconds used by this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def interleaved_times(
    functions: dict[str, Callable[[], object]], repeats: int
) -> dict[str, list[Timing]]:
    """Times each function ``repeats`` times in round-robin order (a, b, a, b, ...).

    Alternating makes ratios between the functions robust to load that comes and goes on a
    shared machine; the CPU time is a second figure that load inflates less than wall time.
    Each function must block until its work is done.
    """
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            cpu = process_cpu_seconds()
            start = time.perf_counter()
            function()
            times[name].append(Timing(time.perf_counter() - start, process_cpu_seconds() - cpu))
    return times


_OPENBLAS_SETTERS = (
    "openblas_set_num_threads",
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads_64_",
    "openblas_set_num_threads64_",
)


def set_blas_threads(count: int) -> int:
    """Sets the thread count of every OpenBLAS loaded in this process (NumPy's, SciPy's).

    A small stand-in for ``threadpoolctl``: it finds the loaded OpenBLAS libraries in
    ``/proc/self/maps`` and calls their ``*set_num_threads*``. Linux only.

    Returns:
        how many libraries were set (0 where none was found).
    """
    import ctypes

    try:
        maps = pathlib.Path("/proc/self/maps").read_text()
    except OSError:
        return 0
    paths = {
        line.split()[-1]
        for line in maps.splitlines()
        if "openblas" in line.lower() and ".so" in line
    }
    done = 0
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _OPENBLAS_SETTERS:
            setter = getattr(library, name, None)
            if setter is not None:
                setter(ctypes.c_int(count))
                done += 1
                break
    return done
