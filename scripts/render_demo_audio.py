#!/usr/bin/env python3
"""Render the example audio bundled with bleedjax from public-domain scores.

This script is a development tool; it is not installed with the package and
nothing in ``bleedjax`` imports it.  It produces multitrack pieces, each as
one dry, mono, 16-bit FLAC stem per instrument, all stems of a piece having
exactly the same number of samples:

``demo``
    J. S. Bach, chorale "Ein feste Burg ist unser Gott" (BWV 80/8), music21
    corpus ``bach/bwv80.8``.  The four voices are played by flute, oboe, horn
    and cello; a fifth, sparse timpani part plays the bass notes that fall on
    the downbeats, moved into timpani range (see ``derive_timpani``).  Written to ``bleedjax/assets/demo/`` and used by
    ``bleedjax demo``.

``quartet``
    W. A. Mozart, String Quartet No. 17 in B-flat major, K. 458 ("The Hunt"),
    1st movement, music21 corpus ``mozart/k458/movement1``: violin1, violin2,
    viola, cello (the "similar instruments" hard case).  Written to
    ``benchmarks/audio/string_quartet/`` and used only by the benchmarks.

``unison``
    The same Mozart movement's 1st violin and viola parts, each played by two
    humanised players (``violin1_a``/``violin1_b``, ``viola_a``/``viola_b``):
    two desks in unison, the "similar instruments" case at its hardest, long
    enough (10 s) for phase to tell a desk partner from bleed.  Each player
    has its own seeded onset jitter, intonation (pitch bend per onset) and
    dynamics, and the ``b`` players more vibrato (modulation wheel); see
    ``Humanise``.  Written to ``benchmarks/audio/unison_desks/`` and used only
    by the benchmarks.

``training`` (not run by ``--piece all``)
    Eight other four-voice Bach chorales (``TRAINING_PIECES``), 30 s each at
    22.05 kHz, each with its own ensemble: the training data of the bundled
    t-UNet (``bleedjax/assets/tunet/README.md``), written to
    ``DIR/bwv10.7`` and so on.  Not committed.

Pipeline per piece: music21 loads the score (repeats expanded, ties merged),
every part becomes its own single-track MIDI file with an explicit General MIDI
program change (checked by reading the file back), the ``fluidsynth`` program
renders each MIDI file on its own with reverb and chorus switched off to a
32-bit float WAV, the stereo render is averaged to mono, trimmed or
zero-padded to the excerpt length (with a 10 ms fade-out at the cut), and ONE
gain common to all stems of the piece is applied so that the loudest stem
peaks at -1 dBFS (stems are not normalised individually, so the balance
between instruments is kept).  The result is written with ``soundfile``.

Prerequisites (Debian/Ubuntu)::

    apt-get install fluidsynth fluid-soundfont-gm
    pip install music21 soundfile numpy

The soundfont is ``/usr/share/sounds/sf2/FluidR3_GM.sf2`` from the Debian
package ``fluid-soundfont-gm`` (Fluid R3 GM by Frank Wen, MIT licence); pass
``--soundfont`` to use another file.

Usage (from the repository root)::

    python scripts/render_demo_audio.py --piece all

regenerates the three pieces in place with their default settings (demo: 15 s at
44.1 kHz; quartet: 15 s at 22.05 kHz; unison: 10 s at 22.05 kHz; together about 5 MB of FLAC).  ``--out DIR`` writes the stems of a
single piece directly into DIR (with ``--piece all``: into ``DIR/demo`` and
``DIR/string_quartet``).  The output is deterministic for a given
fluidsynth/soundfont/libsndfile installation.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")

PEAK_DBFS = -1.0  # peak of the loudest stem after the common gain
FADE_OUT_S = 0.010  # short fade at the cut to avoid a click
RENDER_GAIN = 0.2  # fluidsynth's own gain (its default); output is float
LOOKAHEAD_S = 1.0  # notes starting this long after the excerpt end are dropped

# Velocity for the usual dynamic marks; parts without dynamics use "mf".
DYNAMIC_VELOCITY = {
    "ppp": 30,
    "pp": 42,
    "p": 55,
    "mp": 68,
    "mf": 80,
    "f": 96,
    "ff": 110,
    "fff": 122,
}


@dataclass(frozen=True)
class Humanise:
    """One player's deviations from the score, drawn per onset (the notes of a chord move
    together) from a seeded generator: onset time (Gaussian, ``onset_ms`` standard deviation),
    intonation (``cents`` standard deviation, as a pitch bend before the onset), velocity
    (``velocity`` standard deviation), and a constant vibrato depth (``modwheel``, MIDI CC 1,
    which FluidSynth maps to its vibrato LFO).  Ensemble players are typically 10-50 ms apart at
    onsets and 5-20 cents apart in intonation."""

    seed: int
    onset_ms: float = 15.0
    cents: float = 6.0
    velocity: float = 6.0
    modwheel: int = 0


@dataclass(frozen=True)
class Stem:
    name: str  # output file stem, lower case
    program: int  # General MIDI program, 0-based (flute = 73)
    part_index: int | None  # index into score.parts; None for a derived part
    expected_part_name: str | None = None  # sanity check against the score
    humanise: Humanise | None = None  # None: the score as written


@dataclass(frozen=True)
class Piece:
    key: str
    corpus_path: str
    out_subdir: str  # relative to the repository root
    quarter_bpm: float  # playback tempo (the scores carry no usable tempo)
    sample_rate: int
    seconds: float
    stems: tuple[Stem, ...]
    timpani: dict = field(default_factory=dict)  # options for derive_timpani


PIECES = {
    "demo": Piece(
        key="demo",
        corpus_path="bach/bwv80.8",
        out_subdir="bleedjax/assets/demo",
        quarter_bpm=80.0,
        sample_rate=44100,
        seconds=15.0,
        stems=(
            Stem("flute", 73, 0, "Soprano"),
            Stem("oboe", 68, 1, "Alto"),
            Stem("horn", 60, 2, "Tenor"),
            Stem("cello", 42, 3, "Bass"),
            Stem("timpani", 47, None),
        ),
        # Sparse timpani: the bass notes that fall on the downbeat (beat 1 of
        # each 4/4 bar), moved by whole octaves into A2..G#3, one beat long.
        timpani={
            "source_part": 3,
            "pitch_classes": None,
            "low_midi": 45,
            "min_beat_strength": 1.0,
            "max_quarter_length": 1.0,
            "velocity": 100,
        },
    ),
    "quartet": Piece(
        key="quartet",
        corpus_path="mozart/k458/movement1",
        out_subdir="benchmarks/audio/string_quartet",
        quarter_bpm=150.0,  # 6/8 Allegro vivace assai, dotted quarter = 100
        sample_rate=22050,
        seconds=15.0,
        stems=(
            Stem("violin1", 40, 0, "1st Violin"),
            Stem("violin2", 40, 1, "2nd Violin"),
            Stem("viola", 41, 2, "Viola"),
            Stem("cello", 42, 3, "Cello"),
        ),
    ),
}

def unison_desks(piece: Piece, parts: tuple[str, ...], out_subdir: str, seconds: float) -> Piece:
    """``piece`` with each stem named in ``parts`` played by two humanised players,
    ``<name>_a`` and ``<name>_b`` (the ``b`` player with more vibrato), seeded 1, 2, 3, ... in
    that order: the same score, tempo and sample rate, desks in unison."""
    chosen = [stem for name in parts for stem in piece.stems if stem.name == name]
    players = [(stem, player, modwheel) for stem in chosen for player, modwheel in (("a", 0), ("b", 30))]
    return replace(
        piece, key="unison", out_subdir=out_subdir, seconds=seconds,
        stems=tuple(replace(stem, name=f"{stem.name}_{player}", humanise=Humanise(seed=seed, modwheel=modwheel))
                    for seed, (stem, player, modwheel) in enumerate(players, start=1)),
    )


PIECES["unison"] = unison_desks(PIECES["quartet"], ("violin1", "viola"), "benchmarks/audio/unison_desks", 10.0)


def chorale(bwv: str, programs: tuple[tuple[str, int], ...]) -> Piece:
    """A four-voice Bach chorale of the music21 corpus (``bach/bwv<bwv>``), soprano to bass
    played by ``programs`` (name, 0-based General MIDI program)."""
    voices = ("Soprano", "Alto", "Tenor", "Bass")
    return Piece(
        key=f"bwv{bwv}",
        corpus_path=f"bach/bwv{bwv}",
        out_subdir=f"bundled_stems/train/bwv{bwv}",
        quarter_bpm=80.0,
        sample_rate=22050,
        seconds=30.0,
        stems=tuple(Stem(name, program, i, voice) for i, ((name, program), voice) in enumerate(zip(programs, voices, strict=True))),
    )


# Training material of the bundled t-UNet (``--piece training``): chorales other than the demo's
# BWV 80/8, each with its own ensemble (strings, reeds, brass, voices, mixed), so that the demo
# chorale, the quartet and the real PHENICX stems stay held out.
TRAINING_PIECES = {
    piece.key: piece
    for piece in (
        chorale("10.7", (("violin", 40), ("viola", 41), ("cello", 42), ("contrabass", 43))),
        chorale("11.6", (("oboe", 68), ("clarinet", 71), ("englishhorn", 69), ("bassoon", 70))),
        chorale("111.6", (("trumpet", 56), ("horn", 60), ("trombone", 57), ("tuba", 58))),
        chorale("126.6", (("choir", 52), ("voice", 53), ("choir2", 52), ("voice2", 53))),
        chorale("119.9", (("flute", 73), ("violin", 40), ("clarinet", 71), ("cello", 42))),
        chorale("120.6", (("violin", 40), ("violin2", 40), ("viola", 41), ("bassoon", 70))),
        chorale("121.6", (("recorder", 74), ("oboe", 68), ("horn", 60), ("contrabass", 43))),
        chorale("123.6", (("soprano_sax", 64), ("alto_sax", 65), ("trombone", 57), ("cello", 42))),
    )
}


# --------------------------------------------------------------------------
# Score -> note lists
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteEvent:
    offset: float  # quarter lengths from the start of the piece
    duration: float  # quarter lengths
    midi: int
    velocity: int


def load_score(corpus_path: str):
    from music21 import corpus
    from music21.exceptions21 import Music21Exception

    score = corpus.parse(corpus_path)
    try:
        score = score.expandRepeats()
    except Music21Exception as exc:  # e.g. repeat.ExpanderException
        print(f"  note: repeats not expanded ({exc}); rendering as written")
    return score


def part_notes(part, max_offset: float) -> list[NoteEvent]:
    """All notes of ``part`` (ties merged, chords split) starting before ``max_offset``."""
    from music21 import chord, dynamics, note

    flat = part.stripTies().flatten()
    velocity = DYNAMIC_VELOCITY["mf"]
    events: list[NoteEvent] = []
    for el in flat:  # a flat stream iterates in offset order
        offset = float(el.offset)
        if isinstance(el, dynamics.Dynamic):
            velocity = DYNAMIC_VELOCITY.get(str(el.value), velocity)
            continue
        if not isinstance(el, (note.Note, chord.Chord)):
            continue
        dur = float(el.quarterLength)
        if dur <= 0 or offset >= max_offset:  # skip grace notes
            continue
        for p in el.pitches:
            events.append(NoteEvent(offset, dur, int(p.midi), velocity))
    return events


def derive_timpani(
    part,
    max_offset: float,
    *,
    source_part: int,
    pitch_classes,
    low_midi: int,
    min_beat_strength: float,
    max_quarter_length: float,
    velocity: int,
) -> list[NoteEvent]:
    """A sparse timpani line: a deterministic subset of the bass line.

    Keeps the bass notes that start on a strong beat (music21 ``beatStrength``
    >= ``min_beat_strength``: 1.0 keeps the downbeats only, 0.5 in 4/4 keeps
    beats 1 and 3) and, if ``pitch_classes`` is given, whose pitch class is one
    of them (a fixed tuning of the drums); transposes each by
    whole octaves into ``[low_midi, low_midi + 12)`` and shortens it to at most
    ``max_quarter_length``.
    """
    del source_part  # selected by the caller
    from music21 import pitch as m21pitch

    wanted = (
        None if pitch_classes is None else {m21pitch.Pitch(pc).pitchClass for pc in pitch_classes}
    )
    events: list[NoteEvent] = []
    tied = part.stripTies()
    for n in tied.recurse().notes:
        offset = float(n.getOffsetInHierarchy(tied))
        if offset >= max_offset or n.beatStrength < min_beat_strength:
            continue
        low = min(n.pitches, key=lambda p: p.midi)
        if wanted is not None and low.pitchClass not in wanted:
            continue
        midi = low_midi + (int(low.midi) - low_midi) % 12
        dur = min(float(n.quarterLength), max_quarter_length)
        events.append(NoteEvent(offset, dur, midi, velocity))
    events.sort(key=lambda e: (e.offset, e.midi))
    return events


# --------------------------------------------------------------------------
# MIDI writing (music21) and verification
# --------------------------------------------------------------------------


def write_midi(events: list[NoteEvent], program: int, quarter_bpm: float, path: Path) -> None:
    """One-track MIDI file: tempo, an explicit program change, the notes."""
    from music21 import chord, instrument, midi, note, stream, tempo

    inst = instrument.Instrument()
    inst.midiProgram = program  # set explicitly: never rely on a default piano
    inst.midiChannel = 0  # channel 1; never the GM percussion channel 10
    part = stream.Part()
    part.insert(0, inst)
    part.insert(0, tempo.MetronomeMark(number=quarter_bpm, referent=1.0))

    by_onset: dict[tuple[float, float, int], list[int]] = {}
    for e in events:
        by_onset.setdefault((e.offset, e.duration, e.velocity), []).append(e.midi)
    for (offset, dur, vel), pitches in sorted(by_onset.items()):
        pitches = sorted(set(pitches))
        el = note.Note(pitches[0]) if len(pitches) == 1 else chord.Chord(pitches)
        el.quarterLength = dur
        el.volume.velocity = vel
        part.insert(offset, el)

    mf = midi.translate.streamToMidiFile(part)
    mf.open(str(path), "wb")
    mf.write()
    mf.close()


def _variable_length(value: int) -> bytes:
    """A MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def write_humanised_midi(
    events: list[NoteEvent], program: int, quarter_bpm: float, humanise: Humanise, path: Path
) -> None:
    """One-track MIDI file (format 0, written byte by byte, since music21 has no pitch bend per
    note) of ``events`` played by one ``humanise``-d player: tempo, program, modulation wheel,
    then per onset a pitch bend (default range of ±2 semitones) and the notes.  A note ends at its
    jittered onset plus its written length, or just before the next onset of the same pitch."""
    rng = np.random.default_rng(humanise.seed)
    division = 960
    ticks_per_second = division * quarter_bpm / 60.0
    seconds_per_quarter = 60.0 / quarter_bpm
    onsets = sorted({e.offset for e in events})
    shift = dict(zip(onsets, rng.normal(0.0, humanise.onset_ms / 1000.0, len(onsets)), strict=True))
    bend = dict(zip(onsets, rng.normal(0.0, humanise.cents, len(onsets)), strict=True))
    played = sorted(
        ((max(0.0, e.offset * seconds_per_quarter + shift[e.offset]), e.duration * seconds_per_quarter, e)
         for e in events),
        key=lambda note: (note[0], note[2].midi),
    )
    messages = []  # (tick, order at equal ticks, bytes): note-offs, then bends, then note-ons
    for k, (start, length, e) in enumerate(played):
        later = [s for s, _, f in played[k + 1 :] if f.midi == e.midi and s > start]
        end = min(start + length, later[0] - 0.005) if later else start + length
        on = round(start * ticks_per_second)
        off = max(on + 1, round(end * ticks_per_second))
        value = int(np.clip(round(8192 + bend[e.offset] / 200.0 * 8192), 0, 16383))
        velocity = int(np.clip(round(e.velocity + rng.normal(0.0, humanise.velocity)), 1, 127))
        messages += [
            (on, 1, bytes([0xE0, value & 0x7F, value >> 7])),
            (on, 2, bytes([0x90, e.midi, velocity])),
            (off, 0, bytes([0x80, e.midi, 0])),
        ]
    tempo = round(60e6 / quarter_bpm).to_bytes(3, "big")
    body = b"\x00\xff\x51\x03" + tempo + b"\x00" + bytes([0xC0, program])
    body += b"\x00" + bytes([0xB0, 0x01, humanise.modwheel])
    last = 0
    for tick, _, message in sorted(messages, key=lambda m: m[:2]):
        body += _variable_length(tick - last) + message
        last = tick
    body += b"\x00\xff\x2f\x00"
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
    header += division.to_bytes(2, "big")
    path.write_bytes(header + b"MTrk" + len(body).to_bytes(4, "big") + body)


