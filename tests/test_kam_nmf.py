"""KAM + NMF: a cough on a music loop, dictionaries, simulated interference and the CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from bleedjax import cli, dictionary, signal
from bleedjax.methods import kam_nmf
from bleedjax.simulate_interference import simulate_interference

RATE = 22050
N_FFT, HOP = 2048, 512


def run(*args) -> int:
    return cli.main([str(a) for a in args])


def music_loop(seconds: int) -> np.ndarray:
    """A stationary loop: four Hann-windowed notes of 0.25 s, repeated every second."""
    t = np.arange(RATE // 4) / RATE
    notes = [0.2 * np.sin(2 * np.pi * f * t) * np.hanning(len(t)) for f in (220.0, 277.2, 329.6, 440.0)]
    return np.tile(np.concatenate(notes), seconds).astype(np.float32)


@pytest.fixture(scope="module")
def cough(shared_data):
    audio, rate = sf.read(shared_data / "interference" / "cough.flac", dtype="float32")
    assert rate == RATE
    return audio


def test_cough_on_a_music_loop_drops_by_10_db(cough):
    # The dictionary never sees the cough under test: it learns from the file after 3 s.
    learned = dictionary.learn([cough[3 * RATE :]], RATE, components=16, iterations=50, key=jax.random.key(0))
    music = music_loop(6)
    event = cough[RATE : int(1.6 * RATE)]
    start = int(3.1 * RATE)
    noise = np.zeros_like(music)
    noise[start : start + len(event)] = event
    noise *= np.sqrt(np.sum(music[start : start + len(event)] ** 2) / np.sum(event**2))  # 0 dB where it sounds

    settings = kam_nmf.Settings(music_components=8, k=5, min_separation=20)
    mixture = jnp.asarray(music + noise)
    V = jnp.abs(signal.stft(mixture, n_fft=N_FFT, hop=HOP))
    soft_mask = jax.jit(kam_nmf.soft_mask, static_argnums=2)  # as reduce_track runs it
    gain, share, _ = soft_mask(V / V.max(), jnp.asarray(learned.W), settings, jnp.ones(V.shape[1]))

    # The gain acts linearly on the STFT, so the interference left in the output is exactly the
    # gain applied to the interference alone (and likewise for the music); reduce_track returns
    # istft(gain * STFT(mixture)).
    def through(x):
        return np.asarray(signal.istft(gain * signal.stft(jnp.asarray(x), n_fft=N_FFT, hop=HOP),
                                       length=len(x), n_fft=N_FFT, hop=HOP))

    drop_db = 10 * np.log10(np.sum(noise**2) / np.sum(through(noise) ** 2))
    music_sdr = 10 * np.log10(np.sum(music**2) / np.sum((through(music) - music) ** 2))
    assert drop_db >= 10.0, drop_db
    assert music_sdr >= 20.0, music_sdr
    frames = np.arange(V.shape[1]) * HOP
    inside = (frames >= start) & (frames < start + len(event))
    share = np.asarray(share)
    assert share[inside].max() > 0.5 and share[frames < start - N_FFT].max() < settings.detection_threshold


@pytest.mark.parametrize("variant", ["nmf", "kam"])
def test_ablations_run_and_split_the_input(variant):
    loop = music_loop(2)
    audio = jnp.asarray(loop + 0.01 * np.random.default_rng(0).standard_normal(len(loop)).astype(np.float32))
    W = jnp.asarray(np.random.default_rng(1).random((N_FFT // 2 + 1, 4)), jnp.float32)
    settings = kam_nmf.Settings(variant=variant, music_components=4, nmf_iterations=10, k=3, min_separation=5)
    result = kam_nmf.reduce_tracks(audio[None], W, settings, jnp.asarray([len(loop) - 100]))
    assert np.all(np.isfinite(result.cleaned))
    np.testing.assert_allclose(result.cleaned + result.interference, audio[None], atol=1e-6)


def test_a_padded_track_is_cleaned_as_it_is_alone(cough):
    """A track padded into a batch with a longer one: the NMF starts from the same factors on its
    frames, and the inverse STFT leaves out the padded STFT's extra frames (hop < n_fft / 2)."""
    loop = music_loop(2)[: 2 * RATE - 700]
    audio = loop + 0.5 * cough[: len(loop)]
    W = jnp.asarray(np.random.default_rng(1).random((N_FFT // 2 + 1, 4)), jnp.float32)
    settings = kam_nmf.Settings(music_components=4, nmf_iterations=10, k=3, min_separation=5)
    alone = kam_nmf.reduce_track(jnp.asarray(audio), W, settings)
    longer = np.pad(audio, (0, 3000))
    batch = kam_nmf.reduce_tracks(jnp.stack([jnp.asarray(longer), jnp.asarray(np.pad(audio, (0, 3000)))]), W, settings,
                                  jnp.asarray([len(longer), len(audio)]))
    np.testing.assert_allclose(np.asarray(batch.cleaned[1, : len(audio)]), np.asarray(alone.cleaned), atol=1e-5)
    np.testing.assert_allclose(np.asarray(batch.corruption[1, : alone.corruption.shape[0]]), np.asarray(alone.corruption), atol=1e-5)


def test_settings_refuse_more_neighbours_than_the_median_can_take():
    with pytest.raises(ValueError, match="at most"):
        kam_nmf.Settings(k=100000)
    with pytest.raises(ValueError, match="at most"):
        kam_nmf.Settings(k_candidates=(3, 500))
    with pytest.raises(ValueError, match="frames of the track"):
        kam_nmf.reduce_track(jnp.zeros(RATE // 4), jnp.ones((N_FFT // 2 + 1, 2)), kam_nmf.Settings(k=60))


def test_dictionary_round_trip_and_errors(tmp_path, shared_data):
    files = [shared_data / "interference" / "knock-1.flac"]
    learned = dictionary.learn_from_files(files, components=4, iterations=20)
    assert learned.W.shape == (N_FFT // 2 + 1, 4) and learned.sample_rate == RATE
    np.testing.assert_allclose(learned.W.sum(axis=0), 1.0, rtol=1e-5)
    path = tmp_path / "d.npz"
    dictionary.save(learned, path)
    loaded = dictionary.load(path)
    np.testing.assert_array_equal(loaded.W, learned.W)
    assert (loaded.n_fft, loaded.hop, loaded.sources) == (N_FFT, HOP, ("knock-1.flac",))
    with pytest.raises(ValueError, match="exists already"):
        dictionary.save(learned, path)
    with pytest.raises(ValueError, match="no interference files"):
        dictionary.read_mono([])
    with pytest.raises(ValueError, match="1025 frequency bins, but n_fft=1024 needs 513"):
        loaded.check(RATE, 1024)
    with pytest.raises(ValueError, match="learned at 22050 Hz, but the audio is at 44100 Hz"):
        loaded.check(44100, N_FFT)
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        dictionary.learn([np.ones(RATE, np.float32)], RATE, components=2, iterations=-5, key=jax.random.key(0))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a dictionary"):
        dictionary.load(tmp_path / "bad.npz")
    sf.write(tmp_path / "noise.wav", np.zeros(100), RATE)
    with pytest.raises(ValueError, match=r"not an .npz archive at all\); make one with `bleedjax learn-dictionary"):
        dictionary.load(tmp_path / "noise.wav")


def test_simulate_interference_snr(tmp_path, shared_data):
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "loop.wav", music_loop(4), RATE, subtype="FLOAT")
    noise = [shared_data / "interference" / name for name in ("clap.flac", "knock-2.flac")]
    truth = simulate_interference(music, noise, tmp_path / "sim", snr_db=-3.0, events=2, seed=3)
    events = truth["tracks"]["loop.wav"]["events"]
    assert len(events) == 2 and {e["file"] for e in events} <= {"clap.flac", "knock-2.flac"}
    reference, _ = sf.read(tmp_path / "sim" / "references" / "loop.wav", dtype="float64")
    interference, _ = sf.read(tmp_path / "sim" / "interference" / "loop.wav", dtype="float64")
    mixture, _ = sf.read(tmp_path / "sim" / "session" / "loop.wav", dtype="float64")
    np.testing.assert_allclose(mixture, reference + interference, atol=1e-6)
    covered = np.zeros(len(reference), bool)
    for event in events:
        start = round(event["start_s"] * RATE)
        covered[start : start + round(event["length_s"] * RATE)] = True
    snr = 10 * np.log10(np.sum(reference[covered] ** 2) / np.sum(interference[covered] ** 2))
    assert abs(snr - -3.0) < 1e-3
    assert json.loads((tmp_path / "sim" / "truth.json").read_text())["snr_db"] == -3.0
    with pytest.raises(ValueError, match="exists already"):
        simulate_interference(music, noise, tmp_path / "sim")
    with pytest.raises(ValueError, match="no interference files"):
        simulate_interference(music, [], tmp_path / "sim2")
    sf.write(music / "loop.wav", music_loop(1), 44100)
    with pytest.raises(ValueError, match="differs from the music"):
        simulate_interference(music, noise, tmp_path / "sim3")
    with pytest.raises(ValueError, match="finite"):
        simulate_interference(music, noise, tmp_path / "sim4", snr_db=float("nan"))


def test_simulated_interference_is_scaled_not_clipped(tmp_path, shared_data):
    """Loud music plus a clap at -6 dB would pass full scale: one gain brings the session to a
    0.9 peak and keeps session = references + interference."""
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "loop.wav", music_loop(2) * 0.99 / music_loop(2).max(), RATE, subtype="PCM_16")
    truth = simulate_interference(music, [shared_data / "interference" / "clap.flac"], tmp_path / "sim",
                                  snr_db=-6.0, events=2, seed=0)
    read = {name: sf.read(tmp_path / "sim" / name / "loop.wav", dtype="float64")[0]
            for name in ("session", "references", "interference")}
    assert 0.89 < np.abs(read["session"]).max() <= 0.9 + 1e-4 and truth["gain"] < 1.0
    np.testing.assert_allclose(read["session"], read["references"] + read["interference"], atol=1e-4)


def test_cli_end_to_end(tmp_path, shared_data, capsys):
    noise = shared_data / "interference"
    dict_path = tmp_path / "d.npz"
    assert run("learn-dictionary", noise / "cough.flac", "--out", dict_path, "--components", 8,
               "--iterations", 30) == 0
    assert run("learn-dictionary", noise / "cough.flac", "--out", dict_path) == 2
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "loop.wav", music_loop(3), RATE, subtype="FLOAT")
    assert run("simulate-interference", music, noise / "knock-1.flac", "--out", tmp_path / "sim",
               "--snr", 0, "--events", 1, "--seed", 1) == 0
    session = tmp_path / "sim" / "session"
    out = tmp_path / "out"
    common = ("--set", "music_components=4", "--set", "nmf_iterations=20", "--set", "min_separation=10")
    assert run("reduce", session, "--out", out, "--method", "kam-nmf", "--dictionary", dict_path, *common) == 0
    assert sorted(p.name for p in out.iterdir()) == ["bleed.json", "bleed.npz", "interference", "loop.wav"]
    cleaned, _ = sf.read(out / "loop.wav")
    removed, _ = sf.read(out / "interference" / "loop.wav")
    mixture, _ = sf.read(session / "loop.wav")
    np.testing.assert_allclose(cleaned + removed, mixture, atol=1e-5)
    assert json.loads((out / "bleed.json").read_text())["config"]["dictionary"] == str(dict_path)
    assert run("reduce", session, "--out", out, "--method", "kam-nmf", "--dictionary", dict_path) == 2
    assert "exists already" in capsys.readouterr().err
    auto = tmp_path / "auto"
    assert run("reduce", session, "--out", auto, "--method", "kam-nmf", "--dictionary", dict_path, *common,
               "--set", "auto_k=True", "--set", "k_candidates=(3, 5, 7)") == 0
    assert int(np.load(auto / "bleed.npz")["k"][0]) in (3, 5, 7)
    assert json.loads((auto / "bleed.json").read_text())["config"]["k_candidates"] == [3, 5, 7]

    bad = [
        (("--method", "kam-nmf"), "needs an interference dictionary"),
        (("--method", "kamir", "--dictionary", dict_path), "--dictionary is for --method kam-nmf"),
        (("--method", "kam-nmf", "--dictionary", dict_path, "--set", "n_fft=1024"), "needs 513"),
        (("--method", "spectral-subtraction"), "needs at least 2"),
        (("--method", "kam-nmf", "--dictionary", dict_path, "--set", "k_candidates=()"), "k_candidates must"),
    ]
    for args, message in bad:
        assert run("reduce", session, "--out", tmp_path / "never", *args) == 2
        assert message in capsys.readouterr().err
    sf.write(music / "loop.wav", music_loop(1), 44100, subtype="FLOAT")
    assert run("reduce", music, "--out", tmp_path / "never", "--method", "kam-nmf", "--dictionary", dict_path) == 2
    assert "learned at 22050 Hz, but the audio is at 44100 Hz" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
