"""What the streaming writers report: the samples they clip in PCM files, per writer and per
method, carried back with the result rather than through state of the module."""

import pathlib

import numpy as np
import pytest
import soundfile as sf

from bleedjax import dictionary, methods, streaming

RATE = 16000


def write_session(folder: pathlib.Path, subtypes=("PCM_16", "PCM_16", "PCM_16")) -> pathlib.Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, subtype in enumerate(subtypes):
        sf.write(folder / f"mic{i}.wav", rng.standard_normal(RATE) * 0.1, RATE, subtype=subtype)
    return folder


def test_each_writer_counts_what_it_clips_in_its_own_pcm_files(tmp_path):
    """Two writers of one session in one process: each counts its own files' samples beyond full
    scale, in every write, and only in integer formats (a float file keeps them)."""
    reader = streaming.SessionReader(write_session(tmp_path / "s", ("PCM_16", "PCM_24", "FLOAT")))
    loud, quiet = streaming.TrackWriter(reader, tmp_path / "loud"), streaming.TrackWriter(reader, tmp_path / "quiet")
    samples = np.zeros((3, RATE))
    samples[:, :10] = 1.5
    samples[1, 10:13] = -2.0
    with streaming.committed(loud), streaming.committed(quiet):
        loud.write(samples[:, :5])
        quiet.write(samples[:, :5] / 2)
        loud.write(samples[:, 5:])
        quiet.write(samples[:, 5:] / 2)
    assert loud.clipped == {"mic0.wav": 10, "mic1.wav": 13} and quiet.clipped == {}
    assert sf.read(tmp_path / "loud" / "mic2.wav")[0][:10].min() == 1.5


@pytest.mark.parametrize("name", ["spectral-subtraction", "kamir", "kam-nmf", "differentiable"])
def test_every_streamed_method_returns_the_samples_it_clipped(tmp_path, monkeypatch, name):
    """Every sample written is 1.5: each cleaned PCM file clips all of its samples, and the
    method's ``run_long`` returns those counts (kam-nmf's interference files, also clipped, are
    not cleaned tracks and do not count)."""
    write = streaming.TrackWriter.write
    monkeypatch.setattr(streaming.TrackWriter, "write",
                        lambda self, samples: write(self, np.full(np.shape(samples), 1.5)))
    session = write_session(tmp_path / "s")
    method = methods.get_method(name)
    config = method.default_config(None)
    if "dictionary" in config:
        bins = config.n_fft // 2 + 1
        learned = dictionary.Dictionary(np.full((bins, 2), 1.0 / bins, np.float32), RATE, config.n_fft, config.hop)
        dictionary.save(learned, tmp_path / "dict.npz")
        config.dictionary = str(tmp_path / "dict.npz")
    names = ["mic0.wav", "mic1.wav", "mic2.wav"]
    result = method.run_long(session, tmp_path / "out", config, names, False, False, None)
    assert result.clipped == dict.fromkeys(names, RATE)
