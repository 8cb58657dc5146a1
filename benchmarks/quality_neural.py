"""Quality of the t-UNet and the CAE next to KAMIR and spectral subtraction on the same inputs.

Pieces and conditions are those of ``benchmarks/_quality.py`` (the bundled chorale, a string
quartet, real PHENICX anechoic stems; Seipel's linear bleed at -6/-12/-18 dB with free-field
delays, and a shoebox room), cut to the first ``J`` tracks of the t-UNet (its number of tracks; with ``--all-tracks``, every
track, and the chorale and the quartet together as one 9-track session) and resampled to its sample rate (so that the CAE, which needs the model's rate, sees the same
inputs), and to ``--seconds`` of audio. For each method: SDR/SIR/SAR gains over the unprocessed
microphones (mean and worst track over all seeds) and the Frobenius error ``‖Λ̂ − A‖_F`` of the
amplitude bleed matrix against the true mixing gains ``A`` (the t-UNet's Λ̂; KAMIR's gains;
spectral subtraction's λ + I, a magnitude-domain matrix; for the CAE, which has no matrix, the
least-squares ``X · pinv(Ŝ)`` of its output).

Which pieces are held out depends on the data a model was trained on: the bundled t-UNet's
training data is documented in ``bleedjax/assets/tunet/README.md``.

    .venv/bin/python benchmarks/quality_neural.py [--tunet [LABEL=]DIR ...] [--cae DIR] [--seeds 2]
        [--demix pinv wiener] [--seconds 10] [--all-tracks] [--json out.json]

Without ``--tunet`` the bundled model is used; several t-UNets (e.g. the loss and band variants)
are compared side by side; without ``--cae`` the CAE is left out.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from _quality import CONDITIONS, condition_name, load_pieces, score_gains
from bleedjax.configs import kamir as kamir_config

from bleedjax.methods import kamir, neural
from bleedjax.methods import spectral_subtraction as ss
from bleedjax.metrics.matrices import frobenius_distance
from bleedjax.models import inference, losses, receptive_field
from bleedjax.simulate_folder import simulate_arrays


def load_models(tunets: list[str], cae_dir: str | None, demix_modes: list[str]) -> dict:
    """``label -> (kind, inference config, graphdef, state, training config)``; a t-UNet is
    ``DIR`` or ``LABEL=DIR`` (no entry: the bundled model), once per ``demix`` mode (``""``: the
    model's own, ``config.model.demix``)."""
    entries = [("tunet", *(t.split("=", 1) if "=" in t else (f"tunet {t}", t))) for t in tunets]
    entries = entries or [("tunet", "tunet (bundled)", None)]
    models = {}
    for kind, label, folder in entries:
        for demix in demix_modes:
            config = neural.with_checkpoint(kind, neural.default_config(kind), folder)
            config.demix = demix
            named = f"{label} {demix}" if demix else label
            models[named] = (kind, config, *neural.load(config, kind))
    if cae_dir is not None:
        config = neural.with_checkpoint("cae", neural.default_config("cae"), cae_dir)
        models["cae"] = ("cae", config, *neural.load(config, "cae"))
    return models


def run(method: str, mics: np.ndarray, rate: float, models: dict):
    if method == "spectral-subtraction":
        result = ss.reduce_session(jnp.asarray(mics))
        return np.asarray(result.cleaned), np.asarray(result.lam) + np.eye(len(mics))
    if method == "kamir":
        settings = kamir.Settings(**kamir.PRESETS[kamir_config.DEFAULT_PRESET])
        result = kamir.reduce_session(jnp.asarray(mics), jnp.asarray(kamir.identity_phi(len(mics))), settings)
        return np.asarray(result.cleaned), np.asarray(result.gains)
    kind, config, graphdef, state, training = models[method]
    batch, lengths = mics[None].astype(np.float32), np.asarray([mics.shape[-1]])
    if kind == "tunet":
        cleaned, lam = neural.reduce_tunet(graphdef, state, training, batch, lengths, rate, config)
        lam = np.asarray(lam)[0]
        return np.asarray(cleaned)[0], lam if lam.ndim == 2 else lam.mean(axis=0)
    model = training.model
    cleaned = neural.cae_clean(graphdef, state, jnp.asarray(batch), jnp.asarray(lengths), n_fft=model.n_fft,
                               hop=model.hop, chunk=int(config.chunk))
    cleaned = np.asarray(cleaned)
    return cleaned[0], neural.effective_matrix(batch, cleaned)[0]


def prepare(session, tracks: int | None, rate: float, seconds: float) -> np.ndarray:
    audio = np.asarray(session.audio[:tracks], np.float32)
    if session.sample_rate != rate:
        audio = np.asarray(inference.resample(jnp.asarray(audio), round(audio.shape[-1] * rate / session.sample_rate)))
    return audio[:, : int(seconds * rate)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tunet", nargs="*", default=[], metavar="[LABEL=]DIR",
                        help="t-UNet checkpoints or workdirs, side by side (default: the bundled model)")
    parser.add_argument("--cae", help="CAE checkpoint or workdir (default: no CAE)")
    parser.add_argument("--demix", nargs="+", default=[""], choices=["", "pinv", "wiener"],
                        help="t-UNet demixing, one row per mode (default: each model's own)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--all-tracks", action="store_true",
                        help="every track of each piece, and the chorale and the quartet together as one 9-track "
                             "session (t-UNets with the pair head only, which take any number of tracks)")
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    models = load_models(args.tunet, args.cae, args.demix)
    training = next(iter(models.values()))[-1]
    tracks, rate = training.model.num_tracks, losses.model_rate(training)
    for label, entry in models.items():
        if losses.model_rate(entry[-1]) != rate or (entry[0] == "tunet" and entry[-1].model.num_tracks != tracks):
            raise SystemExit(f"{label}: all models must share the sample rate and J (the inputs are prepared for them)")
    if args.all_tracks:
        fixed = [label for label, entry in models.items()
                 if entry[0] != "tunet" or entry[-1].model.get("pair_histogram_bins", 0) <= 0]
        if fixed:
            raise SystemExit(f"--all-tracks: {', '.join(fixed)} take a fixed number of tracks")
        tracks = None
    methods = [*models, "kamir", "spectral-subtraction"]
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; seeds 0..{args.seeds - 1}; "
          f"{tracks or 'all'} tracks at {rate:g} Hz, {args.seconds:g} s; KAMIR preset {kamir_config.DEFAULT_PRESET}\n")
    header = (f"{'piece':<28} {'bleed':<8} {'method':<24} {'ΔSDR mean':>9} {'worst':>7} {'ΔSIR mean':>9} "
              f"{'worst':>7} {'ΔSAR mean':>9} {'‖Λ̂−A‖F':>8}")
    print(header)
    print("-" * len(header))
    rows, started = [], time.perf_counter()
    pieces = {name: prepare(session, tracks, rate, args.seconds) for name, session in load_pieces().items()
              if tracks is None or session.num_tracks >= tracks}
    if args.all_tracks:
        together = [pieces["bach-bwv80 (5 tr, timpani)"], pieces["mozart-k458 (2 violins)"]]
        shortest = min(a.shape[-1] for a in together)
        pieces["bach + mozart (9 tr)"] = np.concatenate([a[:, :shortest] for a in together])
    for piece, audio in pieces.items():
        too_short = [label for label, entry in models.items()
                     if audio.shape[-1] < receptive_field(entry[-1].model)]
        if too_short:
            print(f"{piece}: {audio.shape[-1] / rate:.2f} s is shorter than the receptive field of "
                  f"{', '.join(too_short)}, skipped")
            continue
        for bleed, db in CONDITIONS:
            gains = {m: {k: [] for k in ("sdr", "sir", "sar")} for m in methods}
            errors = {m: [] for m in methods}
            for seed in range(args.seeds):
                mics, references, truth = simulate_arrays(
                    audio, sample_rate=int(rate), bleed=bleed, max_crosstalk_db=-12.0 if db is None else db, seed=seed
                )
                mixing = np.asarray(truth["matrix"], np.float32)
                for method in methods:
                    cleaned, matrix = run(method, mics, rate, models)
                    for metric, values in score_gains(references, mics, cleaned).items():
                        gains[method][metric].append(values)
                    errors[method].append(float(frobenius_distance(jnp.asarray(matrix, jnp.float32),
                                                                   jnp.asarray(mixing))))
            for method in methods:
                flat = {k: np.concatenate(v) for k, v in gains[method].items()}
                row = {
                    "piece": piece, "bleed": condition_name(bleed, db), "method": method,
                    "sdr_gain_mean": float(np.mean(flat["sdr"])), "sdr_gain_worst": float(np.min(flat["sdr"])),
                    "sir_gain_mean": float(np.mean(flat["sir"])), "sir_gain_worst": float(np.min(flat["sir"])),
                    "sar_gain_mean": float(np.mean(flat["sar"])), "frobenius": float(np.mean(errors[method])),
                }
                rows.append(row)
                print(f"{piece:<28} {row['bleed']:<8} {method:<24} {row['sdr_gain_mean']:>9.2f} "
                      f"{row['sdr_gain_worst']:>7.2f} {row['sir_gain_mean']:>9.2f} {row['sir_gain_worst']:>7.2f} "
                      f"{row['sar_gain_mean']:>9.2f} {row['frobenius']:>8.3f}")
    print(f"\n{time.perf_counter() - started:.0f} s")
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if mine:
            print(f"{method:<24} mean ΔSDR {np.mean([r['sdr_gain_mean'] for r in mine]):6.2f} dB, "
                  f"ΔSIR {np.mean([r['sir_gain_mean'] for r in mine]):6.2f} dB, "
                  f"worst ΔSDR {min(r['sdr_gain_worst'] for r in mine):6.2f} dB, "
                  f"mean ‖Λ̂−A‖F {np.mean([r['frobenius'] for r in mine]):.3f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "tracks": tracks or "all", "sample_rate": rate}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
