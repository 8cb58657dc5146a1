"""Room microphones in a session: what each default method does to them and to the close
microphones, with and without ``reduce --keep``.

Many sessions hold, besides one close microphone per instrument, a stereo pair of room (or
overhead, or audience) microphones that hear every source by design. Every method models each
track as its own source plus bleed of the others, so a room microphone looks like nothing but
bleed: it is emptied, and a close microphone regressed on it can lose its own source.
``reduce --keep FILE`` copies such files unchanged and leaves them out of the session.

Sessions: the bundled Bach chorale (5 tracks) and the Mozart quartet (4 tracks), the first
``--seconds`` of each, rendered by pyroomacoustics in a shoebox room (``bleedjax.room``: RT60
``--rt60``, a close microphone 0.5 m in front of each source) plus a room pair: two microphones
1 m apart, 3 m behind the stage's centre, 2.5 m high, which get the same images of every source as
the close microphones. The close microphones are scored against their own source's image (BSS
Eval, bleedjax's, cross-checked against ``mir_eval``); the room pair by how much of it the method
changed, ``10 log10(Σ (out − in)² / Σ in²)`` (0 dB: as much as the track holds).

Each session is written as files and cleaned by :func:`bleedjax.reduce.reduce_folders` with each
method's default, once with the room pair in the session and once with ``keep`` (the command line's
``--keep``), seeds ``--seeds``.

    .venv/bin/python benchmarks/quality_room_microphones.py [--seconds 10] [--seeds 2] [--json F]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

import numpy as np
import soundfile as sf

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common
import _quality

from bleedjax import demo, reduce, room, sessions
from bleedjax.simulation import PEAK_AFTER_NORMALISATION

METHODS = ("spectral-subtraction", "kamir", "differentiable")
ROOM_PAIR = ("room_left.wav", "room_right.wav")


def room_pair_geometry(geometry: room.RoomGeometry) -> room.RoomGeometry:
    """``geometry`` with two more microphones: 1 m apart, 3 m behind the sources' centre, 2.5 m up."""
    centre = np.mean(np.asarray(geometry.source_positions), axis=0)
    pair = tuple((float(centre[0] + dx), float(centre[1] + 3.0), 2.5) for dx in (-0.5, 0.5))
    return room.RoomGeometry(geometry.dimensions, geometry.rt60, geometry.source_positions,
                             geometry.mic_positions + pair)


def render(sources: np.ndarray, sample_rate: int, seed: int, rt60: float):
    """``(close microphones (J, n), room pair (2, n), references (J, n))``, normalised together."""
    geometry = room_pair_geometry(room.random_geometry(len(sources), seed=seed, rt60=rt60))
    simulated = room.shoebox(geometry, sample_rate=sample_rate, signals=np.asarray(sources, np.float64))
    premix = simulated.simulate(return_premix=True)
    samples = sources.shape[-1]
    images = np.transpose(premix, (1, 0, 2))[..., :samples]
    mics = images.sum(axis=1)
    scale = PEAK_AFTER_NORMALISATION / np.abs(mics).max()
    count = len(sources)
    references = images[np.arange(count), np.arange(count)] * scale
    return (mics[:count] * scale).astype(np.float32), (mics[count:] * scale).astype(np.float32), references


def change_db(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``(tracks,)`` energy of ``after − before`` against ``before``'s, in dB (−inf: unchanged)."""
    with np.errstate(divide="ignore"):
        return 10 * np.log10(np.sum((after - before) ** 2, axis=-1) / np.sum(before**2, axis=-1))


def run(seconds: float, seeds: int, rt60: float) -> list[dict]:
    pieces = {
        "bach-bwv80 (5 tr, timpani)": sessions.read_session(demo.bundled_stems()),
        "mozart-k458 (2 violins)": sessions.read_session(HERE / "audio" / "string_quartet"),
    }
    rows = []
    for piece, session in pieces.items():
        rate = session.sample_rate
        sources = session.audio[:, : int(seconds * rate)]
        for seed in range(seeds):
            close, pair, references = render(sources, rate, seed, rt60)
            with tempfile.TemporaryDirectory() as work:
                folder = pathlib.Path(work) / "session"
                folder.mkdir()
                for name, track in zip(session.track_names, close):
                    sf.write(folder / name.replace(".flac", ".wav"), track, rate, subtype="FLOAT")
                for name, track in zip(ROOM_PAIR, pair):
                    sf.write(folder / name, track, rate, subtype="FLOAT")
                names = sorted(p.name for p in folder.iterdir() if p.name not in ROOM_PAIR)
                order = [session.track_names.index(n.replace(".wav", ".flac")) for n in names]
                mics, truth = close[order], references[order]
                for method in METHODS:
                    for variant, keep in [("room pair in the session", ()), ("--keep the room pair", ROOM_PAIR)]:
                        out = pathlib.Path(work) / f"{method}-{len(keep)}"
                        reduce.reduce_folders([folder], out, method=method, keep=keep, progress=False)
                        cleaned = np.stack([sf.read(out / n, dtype="float32")[0] for n in names])
                        room_out = np.stack([sf.read(out / n, dtype="float32")[0] for n in ROOM_PAIR])
                        gains = _quality.score_gains(truth, mics, cleaned)
                        rows.append({
                            "piece": piece, "seed": seed, "method": method, "variant": variant,
                            **{f"d{m}": gains[m].tolist() for m in _quality.METRICS},
                            "room_change_db": change_db(pair, room_out).tolist(),
                            "mir_eval_max_abs_diff": _quality.cross_check(truth, cleaned),
                        })
                        print(piece, seed, method, variant, f"ΔSDR {np.mean(gains['sdr']):.2f} / "
                              f"{np.min(gains['sdr']):.2f}", flush=True)
    return rows


def summary(rows: list[dict]) -> str:
    table = []
    for method in METHODS:
        for variant in ["room pair in the session", "--keep the room pair"]:
            chosen = [r for r in rows if r["method"] == method and r["variant"] == variant]
            sdr = np.concatenate([r["dsdr"] for r in chosen])
            sir = np.concatenate([r["dsir"] for r in chosen])
            changed = np.concatenate([r["room_change_db"] for r in chosen])
            table.append([method, variant, f"{sdr.mean():.2f} / {sdr.min():.2f}", f"{sir.mean():.2f} / {sir.min():.2f}",
                          "unchanged" if np.all(np.isneginf(changed)) else f"{changed.min():.1f} … {changed.max():.1f}"])
    return _common.format_table(
        ["method (default)", "room pair", "close ΔSDR mean / worst", "close ΔSIR mean / worst", "room pair changed (dB)"],
        table,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--rt60", type=float, default=0.4)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    rows = run(args.seconds, args.seeds, args.rt60)
    print(summary(rows))
    print(f"largest |bleedjax − mir_eval|: {max(r['mir_eval_max_abs_diff'] for r in rows):.2e} dB")
    if args.json:
        _common.write_json(args.json, {"args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
