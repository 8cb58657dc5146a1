"""The ``bleedjax`` command line: a thin layer over :mod:`bleedjax.reduce`, ``simulate_folder``,
``evaluate`` and ``demo``. Bad input ends with one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

EXIT_BAD_INPUT = 2


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
    config = reduce.load_config(args.config) if args.config else method.default_config(args.preset)
    return reduce.apply_overrides(config, args.set)


def _cmd_reduce(args) -> int:
    from bleedjax import reduce

    results = reduce.reduce_folders(
        args.sessions, args.out, method=args.method, config=_method_config(args), pad=args.pad,
        overwrite=args.overwrite, streaming_path=args.streaming,
    )
    for result in results:
        print(f"{result.session.folder} -> {result.out_dir} ({result.session.num_tracks} tracks)")
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


def _cmd_analyze(args) -> int:
    from bleedjax import analyze, sessions

    analyze.check_outputs([args.png, args.json], folder=args.session, overwrite=args.overwrite)
    result = analyze.analyze_session(
        args.session, method=args.method, config=_method_config(args), threshold_db=args.threshold_db,
        pad=args.pad,
    )
    print(analyze.format_report(result))
    if args.json:
        sessions.write_json_atomic(pathlib.Path(args.json), result.to_json())
    if args.png:
        analyze.plot_analysis(args.png, result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bleedjax", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    reduce_parser = commands.add_parser("reduce", help="remove bleed from session folders")
    reduce_parser.add_argument("sessions", nargs="+", help="session folders (one file per microphone)")
    reduce_parser.add_argument("--out", required=True, help="output folder")
    reduce_parser.add_argument("--method", default="spectral-subtraction",
                               help="spectral-subtraction (Seipel & Lerch 2018), kamir (Prätzlich et al. 2015) "
                                    "or differentiable (fitted delay-aware bleed model)")
    reduce_parser.add_argument("--preset", help="a preset of the method, e.g. K1-K5 for kamir")
    reduce_parser.add_argument("--config", help="a configs/*.py file with get_config()")
    reduce_parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                               help="override one config value (repeatable)")
    reduce_parser.add_argument("--pad", action="store_true", help="zero-pad files of unequal length")
    reduce_parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    reduce_parser.add_argument("--streaming", action=argparse.BooleanOptionalAction, default=None,
                               help="force or forbid the bounded-memory path for long recordings "
                                    "(kamir); by default it is used above 2^27 samples")
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
    analyze_parser.add_argument("--pad", action="store_true", help="zero-pad files of unequal length")
    analyze_parser.add_argument("--overwrite", action="store_true", help="replace existing report files")
    analyze_parser.set_defaults(run=_cmd_analyze)

    demo_parser = commands.add_parser("demo", help="simulate, remove and score bleed on bundled audio")
    demo_parser.add_argument("--out", default="demo_out")
    demo_parser.add_argument("--method", default="spectral-subtraction")
    demo_parser.add_argument("--max-crosstalk-db", type=float, default=-12.0)
    demo_parser.add_argument("--seed", type=int, default=0)
    demo_parser.set_defaults(run=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _enable_compilation_cache()
    from bleedjax.sessions import SessionError

    try:
        return args.run(args)
    except (SessionError, ValueError) as error:
        message = " ".join(str(error).split())
        print(f"bleedjax {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
