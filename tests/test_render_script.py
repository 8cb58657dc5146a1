"""The humanised MIDI writer of ``scripts/render_demo_audio.py`` (the rendered unison desks): the
bytes are a valid one-track MIDI file that carries the score's notes with the player's own,
seeded deviations. The rendering itself needs music21 and FluidSynth and is not tested here."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "render_demo_audio.py"


@pytest.fixture(scope="module")
def render():
    spec = importlib.util.spec_from_file_location("render_demo_audio", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def parse(data: bytes):
    """``(division, [(tick, status, data bytes)])`` of a format-0 file without running status."""
    assert data[:4] == b"MThd" and int.from_bytes(data[4:8], "big") == 6
    assert int.from_bytes(data[8:10], "big") == 0 and int.from_bytes(data[10:12], "big") == 1
    division = int.from_bytes(data[12:14], "big")
    assert data[14:18] == b"MTrk"
    end = 22 + int.from_bytes(data[18:22], "big")
    assert end == len(data)
    position, tick, events = 22, 0, []
    while position < end:
        delta = 0
        while True:
            byte = data[position]
            position += 1
            delta = (delta << 7) | (byte & 0x7F)
            if byte < 0x80:
                break
        tick += delta
        status = data[position]
        if status == 0xFF:
            length = data[position + 2]
            events.append((tick, status, data[position + 1 : position + 3 + length]))
            position += 3 + length
        else:
            size = 2 if status & 0xF0 in (0x80, 0x90, 0xB0, 0xE0) else 1
            events.append((tick, status, data[position + 1 : position + 1 + size]))
            position += 1 + size
    assert events[-1][1:] == (0xFF, b"\x2f\x00")
    return division, events


def test_variable_length_quantities(render):
    assert render._variable_length(0) == b"\x00"
    assert render._variable_length(0x7F) == b"\x7f"
    assert render._variable_length(0x80) == b"\x81\x00"
    assert render._variable_length(0x0FFFFFFF) == b"\xff\xff\xff\x7f"


def test_humanised_midi_carries_the_notes_with_seeded_deviations(render, tmp_path):
    bpm, seconds_per_quarter = 150.0, 0.4
    # A repeated pitch, a chord (two notes at one onset) and a long held note.
    events = [render.NoteEvent(float(k), 1.0, 60 + (k % 3 == 0) * 7, 80) for k in range(120)]
    events += [render.NoteEvent(120.0, 2.0, 64, 80), render.NoteEvent(120.0, 2.0, 67, 80)]
    player = render.Humanise(seed=3, onset_ms=15.0, cents=6.0, velocity=6.0, modwheel=30)
    path = tmp_path / "player.mid"
    render.write_humanised_midi(events, 41, bpm, player, path)
    division, parsed = parse(path.read_bytes())
    ticks_per_second = division / seconds_per_quarter
    head = [(status, data) for _, status, data in parsed[:3]]
    assert head == [(0xFF, b"\x51\x03" + (400000).to_bytes(3, "big")), (0xC0, bytes([41])), (0xB0, bytes([1, 30]))]

    ons = [(tick, data[0], data[1]) for tick, status, data in parsed if status == 0x90]
    offs = [(tick, data[0]) for tick, status, data in parsed if status == 0x80]
    bends = [(tick, data[0] | data[1] << 7) for tick, status, data in parsed if status == 0xE0]
    assert len(ons) == len(offs) == len(events) and len(bends) == len(events)
    assert sorted(n for _, n, _ in ons) == sorted(e.midi for e in events)

    # Onsets: one shift per onset (the chord's notes move together), about 15 ms apart from the score.
    written = {tick: n for tick, n, _ in ons}
    shifts = np.array([tick / ticks_per_second - k * seconds_per_quarter for tick, k in zip(sorted(written), range(121))])
    assert 8.0 < 1e3 * shifts.std() < 22.0 and abs(1e3 * shifts.mean()) < 5.0
    chord = [tick for tick, n, _ in ons if n in (64, 67) and tick > 119 * seconds_per_quarter * ticks_per_second]
    assert len(chord) == 2 and chord[0] == chord[1]
    # Intonation: pitch bends around the centre, 6 cents = 246 units of ±8192 per ±200 cents.
    cents = (np.array([value for _, value in bends]) - 8192) / 8192 * 200
    assert 3.0 < cents.std() < 10.0 and np.all(np.abs(cents) < 40)
    velocities = np.array([v for _, _, v in ons])
    assert 2.0 < velocities.std() < 12.0 and velocities.min() >= 1 and velocities.max() <= 127
    # Every note ends after it starts, and before the next onset of its pitch.
    for pitch in {n for _, n, _ in ons}:
        starts = sorted(tick for tick, n, _ in ons if n == pitch)
        ends = sorted(tick for tick, n in offs if n == pitch)
        assert all(start < end for start, end in zip(starts, ends))
        assert all(end <= later for end, later in zip(ends, starts[1:]))

    # The seed decides everything: the same player writes the same bytes, another does not.
    again, other = tmp_path / "again.mid", tmp_path / "other.mid"
    render.write_humanised_midi(events, 41, bpm, player, again)
    render.write_humanised_midi(events, 41, bpm, render.Humanise(seed=4, modwheel=30), other)
    assert again.read_bytes() == path.read_bytes() and other.read_bytes() != path.read_bytes()