def midi_programs(path: Path) -> tuple[set[tuple[int, int]], set[int]]:
    """Read a MIDI file back: ({(channel, program)}, {channels with note-ons})."""
    from music21 import midi

    mf = midi.MidiFile()
    mf.open(str(path))
    mf.read()
    mf.close()
    programs, note_channels = set(), set()
    for track in mf.tracks:
        for ev in track.events:
            if ev.type == midi.ChannelVoiceMessages.PROGRAM_CHANGE:
                programs.add((ev.channel, ev.data))
            elif ev.type == midi.ChannelVoiceMessages.NOTE_ON and ev.velocity:
                note_channels.add(ev.channel)
    return programs, note_channels


def check_midi(path: Path, program: int) -> None:
    programs, note_channels = midi_programs(path)
    if not note_channels:
        raise RuntimeError(f"{path.name}: no notes")
    if 10 in note_channels:
        raise RuntimeError(f"{path.name}: notes on the GM percussion channel 10")
    for ch in note_channels:
        if {p for c, p in programs if c == ch} != {program}:
            raise RuntimeError(
                f"{path.name}: channel {ch} has programs {sorted(programs)}, expected {program}"
            )


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def render_midi(
    midi_path: Path, wav_path: Path, soundfont: Path, sample_rate: int, fluidsynth: str
) -> np.ndarray:
    cmd = [
        fluidsynth,
        "-n",
        "-i",
        "-q",
        "-R",
        "0",
        "-C",
        "0",  # dry: reverb and chorus off
        "-o",
        "synth.reverb.active=0",
        "-o",
        "synth.chorus.active=0",
        "-g",
        str(RENDER_GAIN),
        "-r",
        str(sample_rate),
        "-T",
        "wav",
        "-O",
        "float",
        "-F",
        str(wav_path),
        str(soundfont),
        str(midi_path),
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    audio, sr = sf.read(str(wav_path), dtype="float64", always_2d=True)
    if sr != sample_rate:
        raise RuntimeError(f"fluidsynth rendered at {sr} Hz, expected {sample_rate}")
    return audio.mean(axis=1)  # stereo -> mono


def fit_length(x: np.ndarray, n: int, sample_rate: int) -> np.ndarray:
    y = np.zeros(n)
    m = min(n, len(x))
    y[:m] = x[:m]
    nf = round(FADE_OUT_S * sample_rate)
    if nf > 0:
        y[n - nf :] *= 0.5 * (1.0 + np.cos(np.linspace(0.0, np.pi, nf)))
    return y


# --------------------------------------------------------------------------
# Stats
# --------------------------------------------------------------------------


def dbfs(v: float) -> float:
    return 20.0 * math.log10(v) if v > 0 else float("-inf")


def stem_stats(
    x: np.ndarray, sample_rate: int, frame_s: float = 0.05, silence_dbfs: float = -60.0
) -> dict:
    x = np.asarray(x, dtype=np.float64)
    hop = int(frame_s * sample_rate)
    nfr = len(x) // hop
    frames = x[: nfr * hop].reshape(nfr, hop)
    frame_rms = np.sqrt(np.mean(frames**2, axis=1))
    silent = frame_rms < 10 ** (silence_dbfs / 20)
    # Spectral centroid of the non-silent frames (Hann-windowed magnitude).
    win = np.hanning(hop)
    mag = np.abs(np.fft.rfft(frames[~silent] * win, axis=1))
    freqs = np.fft.rfftfreq(hop, 1.0 / sample_rate)
    centroid = float((mag * freqs).sum() / mag.sum()) if mag.size and mag.sum() > 0 else 0.0
    return {
        "seconds": len(x) / sample_rate,
        "peak_dbfs": dbfs(float(np.max(np.abs(x)))),
        "rms_dbfs": dbfs(float(np.sqrt(np.mean(x**2)))),
        "silent_frac": float(silent.mean()),
        "centroid_hz": centroid,
        "clipped": int(np.sum(np.abs(x) >= 32767 / 32768)),
    }


def print_stats(piece: Piece, out_dir: Path) -> None:
    print(
        f"  {'stem':<9} {'file':>9} {'seconds':>8} {'peak dBFS':>9} {'RMS dBFS':>9} "
        f"{'silent':>7} {'centroid':>9} clipped"
    )
    for stem in piece.stems:
        path = out_dir / f"{stem.name}.flac"
        x, sr = sf.read(str(path), dtype="float64")
        st = stem_stats(x, sr)
        print(
            f"  {stem.name:<9} {path.stat().st_size / 1e6:>7.3f}MB {st['seconds']:>8.3f} "
            f"{st['peak_dbfs']:>9.2f} {st['rms_dbfs']:>9.2f} {st['silent_frac']:>7.1%} "
            f"{st['centroid_hz']:>7.0f}Hz {st['clipped']:>7d}"
        )


# --------------------------------------------------------------------------


def render_piece(
    piece: Piece,
    out_dir: Path,
    soundfont: Path,
    fluidsynth: str,
    seconds: float | None,
    sample_rate: int | None,
    keep_tmp: bool,
) -> None:
    seconds = piece.seconds if seconds is None else seconds
    sample_rate = piece.sample_rate if sample_rate is None else sample_rate
    n = round(seconds * sample_rate)
    max_offset = (seconds + LOOKAHEAD_S) * piece.quarter_bpm / 60.0  # in quarter lengths

    print(
        f"[{piece.key}] {piece.corpus_path}: {seconds:g} s at {sample_rate} Hz, "
        f"quarter = {piece.quarter_bpm:g} bpm -> {out_dir}"
    )
    score = load_score(piece.corpus_path)
    parts = list(score.parts)

    tmp = Path(tempfile.mkdtemp(prefix=f"render-{piece.key}-"))
    try:
        rendered: dict[str, np.ndarray] = {}
        for stem in piece.stems:
            if stem.part_index is None:
                opts = dict(piece.timpani)
                events = derive_timpani(parts[opts["source_part"]], max_offset, **opts)
                source = f"derived from part {opts['source_part']}"
            else:
                part = parts[stem.part_index]
                if stem.expected_part_name and part.partName != stem.expected_part_name:
                    raise RuntimeError(
                        f"part {stem.part_index} is {part.partName!r}, "
                        f"expected {stem.expected_part_name!r}"
                    )
                events = part_notes(part, max_offset)
                source = f"part {stem.part_index} ({part.partName})"
            if not events:
                raise RuntimeError(f"{stem.name}: no notes in the excerpt")
            midi_path = tmp / f"{stem.name}.mid"
            if stem.humanise is None:
                write_midi(events, stem.program, piece.quarter_bpm, midi_path)
            else:
                write_humanised_midi(events, stem.program, piece.quarter_bpm, stem.humanise, midi_path)
            check_midi(midi_path, stem.program)
            audio = render_midi(
                midi_path, tmp / f"{stem.name}.wav", soundfont, sample_rate, fluidsynth
            )
            if np.max(np.abs(audio)) >= 0.99:
                raise RuntimeError(f"{stem.name}: render near full scale; lower RENDER_GAIN")
            rendered[stem.name] = fit_length(audio, n, sample_rate)
            print(
                f"  {stem.name:<9} GM program {stem.program:>3} (0-based), "
                f"{len(events):>3} notes, {source}"
            )

        peak = max(float(np.max(np.abs(x))) for x in rendered.values())
        if peak <= 0:
            raise RuntimeError("all stems are silent")
        gain = 10 ** (PEAK_DBFS / 20) / peak
        print(f"  common gain {dbfs(gain):+.2f} dB")
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, x in rendered.items():
            pcm = np.clip(np.round(x * gain * 32768.0), -32768, 32767).astype(np.int16)
            sf.write(
                str(out_dir / f"{name}.flac"),
                pcm,
                sample_rate,
                format="FLAC",
                subtype="PCM_16",
                compression_level=1.0,
            )
    finally:
        if keep_tmp:
            print(f"  intermediate MIDI/WAV files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_stats(piece, out_dir)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--piece", choices=["demo", "quartet", "unison", "all", "training"], default="all")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: the piece's place in the repository; "
        "with --piece all, DIR/demo, DIR/string_quartet and DIR/unison_desks; with --piece training, "
        "DIR/bwv10.7 and the other chorales)",
    )
    ap.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="excerpt length in seconds from the start (default: the piece's, 15 or 10)",
    )
    ap.add_argument(
        "--sample-rate", type=int, default=None, help="default: 44100 for demo, 22050 for the others"
    )
    ap.add_argument("--soundfont", type=Path, default=DEFAULT_SOUNDFONT)
    ap.add_argument("--fluidsynth", default="fluidsynth", help="fluidsynth executable")
    ap.add_argument("--keep-tmp", action="store_true", help="keep intermediate MIDI/WAV files")
    args = ap.parse_args(argv)

    if shutil.which(args.fluidsynth) is None:
        ap.error(f"{args.fluidsynth!r} not found; apt-get install fluidsynth")
    if not args.soundfont.is_file():
        ap.error(f"soundfont {args.soundfont} not found; apt-get install fluid-soundfont-gm")

    if args.piece == "training":
        pieces = TRAINING_PIECES
        keys = list(pieces)
    else:
        pieces = PIECES
        keys = list(pieces) if args.piece == "all" else [args.piece]
    for key in keys:
        piece = pieces[key]
        if args.out is None:
            out_dir = REPO_ROOT / piece.out_subdir
        elif args.piece in ("all", "training"):
            out_dir = args.out / Path(piece.out_subdir).name
        else:
            out_dir = args.out
        render_piece(
            piece,
            out_dir,
            args.soundfont,
            args.fluidsynth,
            args.seconds,
            args.sample_rate,
            args.keep_tmp,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
