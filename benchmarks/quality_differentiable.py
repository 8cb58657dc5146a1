"""Quality of the differentiable bleed model next to spectral subtraction and KAMIR, in one run.

Pieces are those of ``benchmarks/_quality.py`` (the Bach chorale with a sparse timpani, the Mozart
quartet with two violins, real PHENICX stems). Conditions:

* ``delayed -6 dB`` / ``delayed -12 dB``: linear bleed with Seipel & Lerch's symmetric mixing
  matrix (maximum crosstalk -6 or -12 dB) and a delay drawn uniformly from 1–10 ms for every
  (microphone, source) pair, rendered with exact fractional delays (``bleed_model.bleed``) and
  normalised by the loudest track;
* ``room 0.2 s`` / ``0.4 s`` / ``0.6 s``: pyroomacoustics shoebox rooms (``bleedjax.room``) of
  that RT60, one close microphone 0.5 m in front of each source.

Methods on the same inputs: spectral subtraction (preset ``--ss-preset``, ``refined`` by default,
the library's ``Settings()``; ``auto`` is the command line's default), KAMIR K4, and the
differentiable model (``bleedjax.methods.differentiable``) with its default magnitude residual
stage (``diff``), that stage without the fit's significance (``diff no-sig``, the default until
2026-12-07) and without the stage (``diff none``). Reported: SDR/SIR/SAR gains over the unprocessed
microphones (mean and worst track over all seeds), and for the fitted model the errors of the
recovered delays (ms) and gains (dB) over the off-diagonal pairs whose true bleed is above
-30 dB (mean of |error| and worst), and the same over the subset of those pairs whose bleed is
also above -30 dB relative to the microphone's own signal (``g_ij² E_j / E_i``, E the energy of
the reference; columns ``audible``): fainter bleed leaves the delay undefined. The truth for rooms is the direct path: delays from the
geometry and the 1/r gain ratio ``d_jj / d_ij``; the RMS gain of the whole rendered bleed (mostly
late reverberation) is not what a gain-and-delay model can recover.

On delayed linear bleed the delay errors are also reported over the audible pairs whose delay the
excerpt **determines** (columns ``determined``): those where the fit's own cost, given the true
sources and the true parameters of every other pair, is lowest within 0.1 ms of the true delay
(:func:`determined_pairs`). A held note repeats its waveform every pitch period and sources that
play together correlate, so over a short excerpt even this oracle least-squares estimate can pick a
delay whole periods away; no estimator that fits the bleed to the audio can be expected to do
better there.

    .venv/bin/python benchmarks/quality_differentiable.py [--seeds 2] [--seconds 15]
        [--pieces bach mozart phenicx] [--conditions delayed-6 delayed-12 room-0.2 room-0.4 room-0.6]
        [--json out.json]
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
from _quality import clean_with, load_pieces, score_gains

from bleedjax import bleed_fit, bleed_model, room, signal, simulation
from bleedjax.methods import differentiable, kamir
from bleedjax.methods import spectral_subtraction as ss

CONDITIONS = ["delayed-6", "delayed-12", "room-0.2", "room-0.4", "room-0.6"]
METHODS = ["spectral-subtraction", "kamir K4", "diff", "diff no-sig", "diff none"]
MIN_TRUE_DB = -30.0
MIN_RELATIVE_DB = -30.0
DELAY_TOLERANCE_MS = 0.1
ORACLE_UPSAMPLE = 4


def delayed(sources: np.ndarray, db: float, seed: int, rate: int):
    """Mics, references, true gains and delays (samples) of one delayed linear condition."""
    key_gains, key_delays = jax.random.split(jax.random.key(seed))
    num = sources.shape[0]
    gains = np.asarray(simulation.seipel_mixing_matrix(key=key_gains, num_tracks=num, max_crosstalk_db=db))
    delays_ms = np.asarray(jax.random.uniform(key_delays, (num, num), minval=1.0, maxval=10.0))
    delays = np.where(np.eye(num, dtype=bool), 0.0, delays_ms * 1e-3 * rate).astype(np.float32)
    mics = bleed_model.bleed(jnp.asarray(sources), jnp.asarray(gains), jnp.asarray(delays),
                             max_delay=bleed_model.max_delay_samples(delays))
    mics, references = simulation.normalise_by_loudest(mics, jnp.asarray(sources))
    return np.asarray(mics), np.asarray(references), gains, delays


def in_room(sources: np.ndarray, rt60: float, seed: int, rate: int):
    """Mics, references, direct-path gains (1/r ratio) and delays of one room condition."""
    geometry = room.random_geometry(sources.shape[0], seed=seed, rt60=rt60)
    result = room.simulate_room(sources, sample_rate=rate, geometry=geometry)
    src, mic = np.asarray(geometry.source_positions), np.asarray(geometry.mic_positions)
    distance = np.linalg.norm(mic[:, None, :] - src[None, :, :], axis=-1)
    return result.mics, result.references, np.diag(distance)[None, :] / distance, result.delays


def settings_for(rate: int, residual: str, significance: bool = True) -> differentiable.Settings:
    """93 ms frames at 44.1 kHz (4096 / 1024), the same duration at other rates; 23 ms max delay."""
    n_fft = 1 << int(np.round(np.log2(0.093 * rate)))
    return differentiable.Settings(n_fft=n_fft, hop=n_fft // 4, max_delay=n_fft // 4, residual=residual,
                                   residual_significance=significance)


def run(method: str, mics: np.ndarray, rate: int, ss_preset: str):
    """Cleaned tracks and, for the fitted model, its parameters (spectral subtraction runs as
    ``bleedjax reduce`` runs it, with ``auto``'s phase check)."""
    if method == "spectral-subtraction":
        return clean_with(method, ss_preset, mics, [f"track{k}" for k in range(len(mics))])[0], None
    if method == "kamir K4":
        settings = kamir.Settings(**kamir.PRESETS["K4"])
        phi = jnp.asarray(kamir.identity_phi(len(mics)))
        return np.asarray(kamir.reduce_session(jnp.asarray(mics), phi, settings).cleaned), None
    residual = "none" if method == "diff none" else "spectral-subtraction"
    settings = settings_for(rate, residual, significance=method != "diff no-sig")
    result = differentiable.reduce_session(jnp.asarray(mics), settings)
    return np.asarray(result.cleaned), jax.device_get(result.params)


def parameter_errors(params, gains: np.ndarray, delays: np.ndarray, rate: int, references: np.ndarray,
                     determined: np.ndarray | None = None):
    """|delay error| in ms and |gain error| in dB over the pairs with true bleed above -30 dB, which
    of them are audible (bleed above -30 dB relative to the microphone's own signal), and which are
    audible and ``determined`` (:func:`determined_pairs`; none when ``None``)."""
    num = len(gains)
    keep = ~np.eye(num, dtype=bool) & (20 * np.log10(np.maximum(gains, 1e-12)) > MIN_TRUE_DB)
    energy = np.sum(np.asarray(references, np.float64) ** 2, axis=-1)
    relative = gains.astype(np.float64) ** 2 * energy[None, :] / np.maximum(energy[:, None], 1e-30)
    audible = 10 * np.log10(np.maximum(relative, 1e-30)) > MIN_RELATIVE_DB
    delay_ms = np.abs(np.asarray(params.delays) - delays)[keep] / rate * 1e3
    fitted = np.maximum(np.asarray(params.gains), 1e-12)
    gain_db = np.abs(20 * np.log10(fitted[keep] / gains[keep]))
    determined = np.zeros_like(audible) if determined is None else determined & audible
    return delay_ms, gain_db, audible[keep], determined[keep]


def determined_pairs(mics: np.ndarray, references: np.ndarray, gains: np.ndarray, delays: np.ndarray,
                     rate: int, settings: differentiable.Settings) -> np.ndarray:
    """``(J, J)``: the pairs whose delay the excerpt determines to :data:`DELAY_TOLERANCE_MS`.

    For each pair ``(i, j)`` the fit's cost (:func:`bleedjax.bleed_fit.cost`: its whitening, its
    STFT) is minimised over the delay alone, with the true sources as regressors and every other
    pair at its true gain and delay; for a delay ``τ`` and the best gain, the decrease of the cost
    is ``b(τ)² / c`` with ``b(τ) = Re Σ_f w_i(f) e^{2πifτ} (G_ij(f) − Σ_{k≠i,j} A_ik(f) Γ_kj(f))``
    (:func:`bleedjax.bleed_fit.pair_targets`, :func:`bleedjax.bleed_fit.pair_gains`; ``c`` and the
    window factor do not depend on ``τ``), so the best delay is the peak of an inverse DFT,
    searched on a 1/4-sample grid over ``[0, max_delay]``. A pair is determined when that peak lies within the tolerance of the truth.
    """
    num = len(gains)
    transform = {"n_fft": settings.n_fft, "hop": settings.hop, "window_name": settings.window}
    spectra = signal.stft(jnp.asarray(mics), **transform)
    sources = signal.stft(jnp.asarray(references), **transform)
    level = jnp.sqrt(jnp.mean(jnp.abs(spectra) ** 2))
    stats = bleed_fit.statistics(spectra / level, sources / level, settings)
    truth = bleed_model.flat(jnp.asarray(gains, jnp.float32), jnp.asarray(delays, jnp.float32))
    weighted = stats.weights[:, None, :] * bleed_fit.pair_targets(truth, stats, settings)
    fine = settings.n_fft * ORACLE_UPSAMPLE
    padded = jnp.zeros((num, num, fine // 2 + 1), weighted.dtype).at[..., : weighted.shape[-1]].set(weighted)
    correlation = jnp.fft.irfft(padded, n=fine)[..., : settings.max_delay * ORACLE_UPSAMPLE + 1]
    best = np.asarray(jnp.argmax(correlation, axis=-1)) / ORACLE_UPSAMPLE
    return ~np.eye(num, dtype=bool) & (np.abs(best - delays) <= DELAY_TOLERANCE_MS * 1e-3 * rate)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=15.0, help="cut every piece to this length")
    parser.add_argument("--pieces", nargs="+", default=["bach", "mozart", "phenicx"])
    parser.add_argument("--conditions", nargs="+", default=CONDITIONS, choices=CONDITIONS)
    parser.add_argument("--json", type=pathlib.Path)
    parser.add_argument("--ss-preset", default="refined", choices=list(ss.PRESETS),
                        help="the spectral-subtraction preset compared (the command line's default is auto)")
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; seeds 0..{args.seeds - 1}; "
          f"spectral subtraction: preset {args.ss_preset}\n")
    header = (f"{'piece':<28} {'bleed':<11} {'method':<21} {'ΔSDR mean':>9} {'worst':>7} {'ΔSIR mean':>9} "
              f"{'worst':>7} {'ΔSAR mean':>9} {'delay ms mean':>13} {'worst':>6} {'gain dB mean':>12} {'worst':>6} "
              f"{'audible delay':>13} {'worst':>6} {'audible gain':>12} {'worst':>6} {'determined':>9} "
              f"{'its delay':>10} {'worst':>6}")
    print(header)
    print("-" * len(header))
    rows, started = [], time.perf_counter()
    for piece, session in load_pieces().items():
        if not any(piece.lower().startswith(p) for p in args.pieces):
            continue
        rate = session.sample_rate
        sources = session.audio[:, : int(args.seconds * rate)]
        for condition in args.conditions:
            kind, value = condition.split("-", 1)
            scores = {m: {k: [] for k in ("sdr", "sir", "sar")} for m in METHODS}
            errors = {m: ([], [], [], []) for m in METHODS}
            for seed in range(args.seeds):
                determined = None
                if kind == "delayed":
                    mics, references, gains, delays = delayed(sources, -float(value), seed, rate)
                    determined = determined_pairs(mics, references, gains, delays, rate, settings_for(rate, "none"))
                else:
                    mics, references, gains, delays = in_room(sources, float(value), seed, rate)
                for method in METHODS:
                    cleaned, params = run(method, mics, rate, args.ss_preset)
                    for metric, values in score_gains(references, mics, cleaned).items():
                        scores[method][metric].append(values)
                    if params is not None:
                        found = parameter_errors(params, gains, delays, rate, references, determined)
                        for store, values in zip(errors[method], found):
                            store.append(values)
            summary = {}
            for method in METHODS:
                flat = {k: np.concatenate(v) for k, v in scores[method].items()}
                delay_error = np.concatenate(errors[method][0]) if errors[method][0] else np.full(1, np.nan)
                gain_error = np.concatenate(errors[method][1]) if errors[method][1] else np.full(1, np.nan)
                audible = np.concatenate(errors[method][2]) if errors[method][2] else np.zeros(1, bool)
                delay_audible = delay_error[audible] if audible.any() else np.full(1, np.nan)
                gain_audible = gain_error[audible] if audible.any() else np.full(1, np.nan)
                determined = np.concatenate(errors[method][3]) if errors[method][3] else np.zeros(1, bool)
                delay_determined = delay_error[determined] if determined.any() else np.full(1, np.nan)
                row = {
                    "piece": piece, "bleed": condition, "method": method,
                    "sdr_gain_mean": float(np.mean(flat["sdr"])), "sdr_gain_worst": float(np.min(flat["sdr"])),
                    "sir_gain_mean": float(np.mean(flat["sir"])), "sir_gain_worst": float(np.min(flat["sir"])),
                    "sar_gain_mean": float(np.mean(flat["sar"])),
                    "delay_error_ms_mean": float(np.mean(delay_error)), "delay_error_ms_worst": float(np.max(delay_error)),
                    "gain_error_db_mean": float(np.mean(gain_error)), "gain_error_db_worst": float(np.max(gain_error)),
                    "audible_pairs": int(audible.sum()),
                    "delay_error_ms_audible_mean": float(np.mean(delay_audible)),
                    "delay_error_ms_audible_worst": float(np.max(delay_audible)),
                    "gain_error_db_audible_mean": float(np.mean(gain_audible)),
                    "gain_error_db_audible_worst": float(np.max(gain_audible)),
                    "determined_pairs": int(determined.sum()),
                    "delay_error_ms_determined_mean": float(np.mean(delay_determined)),
                    "delay_error_ms_determined_worst": float(np.max(delay_determined)),
                }
                rows.append(row)
                summary[method] = row
                print(f"{piece:<28} {condition:<11} {method:<21} {row['sdr_gain_mean']:9.2f} "
                      f"{row['sdr_gain_worst']:7.2f} {row['sir_gain_mean']:9.2f} {row['sir_gain_worst']:7.2f} "
                      f"{row['sar_gain_mean']:9.2f} {row['delay_error_ms_mean']:13.3f} "
                      f"{row['delay_error_ms_worst']:6.2f} {row['gain_error_db_mean']:12.2f} "
                      f"{row['gain_error_db_worst']:6.2f} {row['delay_error_ms_audible_mean']:13.3f} "
                      f"{row['delay_error_ms_audible_worst']:6.2f} {row['gain_error_db_audible_mean']:12.2f} "
                      f"{row['gain_error_db_audible_worst']:6.2f} {row['determined_pairs']:>4}/{row['audible_pairs']:<4} "
                      f"{row['delay_error_ms_determined_mean']:10.3f} {row['delay_error_ms_determined_worst']:6.2f}",
                      flush=True)
            best = max(("diff", "diff none"), key=lambda m: summary[m]["sdr_gain_mean"])
            baseline = summary["spectral-subtraction"]
            for method in ("diff", "diff none"):
                verdict = "beats" if summary[method]["sdr_gain_mean"] > baseline["sdr_gain_mean"] else "does NOT beat"
                print(f"{'':<28} {'':<11} -> {method} {verdict} spectral subtraction in mean ΔSDR "
                      f"({summary[method]['sdr_gain_mean']:.2f} vs {baseline['sdr_gain_mean']:.2f} dB)"
                      + (" [best variant]" if method == best else ""))
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
