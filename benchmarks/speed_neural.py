"""Speed of the neural models next to KAMIR on the paper's test condition, in one run, and
training throughput on CPU.

Rajesh R & Rajan (WASPAA 2023 [1]) clean 100 sessions of 4 tracks × 10 s at 22.05 kHz in 2.19 s
with the t-UNet (GPU), 2.4 s with the CAE and 660.4 s with KAMIR. Here, on the same sessions
(``speed_kamir.make_sessions``: 4 of the bundled stems, random 10 s excerpts, Seipel linear bleed
with free-field delays):

* t-UNet: :func:`bleedjax.methods.neural.reduce_tunet` (Λ̂ on the model's blocks, then
  ``pinv(Λ̂) X``) on chunks of ``--batch-size`` sessions;
* CAE (``--cae``): :func:`bleedjax.methods.neural.cae_clean`, every track one at a time;
* KAMIR (preset K4, n_fft 2048 / hop 512): ``kamir.reduce_sessions`` on the same chunks.

Each is called once first (that call, compilation plus one batch's run, reported separately), then the best of ``--repeats`` passes
over all sessions is reported, with the ratio to KAMIR. Inference time does not depend on the
weights, so without ``--tunet``/``--cae-checkpoint`` freshly initialised models of the configs'
architectures are timed (the bundled t-UNet's when it exists).

Training (``--train CONFIG ...``): steps/s and examples/s of ``bleedjax.train``'s jitted train
step on one fixed synthetic batch (``train.measure_step_time``), on all local devices.

    .venv/bin/python benchmarks/speed_neural.py [--sessions 100] [--seconds 10] [--batch-size 10]
        [--cae] [--train configs/tunet.py:bundled configs/cae.py:runlocal] [--json out.json]

References:
    [1] Rajesh R, P. Rajan, "Neural networks for interference reduction in multi-track
        recordings", IEEE WASPAA 2023.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common
import speed_kamir

PAPER_SECONDS = {"t-UNet": 2.19, "CAE": 2.4, "KAMIR K4": 660.4}


def fresh_model(name: str, checkpoint: str | None):
    """``(config, graphdef, state, training config)`` of a checkpoint, the bundled model, or a
    fresh model of ``configs/<name>.py`` (paper architecture)."""
    import jax
    from bleedjax.configs import cae, tunet
    from flax import nnx

    from bleedjax import models
    from bleedjax.methods import neural

    bundled = models.BUNDLED.get(name)
    if checkpoint or (bundled is not None and bundled.is_dir() and any(bundled.iterdir())):
        config = neural.with_checkpoint(name, neural.default_config(name), checkpoint)
        return (config, *neural.load(config, name), "trained" if checkpoint else "bundled")
    training = (tunet if name == "tunet" else cae).get_config()
    training.data.sample_rate = speed_kamir.SAMPLE_RATE
    model = nnx.jit(lambda rngs: models.build_model(training.model, rngs=rngs))(nnx.Rngs(jax.random.key(0)))
    return (neural.default_config(name), *nnx.split(model), training, "untrained (paper architecture)")


def time_method(run, audio, chunks, repeats):
    import jax

    start = time.perf_counter()
    for chunk in {c.stop - c.start: c for c in chunks}.values():
        jax.block_until_ready(run(audio[chunk]))
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for chunk in chunks:
            jax.block_until_ready(run(audio[chunk]))
        times.append(time.perf_counter() - start)
    return compile_s, min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tunet", help="t-UNet checkpoint (default: bundled, else untrained)")
    parser.add_argument("--cae", action="store_true", help="time the CAE too (slow on CPU: 39 M parameters)")
    parser.add_argument("--cae-checkpoint")
    parser.add_argument("--no-kamir", action="store_true")
    parser.add_argument("--train", nargs="*", default=[], metavar="CONFIG",
                        help="configs whose train step to time, e.g. configs/tunet.py:bundled")
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from bleedjax.methods import kamir, neural

    rate = speed_kamir.SAMPLE_RATE
    samples = int(args.seconds * rate)
    stems = speed_kamir.load_stems()
    audio = speed_kamir.make_sessions(stems, sessions=args.sessions, tracks=4, samples=samples, seed=0)
    lengths = np.full(args.sessions, samples)
    chunks = [slice(s, min(s + args.batch_size, args.sessions)) for s in range(0, args.sessions, args.batch_size)]
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}); {args.sessions} sessions × 4 tracks × {args.seconds:g} s at {rate} Hz, "
          f"chunks of {args.batch_size}\n")
    results = {}

    config, graphdef, state, training, origin = fresh_model("tunet", args.tunet)
    block = training.data.block_seconds

    def tunet(x):
        return neural.reduce_tunet(graphdef, state, training, x, lengths[: len(x)], float(rate), config)[0]

    results["t-UNet"] = (*time_method(tunet, audio, chunks, args.repeats), f"{origin}, blocks of {block:g} s")

    if args.cae:
        config_c, graphdef_c, state_c, training_c, origin_c = fresh_model("cae", args.cae_checkpoint)
        model_c = training_c.model

        def cae(x):
            return neural.cae_clean(graphdef_c, state_c, jnp.asarray(x), jnp.asarray(lengths[: len(x)]),
                                    n_fft=model_c.n_fft, hop=model_c.hop, chunk=int(config_c.chunk))

        results["CAE"] = (*time_method(cae, audio, chunks, args.repeats), origin_c)

    if not args.no_kamir:
        settings = kamir.Settings(**kamir.PRESETS["K4"], n_fft=speed_kamir.N_FFT, hop=speed_kamir.HOP)
        phi = jnp.asarray(kamir.identity_phi(4))

        def kamir_run(x):
            return kamir.reduce_sessions(jnp.asarray(x), phi, settings).cleaned

        results["KAMIR K4"] = (*time_method(kamir_run, audio, chunks, args.repeats), "n_fft 2048, hop 512")

    kamir_s = results.get("KAMIR K4", (None, None))[1]
    rows = []
    for name, (compile_s, best_s, note) in results.items():
        rows.append([
            name, _common.format_seconds(compile_s), _common.format_seconds(best_s),
            _common.format_ratio(kamir_s / best_s) if kamir_s else "–",
            _common.format_seconds(best_s * 100 / args.sessions),
            _common.format_seconds(PAPER_SECONDS[name]), note,
        ])
    print(_common.format_table(
        ["method", "first call (compile + one batch)", f"{args.sessions} sessions", "× faster than KAMIR", "per 100", "paper (100)", "model"],
        rows, title="Inference",
    ))

    training_rows = []
    if args.train:
        from bleedjax import train

        for spec in args.train:
            measured = train.measure_step_time(train.load_config(spec), steps=args.train_steps)
            results[f"train {spec}"] = measured
            training_rows.append([
                spec, _common.format_seconds(measured["compile_seconds"]),
                _common.format_seconds(measured["step_seconds"]), f"{measured['steps_per_second']:.2f}",
                f"{measured['examples_per_second']:.1f}", int(measured["devices"]),
            ])
        print()
        print(_common.format_table(["config", "compile", "step", "steps/s", "examples/s", "devices"], training_rows,
                                   title="Training (one fixed synthetic batch)"))
    if args.json:
        _common.write_json(args.json, {"inference": {k: v for k, v in results.items() if not k.startswith("train")},
                                       "training": {k: v for k, v in results.items() if k.startswith("train")},
                                       "sessions": args.sessions, "seconds": args.seconds})
    return 0


if __name__ == "__main__":
    sys.exit(main())
