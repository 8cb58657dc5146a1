"""The ``bleedjax`` command line: a thin layer over :mod:`bleedjax.reduce`, ``simulate_folder``,
``evaluate`` and ``demo``. Bad input ends with one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import signal
import sys
import threading
import time

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that ``reduce`` removes its staged outputs (as on
    Ctrl-C) before the process ends."""


def _raise_terminated(signum, frame):
    raise Terminated


SIGNAL_OF = {KeyboardInterrupt: signal.SIGINT, Terminated: signal.SIGTERM}


def _signal_again(previous_hook):
    """A ``sys.unraisablehook`` that sends this process the signal of a :class:`Terminated` or
    ``KeyboardInterrupt`` that Python could not raise, and passes anything else to ``previous_hook``.

    A signal's handler runs wherever the main thread is, also inside a garbage-collector callback
    (JAX registers one), where Python prints the exception as ignored and goes on: a SIGTERM there
    once let ``reduce`` finish and commit its outputs with status 0. Sent again 10 ms later from
    another thread (sent at once, its handler ran inside the hook, where it is ignored too), the
    signal is handled after the callback; should it land in one again, this hook sends it again."""

    def send_later(signum):
        time.sleep(0.01)
        os.kill(os.getpid(), signum)

    def hook(unraisable):
        for exception, signum in SIGNAL_OF.items():
            if isinstance(unraisable.exc_value, exception):
                threading.Thread(target=send_later, args=(signum,), daemon=True).start()
                return
        previous_hook(unraisable)

    return hook


@contextlib.contextmanager
def _terminate_as_exception():
    """SIGTERM raises :class:`Terminated` inside the block, and a SIGTERM or Ctrl-C that arrives in
    a garbage-collector callback is raised after it (:func:`_signal_again`); main thread only,
    elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous, previous_hook = signal.signal(signal.SIGTERM, _raise_terminated), sys.unraisablehook
    sys.unraisablehook = _signal_again(previous_hook)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook


def _enable_compilation_cache() -> None:
    """JAX's persistent compilation cache, so a second run does not compile again."""
    import jax

    cache = os.environ.get("BLEEDJAX_CACHE_DIR") or str(
        pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "bleedjax" / "jax"
    )
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _method_config(args):
    from bleedjax import methods, reduce

    if args.config and args.preset:
        raise ValueError("give either --config or --preset, not both")
    method = methods.get_method(args.method)
    if args.preset and args.preset not in method.presets:
        choices = ", ".join(method.presets) or "none"
        raise ValueError(f"--preset {args.preset}: {args.method} presets are {choices}")
    config = method.default_config(args.preset)
    if args.config:
        loaded = reduce.load_config(args.config)
        unknown = sorted(set(loaded.keys()) - set(config.keys()))
        if unknown:
            raise ValueError(f"{args.config}: {', '.join(unknown)} are not settings of --method {args.method} "
                             "(a config of another method?)")
        config = loaded
    config = reduce.apply_overrides(config, args.set)
    if getattr(args, "dictionary", None):
        if "dictionary" not in config:
            raise ValueError(f"--dictionary is for --method kam-nmf, not {args.method}")
        config.dictionary = args.dictionary
    return config


def _cmd_reduce(args) -> int:
    from bleedjax import reduce

    config = _method_config(args)
    if args.checkpoint is not None:
        from bleedjax.methods import neural

        config = neural.with_checkpoint(args.method, config, args.checkpoint)
    results = reduce.reduce_folders(
        args.sessions, args.out, method=args.method, config=config, pad=args.pad,
        overwrite=args.overwrite, streaming_path=args.streaming, keep_audio=False, write_removed=args.removed,
        keep=args.keep,
    )
    for result in results:
        kept = f"; kept as recorded: {', '.join(result.kept)}" if result.kept else ""
        print(f"{result.session.folder} -> {result.out_dir} ({result.session.num_tracks} tracks{kept})")
        if result.removed_levels is not None:
            levels = ", ".join(f"{name} {level:.1f} dB" for name, level in
                               zip(result.session.track_names, result.removed_levels.level_db))
            print(f"  removed (re the input): {levels}")
        for text in reduce.warnings(result, args.method, config):
            print(f"warning: {result.session.folder}: {text}", file=sys.stderr)
    return 0


def _cmd_simulate(args) -> int:
    from bleedjax import simulate_folder

    truth = simulate_folder.simulate_folder(
        args.stems, args.out, bleed=args.bleed, max_crosstalk_db=args.max_crosstalk_db,
        seed=args.seed, pad=args.pad, overwrite=args.overwrite,
    )
    print(f"{args.out}: {len(truth['tracks'])} tracks, {args.bleed} bleed (seed {args.seed})")
    return 0


