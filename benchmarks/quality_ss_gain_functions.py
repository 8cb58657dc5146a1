"""Spectral subtraction with the default (``refined``) λ and other gain functions, side by side.

Is the quartet's SIR gain at −18 dB limited by Eq. (7) or by λ? One λ per session (``refined``:
the box and the rounds against the cleaned regressors ``R``), then the cleaned track
``X_i · g_i`` with these gains, each floored at 0:

* ``magnitude``: Eq. (7), ``g = (|X_i| − Σ λ_ij R_j) / |X_i|`` (the default; its row equals
  ``quality_spectral_subtraction.py``'s ``refined``);
* ``power``: ``g = √(|X_i|² − Σ λ_ij² R_j²) / |X_i|`` (preset ``power``);
* ``power^1.5`` and ``wiener`` (``power²``, the Wiener gain of the same estimates);
* ``magnitude²``, a harder mask.

Then bounds that know the answer (oracles, from the simulation's references ``S`` and mixing
matrix ``A``; the bleed is ``B = X − S``), each a real gain on the microphone's STFT as above:

* ``true λ``: Eq. (7) on the microphones with ``λ = A − I``, and ``true λ ×1.5`` and ``×2``
  over-subtracting;
* ``ideal ratio``: ``|S|² / (|S|² + |B|²)``, ``ideal amplitude``: ``min(|S| / |X|, 1)``, and
  ``ideal binary``: 1 where ``|S| > |B|``, else 0 (the oracle usually quoted as the upper bound
  of masking methods' SIR);
* ``true |B|``: ``(|X| − |B|) / |X|``, Eq. (7) with the exact bleed magnitude of every point;
* ``floor``: the preset of that name (the default's λ capped by the ratio floor), for comparison,
  and ``floor ×1.5``, ``floor ×2`` with its ``lambda_scale`` (the paper's over-subtraction).

If even the oracles stay below a target, no λ and no gain function of this kind reaches it: the
bleed that shares a time-frequency point with the target survives any real-valued gain.

``--stft N_FFT HOP`` runs every row on another Hamming STFT than the paper's 4096 / 2048 (the
``floor`` rows too), to ask whether the frame is the limit; ``--levels`` keeps some of the
conditions (``-18``, ``room``, ...).

Scored with bleedjax's BSS Eval (gains over the unprocessed microphones, mean and worst track).

    .venv/bin/python benchmarks/quality_ss_gain_functions.py [--pieces mozart] [--seeds 2] [--stft 4096 2048] [--levels -18]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
from _quality import CONDITIONS, condition_name, load_pieces, score_gains, simulate

from bleedjax import signal
from bleedjax.methods import spectral_subtraction as ss

DEFAULT = ss.Settings()
OVER_SUBTRACTION = (1.5, 2.0)


@functools.partial(jax.jit, static_argnames="settings")
def cleaned_by_gain(audio, settings: ss.Settings):
    """``{gain name: (J, samples) cleaned tracks}`` for one session, all with the same λ, on the
    STFT of ``settings`` (the default preset otherwise)."""
    transform = {"n_fft": settings.n_fft, "hop": settings.hop, "window_name": settings.window}
    spectrogram = jnp.swapaxes(signal.stft(audio, **transform), -1, -2)  # (J, frames, bins), as reduce_session
    magnitudes = jnp.abs(spectrogram)
    refinement = ss.refine_lambda(magnitudes, settings)
    regressors = ss.cleaned_regressors(magnitudes, refinement)
    bleed = jnp.einsum("ij,j...->i...", refinement.lam, regressors, precision=ss.HIGHEST)
    bleed_power = jnp.einsum("ij,j...->i...", refinement.lam**2, regressors**2, precision=ss.HIGHEST)
    safe = jnp.where(magnitudes > 0, magnitudes, 1.0)
    magnitude_gain = jnp.maximum(magnitudes - bleed, 0.0) / safe
    power_gain = jnp.sqrt(jnp.maximum(magnitudes**2 - bleed_power, 0.0)) / safe
    gains = {
        "magnitude": magnitude_gain,
        "power": power_gain,
        "power^1.5": power_gain**1.5,
        "wiener": power_gain**2,
        "magnitude²": magnitude_gain**2,
    }
    return {name: signal.istft(jnp.swapaxes(spectrogram * gain, -1, -2), length=audio.shape[-1], **transform)
            for name, gain in gains.items()}


@functools.partial(jax.jit, static_argnames="settings")
def cleaned_by_oracle(audio, references, mixing, settings: ss.Settings):
    """``{oracle name: (J, samples) cleaned tracks}`` from the true references and mixing matrix,
    on the STFT of ``settings``."""
    transform = {"n_fft": settings.n_fft, "hop": settings.hop, "window_name": settings.window}
    spectrogram = signal.stft(audio, **transform)
    reference_spectrogram = signal.stft(references, **transform)
    target = jnp.abs(reference_spectrogram)
    magnitudes = jnp.abs(spectrogram)
    bleed = jnp.abs(spectrogram - reference_spectrogram)
    safe = jnp.where(magnitudes > 0, magnitudes, 1.0)
    true_lambda = mixing - jnp.eye(mixing.shape[0])
    gains = {
        "ideal ratio": target**2 / jnp.maximum(target**2 + bleed**2, jnp.finfo(jnp.float32).tiny),
        "ideal amplitude": jnp.minimum(target / safe, 1.0),
        "true |B|": jnp.maximum(magnitudes - bleed, 0.0) / safe,
        "ideal binary": (target > bleed).astype(magnitudes.dtype),
    }
    cleaned = {name: spectrogram * gain for name, gain in gains.items()}
    cleaned["true λ"] = ss.subtract(spectrogram, true_lambda)
    for scale in OVER_SUBTRACTION:
        cleaned[f"true λ ×{scale:g}"] = ss.subtract(spectrogram, true_lambda, scale)
    out = {name: signal.istft(value, length=audio.shape[-1], **transform) for name, value in cleaned.items()}
    floor = dataclasses.replace(settings, **ss.PRESETS["floor"])
    out["floor"] = ss.reduce_session(audio, floor).cleaned
    for scale in OVER_SUBTRACTION:
        settings = dataclasses.replace(floor, lambda_scale=scale)
        out[f"floor ×{scale:g}"] = ss.reduce_session(audio, settings).cleaned
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pieces", nargs="+", default=["mozart"], help="substrings of piece names (mozart)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--stft", nargs=2, type=int, metavar=("N_FFT", "HOP"), default=(DEFAULT.n_fft, DEFAULT.hop))
    parser.add_argument("--levels", nargs="+", help="conditions to keep, as printed (-18, room); all by default")
    args = parser.parse_args(argv)
    settings = dataclasses.replace(DEFAULT, n_fft=args.stft[0], hop=args.stft[1])
    conditions = [c for c in CONDITIONS if args.levels is None or condition_name(*c).split()[0] in args.levels]
    if not conditions:
        parser.error(f"--levels matches none of {[condition_name(*c).split()[0] for c in CONDITIONS]}")
    pieces = {name: session for name, session in load_pieces().items() if any(p in name for p in args.pieces)}
    print(f"{'piece':<28} {'bleed':<8} {'gain':<16} {'ΔSDR mean':>9} {'worst':>7} {'ΔSIR mean':>9} {'worst':>7} "
          f"{'ΔSAR mean':>9}")
    for piece, session in pieces.items():
        for bleed, db in conditions:
            scores = {}
            for seed in range(args.seeds):
                mics, references, mixing = simulate(session, bleed, db, seed)
                inputs = jnp.asarray(mics), jnp.asarray(references), jnp.asarray(mixing, jnp.float32)
                for name, cleaned in {**cleaned_by_gain(inputs[0], settings), **cleaned_by_oracle(*inputs, settings)}.items():
                    scores.setdefault(name, []).append(score_gains(references, mics, cleaned))
            for name, runs in scores.items():
                sdr, sir, sar = (np.concatenate([r[m] for r in runs]) for m in ("sdr", "sir", "sar"))
                print(f"{piece:<28} {condition_name(bleed, db):<8} {name:<16} {sdr.mean():9.2f} {sdr.min():7.2f} "
                      f"{sir.mean():9.2f} {sir.min():7.2f} {sar.mean():9.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
