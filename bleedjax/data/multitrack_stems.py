"""TFDS builder ``multitrack_stems``: any folder of sessions, each a folder of one file per stem.

Accepted ``manual_dir`` layouts (WAV or FLAC; every file of a session is one stem, a stereo file
is one stereo stem)::

    MANUAL_DIR/<session>/<stem>.wav                  all sessions in split "train"
    MANUAL_DIR/{train,validation,test}/<session>/... one split per folder
    MANUAL_DIR/<stem>.wav                            the folder itself is one session ("train")

The project's rendered stems and ``../shared/data/phenicx-anechoic-excerpt`` are examples of the
last layout. Examples are fixed-length blocks (:mod:`bleedjax.data.stem_blocks`); sessions may have
any number of stems, the pipeline picks ``num_tracks`` of them per example.
"""

from __future__ import annotations

import os
import pathlib

from bleedjax.data import stem_blocks
from bleedjax.sessions import SessionError, audio_files

SPLIT_FOLDERS = ("train", "validation", "test")


def _sessions_in(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_sessions(manual_dir: str | os.PathLike) -> dict[str, list[pathlib.Path]]:
    """Split name -> session folders, for the layouts in the module docstring.

    Raises:
        SessionError: naming the folder, when it is missing or holds no audio, or mixes layouts
            so that some stems would be left out (loose stems beside session folders, folders
            beside train/validation/test).
    """
    root = stem_blocks.check_manual_dir(manual_dir)
    split_dirs = [root / name for name in SPLIT_FOLDERS if (root / name).is_dir()]
    with_audio = [p for p in _sessions_in(root) if p.name not in SPLIT_FOLDERS and audio_files(p)]
    if split_dirs:
        beside = [p for p in _sessions_in(root) if p.name not in SPLIT_FOLDERS
                  and (audio_files(p) or any(audio_files(q) for q in _sessions_in(p)))]
        left_out = beside + [d for d in (root, *split_dirs) if audio_files(d)]
        if left_out:
            raise SessionError(
                f"{root}: has split folders ({', '.join(d.name for d in split_dirs)}) and stems outside "
                f"them, which would be left out: {', '.join(str(p) for p in left_out)}; move each session into "
                f"train/, validation/ or test/"
            )
        splits = {d.name: _sessions_in(d) for d in split_dirs}
    elif audio_files(root):
        if with_audio:
            raise SessionError(
                f"{root}: holds stems itself (one session) and session folders, which would be left out: "
                f"{', '.join(p.name for p in with_audio)}; put the loose stems in a session folder of their own"
            )
        splits = {"train": [root]}
    else:
        splits = {"train": _sessions_in(root)}
    splits = {name: [s for s in folders if audio_files(s)] for name, folders in splits.items()}
    splits = {name: folders for name, folders in splits.items() if folders}
    if not splits:
        raise SessionError(
            f"{root}: no stems found: expected WAV/FLAC files, or folders of them (one per session)"
        )
    return splits


class MultitrackStems(stem_blocks.StemBlocksBuilder):
    """Fixed-length blocks of multitrack stems from a local folder of sessions."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

    def _split_generators(self, dl_manager):
        from bleedjax.streaming import SessionReader

        root = stem_blocks.check_manual_dir(dl_manager.manual_dir)
        splits = find_sessions(root)
        readers = {name: [SessionReader(f, min_tracks=1) for f in folders] for name, folders in splits.items()}
        seconds = {name: sum(r.length / r.sample_rate for r in rs) for name, rs in readers.items()}
        stem_blocks.record_sources(self.info, root, splits, seconds)
        return {name: self._generate_examples(folders, root) for name, folders in splits.items()}

    def _generate_examples(self, folders, root):
        for folder in folders:
            track = stem_blocks.track_name(folder, root)
            stems, names = stem_blocks.read_stems(folder, self.builder_config)
            yield from stem_blocks.blocks(track, stems, names, self.builder_config)