def _cmd_evaluate(args) -> int:
    from bleedjax import evaluate, sessions

    if args.json:
        sessions.check_writable([pathlib.Path(args.json)])
    if args.json and not args.overwrite:
        sessions.refuse_overwrite([pathlib.Path(args.json)])
    result = evaluate.evaluate_folders(args.references, args.estimates, framewise=args.framewise)
    columns = list(next(iter(result["tracks"].values())).keys())
    rows = dict(result["tracks"]) | {"mean": result["mean"]}
    print(evaluate.format_table(rows, columns))
    if args.json:
        sessions.write_json_atomic(pathlib.Path(args.json), result)
    return 0


def _cmd_demo(args) -> int:
    from bleedjax import demo

    demo.run_demo(args.out, method=args.method, max_crosstalk_db=args.max_crosstalk_db, seed=args.seed)
    return 0


def _cmd_train(args) -> int:
    from bleedjax import train

    config = train.apply_overrides(train.load_config(args.config), args.set)
    if args.export:
        from bleedjax import checkpointing

        checkpointing.check_export_target(args.workdir, args.export, overwrite=args.overwrite)
    result = train.train_and_evaluate(config, args.workdir)
    for split in ("train", "eval"):
        if result[split]:
            values = ", ".join(f"{k} {v:.4g}" for k, v in sorted(result[split].items()))
            print(f"{args.workdir}: {split}: {values}")
    if args.export:
        from bleedjax import checkpointing

        written = checkpointing.export_model(args.workdir, args.export, overwrite=args.overwrite)
        if written is not None:
            print(f"{args.workdir} -> {written} (model and config only)")
    return 0


def _data_config(args):
    from bleedjax import reduce
    from bleedjax.configs import data as data_configs

    config = reduce.load_config(args.config) if args.config else data_configs.get_config()
    for key in ("builder", "manual_dir", "data_dir", "sample_rate", "channels", "block_seconds",
                "split", "augmentation"):
        value = getattr(args, key, None)
        if value is not None:
            config[key] = value
    return reduce.apply_overrides(config, args.set)


def _cmd_data_prepare(args) -> int:
    from bleedjax.data import datasets

    config = _data_config(args)
    if args.rir_bank:
        config.augmentation = "room"
    data_dir = datasets.prepare_from_config(config, overwrite=args.overwrite)
    config.data_dir = str(data_dir)
    print(f"{config.builder} prepared in {datasets.builder_from_config(config).data_dir}")
    return 0


def _cmd_data_inspect(args) -> int:
    from bleedjax.data import inspection

    config = _data_config(args)
    print(inspection.format_summary(inspection.summary(config)))
    if args.out:
        path = inspection.plot_example(config, args.out, seed=args.seed)
        print(f"one {config.split} example: {path}")
    return 0


def _add_data_parsers(commands) -> None:
    data_parser = commands.add_parser("data", help="prepare and inspect training data (TFDS + Grain)")
    data_commands = data_parser.add_subparsers(dest="data_command", required=True)
    for name, run, helptext in (
        ("prepare", _cmd_data_prepare, "write a TFDS (ArrayRecord) dataset of stem blocks"),
        ("inspect", _cmd_data_inspect, "counts, durations and a PNG of one augmented example"),
    ):
        sub = data_commands.add_parser(name, help=helptext)
        sub.add_argument("--builder", choices=("multitrack_stems", "musdb18hq"))
        sub.add_argument("--data-dir", dest="data_dir", help="TFDS data folder (default ~/tensorflow_datasets)")
        sub.add_argument("--sample-rate", dest="sample_rate", type=int)
        sub.add_argument("--channels", type=int, choices=(1, 2), help="stored channels per stem")
        sub.add_argument("--block-seconds", dest="block_seconds", type=float)
        sub.add_argument("--config", help="a configs/data.py-style file with get_config()")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override one data config value (repeatable)")
        sub.set_defaults(run=run)
        if name == "prepare":
            sub.add_argument("--manual-dir", dest="manual_dir", help="the folder of stems")
            sub.add_argument("--rir-bank", action="store_true",
                             help="also make the room impulse-response bank (room augmentation)")
            sub.add_argument("--overwrite", action="store_true",
                             help="replace a dataset with these settings prepared from another folder")
        else:
            sub.add_argument("--split")
            sub.add_argument("--augmentation", choices=("linear-paper", "linear-seipel", "room"))
            sub.add_argument("--out", default="data_inspect.png", help="PNG of one example ('' for none)")
            sub.add_argument("--seed", type=int, default=0)


