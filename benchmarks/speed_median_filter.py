"""Speed of the KAM median filters: bleedjax's two methods against ``scipy.ndimage.median_filter``.

For every spectrogram size, footprint and batch below, in one process:

* ``network``: ``jax.vmap(bleedjax.kernels.median_filter)`` with the pruned selection network;
* ``patches``: the same with ``method="patches"`` (windows gathered, then ``jnp.partition``);
* ``scipy``: ``scipy.ndimage.median_filter`` looped over the batch.

JAX is compiled first (compile time reported separately), then every method takes the best of
``--repeats`` runs, JAX with ``block_until_ready``. Every JAX output is checked bitwise against
SciPy's. The "temp" column is the scratch memory XLA allocates for the compiled batch
(``memory_analysis().temp_size_in_bytes``): the patches method materialises the
``(batch, bins, frames, n)`` windows, the network does not.

Sizes are those of KAM/KAMIR (Liutkus et al. 2014 [1], Prätzlich et al. 2015 [2]) on 10 s of
44.1 kHz audio: ``n_fft`` 4096 / hop 1024 (2049 × 431) and 2048 / 512 (1025 × 216), footprints
horizontal 17, vertical 17 and cross 9 × 9, vmapped over 4 and 16 spectrograms (sources ×
channels). Input is power-spectrogram-like (exponentially distributed, float32).

Usage:
    .venv/bin/python benchmarks/speed_median_filter.py [--batches 4 16] [--repeats 3]
        [--methods network patches scipy] [--threads N] [--json PATH]

References:
    [1] A. Liutkus, D. Fitzgerald, Z. Rafii, B. Pardo, L. Daudet, "Kernel additive models for
        source separation", IEEE Trans. Signal Processing 62(16), 2014.
    [2] T. Prätzlich, R. Bittner, A. Liutkus, M. Müller, "Kernel additive modeling for
        interference reduction in multi-channel music recordings", ICASSP 2015.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common

SHAPES = ((2049, 431), (1025, 216))
FOOTPRINTS = ("horizontal 17", "vertical 17", "cross 9x9")
METHODS = ("network", "patches", "scipy")


def footprint(name: str):
    from bleedjax import kernels

    return {
        "horizontal 17": kernels.horizontal(17),
        "vertical 17": kernels.vertical(17),
        "cross 9x9": kernels.cross(9, 9),
    }[name]


def measure(x, name: str, methods, repeats: int) -> dict:
    """Times the methods on one ``(batch, bins, frames)`` stack; checks JAX against SciPy."""
    import jax
    import numpy as np
    import scipy.ndimage

    from bleedjax import kernels

    fp = footprint(name)
    result = {}
    expected = np.stack([scipy.ndimage.median_filter(s, footprint=fp) for s in x])
    if "scipy" in methods:
        seconds, _ = _common.best_of(
            lambda: [scipy.ndimage.median_filter(s, footprint=fp) for s in x], repeats
        )
        result["scipy"] = {"seconds": seconds}
    device_x = jax.device_put(x)
    for method in methods:
        if method == "scipy":
            continue
        batched = jax.jit(jax.vmap(lambda s, m=method: kernels.median_filter(s, fp, method=m)))
        start = time.perf_counter()
        compiled = batched.lower(device_x).compile()
        compile_s = time.perf_counter() - start
        output = np.asarray(jax.block_until_ready(compiled(device_x)))
        if not np.array_equal(output.view(np.uint32), expected.view(np.uint32)):
            raise AssertionError(f"{method} differs from scipy.ndimage.median_filter for {name}")
        del output
        seconds, _ = _common.best_of(lambda c=compiled: jax.block_until_ready(c(device_x)), repeats)
        memory = compiled.memory_analysis()
        result[method] = {
            "seconds": seconds,
            "compile_s": compile_s,
            "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
        }
    return result


def table(results: list[dict], methods) -> str:
    jax_methods = [m for m in methods if m != "scipy"]
    headers = ["bins × frames", "footprint", "batch"]
    headers += [f"{m} s" for m in methods]
    if "scipy" in methods:
        headers += [f"scipy / {m}" for m in jax_methods]
    headers += [f"{m} compile" for m in jax_methods] + [f"{m} temp" for m in jax_methods]
    rows = []
    for r in results:
        timings = r["timings"]
        row = [f"{r['bins']} × {r['frames']}", r["footprint"], r["batch"]]
        row += [f"{timings[m]['seconds']:.3f}" for m in methods]
        if "scipy" in methods:
            row += [
                _common.format_ratio(timings["scipy"]["seconds"] / timings[m]["seconds"])
                for m in jax_methods
            ]
        row += [_common.format_seconds(timings[m]["compile_s"]) for m in jax_methods]
        row += [_common.format_bytes(timings[m]["temp_bytes"]) for m in jax_methods]
        rows.append(row)
    return _common.format_table(
        headers, rows, title="Median filter: best of N wall seconds (scipy / JAX = speed-up)"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--threads", type=int, default=None, help="limit to this many CPUs")
    parser.add_argument(
        "--json", type=pathlib.Path, default=None, help="also write the results here"
    )
    args = parser.parse_args(argv)
    if args.threads:
        _common.limit_cpus(args.threads)

    import jax
    import numpy as np

    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {len(jax.devices())} device(s)",
        file=sys.stderr,
    )
    rng = np.random.default_rng(0)
    results = []
    for bins, frames in SHAPES:
        for batch in args.batches:
            x = rng.exponential(size=(batch, bins, frames)).astype(np.float32)
            for name in FOOTPRINTS:
                print(f"{bins} × {frames}, {name}, batch {batch} ...", file=sys.stderr, flush=True)
                timings = measure(x, name, args.methods, args.repeats)
                results.append(
                    {
                        "bins": bins,
                        "frames": frames,
                        "footprint": name,
                        "batch": batch,
                        "timings": timings,
                    }
                )
    print(table(results, args.methods))
    if args.json:
        _common.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
