"""TFDS builder ``musdb18hq``: a local copy of MUSDB18-HQ [1] read through ``manual_dir``.

Layout (as distributed on Zenodo, 44.1 kHz stereo 16-bit WAV)::

    MANUAL_DIR/{train,test}/<Artist - Title>/{mixture,drums,bass,other,vocals}.wav

Splits: ``train`` (train/ minus the official validation tracks, 86 tracks), ``validation`` (the 14
tracks of ``musdb/configs/mus.yaml`` [2]) and ``test`` (50 tracks). The four stems are stored in the
order drums, bass, other, vocals; the mixture is their sum and is not stored.

The compressed MUSDB18 layout (``{train,test}/<Artist - Title>.stem.mp4``, stems in the order
mixture, drums, bass, other, vocals) is read only when the optional decoder ``stempeg`` (and the
``ffmpeg`` it calls) is installed; otherwise preparing it stops with a message saying so.

References:
    [1] Z. Rafii, A. Liutkus, F.-R. Stöter, S. I. Mimilakis, R. Bittner, "MUSDB18-HQ - an
        uncompressed version of MUSDB18", 2019, doi:10.5281/zenodo.3338373.
    [2] sigsep/sigsep-mus-db, ``musdb/configs/mus.yaml``, ``validation_tracks``.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil

import numpy as np

from bleedjax.data import stem_blocks
from bleedjax.sessions import SessionError

STEMS = ("drums", "bass", "other", "vocals")
STEM_MP4_ORDER = ("mixture", "drums", "bass", "other", "vocals")
SAMPLE_RATE = 44100
VALIDATION_TRACKS = (
    "Actions - One Minute Smile",
    "Clara Berry And Wooldog - Waltz For My Victims",
    "Johnny Lokke - Promises & Lies",
    "Patrick Talbot - A Reason To Leave",
    "Triviul - Angelsaint",
    "Alexander Ross - Goodbye Bolero",
    "Fergessen - Nos Palpitants",
    "Leaf - Summerghost",
    "Skelpolu - Human Mistakes",
    "Young Griffo - Pennies",
    "ANiMAL - Rockshow",
    "James May - On The Line",
    "Meaxic - Take A Step",
    "Traffic Experiment - Sirens",
)


def find_tracks(manual_dir: str | os.PathLike) -> dict[str, list[pathlib.Path]]:
    """Split name -> track folders (WAV layout) or ``.stem.mp4`` files (compressed layout).

    Raises:
        SessionError: naming the folder, when it is not in either MUSDB18 layout.
    """
    root = stem_blocks.check_manual_dir(manual_dir)
    subsets = {name: root / name for name in ("train", "test") if (root / name).is_dir()}
    if not subsets:
        raise SessionError(
            f"{root}: not a MUSDB18-HQ folder: expected train/ and test/ holding one folder per "
            "track (<Artist - Title>/{mixture,drums,bass,other,vocals}.wav)"
        )
    found = {}
    for name, folder in subsets.items():
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        tracks = [p for p in entries if p.is_dir()] + [
            p for p in entries if p.is_file() and p.name.endswith(".stem.mp4")
        ]
        if not tracks:
            raise SessionError(f"{folder}: no track folders (<Artist - Title>/) or .stem.mp4 files")
        found[name] = tracks
    splits = {}
    if "train" in found:
        is_validation = lambda p: _track_name(p) in VALIDATION_TRACKS
        splits["train"] = [p for p in found["train"] if not is_validation(p)]
        splits["validation"] = [p for p in found["train"] if is_validation(p)]
    if "test" in found:
        splits["test"] = found["test"]
    return {name: tracks for name, tracks in splits.items() if tracks}


def _track_name(path: pathlib.Path) -> str:
    return path.name.removesuffix(".stem.mp4")


def _read_stem_mp4(path: pathlib.Path, config: stem_blocks.StemBlocksConfig) -> np.ndarray:
    if importlib.util.find_spec("stempeg") is None or shutil.which("ffmpeg") is None:
        raise SessionError(
            f"{path}: reading the compressed MUSDB18 .stem.mp4 layout needs the optional decoder "
            "stempeg (pip install stempeg) and ffmpeg on PATH, which are not installed; install "
            "them or use MUSDB18-HQ (WAV)"
        )
    import stempeg

    audio, rate = stempeg.read_stems(str(path), dtype=np.float32)
    stems = [audio[STEM_MP4_ORDER.index(name)].T for name in STEMS]
    return np.stack([stem_blocks.to_layout(s, rate=int(rate), config=config, path=path) for s in stems])


def _read_track(path: pathlib.Path, config: stem_blocks.StemBlocksConfig) -> np.ndarray:
    if path.is_file():
        return _read_stem_mp4(path, config)
    stems, _ = stem_blocks.read_stems(path, config, required=STEMS)
    return stems


def check_tracks(splits: dict[str, list[pathlib.Path]]) -> dict[str, float]:
    """Checks every WAV track from its headers (stems present, equal rates and lengths).

    Returns:
        Seconds of audio per split (WAV layout; 0 for ``.stem.mp4`` files, read later).
    """
    from bleedjax.streaming import SessionReader

    seconds = {}
    for name, tracks in splits.items():
        total = 0.0
        for track in tracks:
            if track.is_file():
                continue
            for stem in STEMS:
                if not (track / f"{stem}.wav").is_file():
                    raise SessionError(f"{track / (stem + '.wav')}: missing stem {stem!r}")
            reader = SessionReader(track, min_tracks=1)
            total += reader.length / reader.sample_rate
        seconds[name] = total
    return seconds


class Musdb18hq(stem_blocks.StemBlocksBuilder):
    """Fixed-length blocks of the four MUSDB18-HQ stems (drums, bass, other, vocals)."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
    HOMEPAGE = "https://sigsep.github.io/datasets/musdb.html"

    def _split_generators(self, dl_manager):
        root = stem_blocks.check_manual_dir(dl_manager.manual_dir)
        splits = find_tracks(root)
        seconds = check_tracks(splits)
        stem_blocks.record_sources(self.info, root, splits, seconds)
        return {name: self._generate_examples(tracks) for name, tracks in splits.items()}

    def _generate_examples(self, tracks):
        for track in tracks:
            stems = _read_track(track, self.builder_config)
            yield from stem_blocks.blocks(_track_name(track), stems, STEMS, self.builder_config)