def _cmd_learn_dictionary(args) -> int:
    from bleedjax import dictionary

    learned = dictionary.learn_from_files(
        args.noise_files, components=args.components, n_fft=args.n_fft, hop=args.hop,
        iterations=args.iterations, seed=args.seed,
    )
    dictionary.save(learned, args.out, overwrite=args.overwrite)
    print(f"{args.out}: {learned.components} components, {learned.bins} bins, {learned.sample_rate} Hz")
    return 0


def _cmd_simulate_interference(args) -> int:
    from bleedjax import simulate_interference

    truth = simulate_interference.simulate_interference(
        args.music_dir, args.noise_files, args.out, snr_db=args.snr, events=args.events,
        event_seconds=args.event_seconds, seed=args.seed, overwrite=args.overwrite,
    )
    print(f"{args.out}: {len(truth['tracks'])} tracks, {args.events} events each at {args.snr} dB (seed {args.seed})")
    return 0


def _cmd_analyze(args) -> int:
    from bleedjax import analyze, sessions

    analyze.check_outputs([args.png, args.json], folder=args.session, overwrite=args.overwrite)
    result = analyze.analyze_session(
        args.session, method=args.method, config=_method_config(args), threshold_db=args.threshold_db,
        pad=args.pad, max_seconds=args.max_seconds, leave_out=args.keep,
    )
    print(analyze.format_report(result))
    if args.json:
        sessions.write_json_atomic(pathlib.Path(args.json), result.to_json())
    if args.png:
        analyze.plot_analysis(args.png, result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bleedjax",
        description="Remove microphone bleed (crosstalk) from multitrack recordings, and measure it.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    reduce_parser = commands.add_parser("reduce", help="remove bleed from session folders")
    reduce_parser.add_argument("sessions", nargs="+", help="session folders (one file per microphone)")
    reduce_parser.add_argument("--out", required=True, help="output folder")
    reduce_parser.add_argument("--method", default="spectral-subtraction",
                               help="spectral-subtraction (Seipel & Lerch 2018), kamir (Prätzlich et al. "
                                    "2015), kam-nmf (Fano Yela et al. 2017), differentiable, tunet or cae "
                                    "(Rajesh R & Rajan 2023)")
    reduce_parser.add_argument("--preset", help="a preset of the method, e.g. K1-K5 for kamir")
    reduce_parser.add_argument("--config", help="a configs/*.py file with get_config()")
    reduce_parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                               help="override one config value (repeatable)")
    reduce_parser.add_argument("--pad", action="store_true", help="zero-pad files of unequal length")
    reduce_parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    reduce_parser.add_argument("--keep", action="append", default=[], metavar="FILE",
                               help="a room, overhead or audience microphone's file: copied unchanged, and "
                                    "not used to clean the others (repeatable)")
    reduce_parser.add_argument("--removed", action="store_true",
                               help="also write what was taken out of each track (input - cleaned) to "
                                    "removed/ beside the cleaned files, to listen for damage")
    reduce_parser.add_argument("--streaming", action=argparse.BooleanOptionalAction, default=None,
                               help="force or forbid the bounded-memory path for long recordings (every "
                                    "method); by default it is used above 2^27 samples, tracks x length (kam-nmf: "
                                    "2^23; differentiable, tunet, cae: 2^25)")
    reduce_parser.add_argument("--dictionary", help="interference dictionary .npz (kam-nmf)")
    reduce_parser.add_argument("--checkpoint", metavar="DIR",
                               help="tunet/cae: a model trained by `bleedjax train` (default: the bundled one)")
    reduce_parser.set_defaults(run=_cmd_reduce)

    simulate_parser = commands.add_parser("simulate", help="simulate bleed on a folder of stems")
    simulate_parser.add_argument("stems", help="folder of clean stems")
    simulate_parser.add_argument("--out", required=True)
    simulate_parser.add_argument("--bleed", choices=("linear", "room"), default="linear")
    simulate_parser.add_argument("--max-crosstalk-db", type=float, default=-12.0)
    simulate_parser.add_argument("--seed", type=int, default=0)
    simulate_parser.add_argument("--pad", action="store_true")
    simulate_parser.add_argument("--overwrite", action="store_true")
    simulate_parser.set_defaults(run=_cmd_simulate)

    evaluate_parser = commands.add_parser("evaluate", help="BSS Eval of estimates against references")
    evaluate_parser.add_argument("references")
    evaluate_parser.add_argument("estimates")
    evaluate_parser.add_argument("--json", help="write the scores as JSON")
    evaluate_parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    evaluate_parser.add_argument("--framewise", action="store_true",
                                 help="museval v4 framewise images (1 s windows), median per track")
    evaluate_parser.set_defaults(run=_cmd_evaluate)

    analyze_parser = commands.add_parser("analyze", help="estimate bleed level and delay between every pair of tracks")
    analyze_parser.add_argument("session", help="a session folder")
    analyze_parser.add_argument("--method", default="differentiable",
                                help="differentiable (levels and delays), spectral-subtraction or kamir (levels)")
    analyze_parser.add_argument("--preset", help="a preset of the method")
    analyze_parser.add_argument("--config", help="a configs/*.py file with get_config()")
    analyze_parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    analyze_parser.add_argument("--png", help="write a heatmap of the bleed levels")
    analyze_parser.add_argument("--json", help="write the analysis as JSON")
    analyze_parser.add_argument("--threshold-db", type=float, default=-20.0,
                                help="flag tracks whose bleed score (bleed / track energy) exceeds this")
    analyze_parser.add_argument("--max-seconds", type=float, default=60.0,
                                help="fit on at most this many seconds: a longer session is analysed on "
                                     "the excerpt where every track plays most (default 60; 0: the whole session)")
    analyze_parser.add_argument("--pad", action="store_true", help="zero-pad files of unequal length")
    analyze_parser.add_argument("--keep", action="append", default=[], metavar="FILE",
                                help="leave a room, overhead or audience microphone's file out (repeatable)")
    analyze_parser.add_argument("--overwrite", action="store_true", help="replace existing report files")
    analyze_parser.set_defaults(run=_cmd_analyze)

    demo_parser = commands.add_parser("demo", help="simulate, remove and score bleed on bundled audio")
    demo_parser.add_argument("--out", default="demo_out")
    demo_parser.add_argument("--method", default="spectral-subtraction")
    demo_parser.add_argument("--max-crosstalk-db", type=float, default=-12.0)
    demo_parser.add_argument("--seed", type=int, default=0)
    demo_parser.set_defaults(run=_cmd_demo)

    train_parser = commands.add_parser("train", help="train a neural bleed model (t-UNet, CAE)")
    train_parser.add_argument("--config", required=True,
                              help="a config file, optionally with its argument: configs/tunet.py:runlocal")
    train_parser.add_argument("--workdir", required=True,
                              help="checkpoints, metrics.jsonl and TensorBoard files (local or gs://); "
                                   "an existing workdir is resumed")
    train_parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                              help="override one config value, e.g. data.manual_dir=stems (repeatable)")
    train_parser.add_argument("--export", metavar="DIR",
                              help="afterwards, write the model and config alone to DIR (for "
                                   "reduce --checkpoint DIR, or bleedjax/assets/tunet)")
    train_parser.add_argument("--overwrite", action="store_true", help="replace an existing --export DIR")
    train_parser.set_defaults(run=_cmd_train)
    _add_data_parsers(commands)

    learn_parser = commands.add_parser("learn-dictionary", help="learn an NMF dictionary of an interference")
    learn_parser.add_argument("noise_files", nargs="+", help="example recordings of the interference")
    learn_parser.add_argument("--out", required=True, help="the dictionary .npz to write")
    learn_parser.add_argument("--components", type=int, default=32)
    learn_parser.add_argument("--n-fft", type=int, default=2048)
    learn_parser.add_argument("--hop", type=int, default=512)
    learn_parser.add_argument("--iterations", type=int, default=200)
    learn_parser.add_argument("--seed", type=int, default=0)
    learn_parser.add_argument("--overwrite", action="store_true")
    learn_parser.set_defaults(run=_cmd_learn_dictionary)

    interfere_parser = commands.add_parser("simulate-interference",
                                           help="add coughs, knocks, ... to clean music at random times")
    interfere_parser.add_argument("music_dir", help="folder of clean music files")
    interfere_parser.add_argument("noise_files", nargs="+", help="interference recordings")
    interfere_parser.add_argument("--out", required=True)
    interfere_parser.add_argument("--snr", type=float, default=0.0, help="music-to-interference ratio (dB)")
    interfere_parser.add_argument("--events", type=int, default=3, help="events per track")
    interfere_parser.add_argument("--event-seconds", type=float, default=1.0)
    interfere_parser.add_argument("--seed", type=int, default=0)
    interfere_parser.add_argument("--overwrite", action="store_true")
    interfere_parser.set_defaults(run=_cmd_simulate_interference)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _enable_compilation_cache()
    from bleedjax.sessions import SessionError

    try:
        if args.command != "reduce":
            return args.run(args)
        with _terminate_as_exception():
            return args.run(args)
    except KeyboardInterrupt:
        print(f"bleedjax {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"bleedjax {args.command}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except (SessionError, ValueError) as error:
        message = " ".join(str(error).split())
        print(f"bleedjax {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:
        # An output path that is a file where a folder is needed, or the reverse, and the like.
        where = error.filename2 or error.filename
        message = f"{where}: {error.strerror}" if where and error.strerror else " ".join(str(error).split())
        print(f"bleedjax {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
