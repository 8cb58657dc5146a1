"""TFDS stem builders on fake trees in the real layouts and on the real PHENICX excerpt."""

import importlib.util
import shutil

import numpy as np
import pytest
import soundfile as sf
from scipy import signal as scipy_signal

from bleedjax.data import datasets, fake_trees, multitrack_stems, musdb18hq, stem_blocks
from bleedjax.sessions import SessionError

BLOCK = 0.25


def source(data_dir, builder, split, **settings):
    dataset = datasets.get_builder(builder, data_dir=data_dir, **settings)
    return dataset, dataset.as_data_source(split=split)


def by_key(examples):
    return {(e["track"].decode() if isinstance(e["track"], bytes) else e["track"], int(e["offset"])): e
            for e in examples}


def test_multitrack_stems_blocks_equal_the_files(tmp_path):
    root = fake_trees.write_sessions(tmp_path / "stems", sessions=2, stems=3, seconds=1.1, sample_rate=8000)
    datasets.prepare("multitrack_stems", manual_dir=root, data_dir=tmp_path / "tfds",
                     sample_rate=8000, block_seconds=BLOCK)
    dataset, train = source(tmp_path / "tfds", "multitrack_stems", "train", sample_rate=8000,
                            block_seconds=BLOCK)
    assert len(train) == 2 * 4  # 1.1 s -> four 0.25 s blocks per session, the rest dropped
    examples = by_key(train[i] for i in range(len(train)))
    assert set(examples) == {(f"session_{k}", o) for k in range(2) for o in (0, 2000, 4000, 6000)}
    for (track, offset), example in examples.items():
        files = [sf.read(root / track / f"stem_{m}.wav", dtype="int16")[0] for m in range(3)]
        expected = np.stack(files)[:, None, offset : offset + 2000]
        np.testing.assert_array_equal(example["stems"], expected)
        assert [n.decode() for n in example["stem_names"]] == ["stem_0", "stem_1", "stem_2"]
        level = 10 * np.log10(np.mean((expected[:, 0] / 32768.0) ** 2, axis=-1))
        np.testing.assert_allclose(example["stem_rms_db"], level, atol=1e-3)
    assert dataset.info.metadata["tracks"] == {"train": ["session_0", "session_1"]}
    assert dataset.info.metadata["track_seconds"]["train"] == pytest.approx(2.2)


def test_multitrack_stems_resamples_and_downmixes(tmp_path):
    rate, seconds = 16000, 0.5
    t = np.arange(int(rate * seconds)) / rate
    folder = tmp_path / "stems" / "take"
    folder.mkdir(parents=True)
    left, right = 0.3 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 440 * t)
    sf.write(folder / "a.wav", np.stack([left, right], axis=1), rate, subtype="FLOAT")
    sf.write(folder / "b.wav", 0.2 * np.cos(2 * np.pi * 300 * t), rate, subtype="FLOAT")
    datasets.prepare("multitrack_stems", manual_dir=tmp_path / "stems", data_dir=tmp_path / "tfds",
                     sample_rate=8000, block_seconds=0.5)
    _, train = source(tmp_path / "tfds", "multitrack_stems", "train", sample_rate=8000, block_seconds=0.5)
    stems = stem_blocks.from_pcm16(train[0]["stems"])[:, 0]
    t8 = np.arange(4000) / 8000
    inner = slice(400, -400)  # away from the resampling filter's edge transients
    np.testing.assert_allclose(stems[0, inner], 0.2 * np.sin(2 * np.pi * 440 * t8)[inner], atol=2e-3)
    np.testing.assert_allclose(stems[1, inner], 0.2 * np.cos(2 * np.pi * 300 * t8)[inner], atol=2e-3)


@pytest.mark.parametrize("channels", [1, 2])
def test_musdb18hq_layout_splits_and_configs(tmp_path, channels):
    root = fake_trees.write_musdb(tmp_path / "musdb", seconds=0.6, sample_rate=44100)
    datasets.prepare("musdb18hq", manual_dir=root, data_dir=tmp_path / "tfds", sample_rate=22050,
                     channels=channels, block_seconds=BLOCK)
    dataset = datasets.get_builder("musdb18hq", data_dir=tmp_path / "tfds", sample_rate=22050,
                                   channels=channels, block_seconds=BLOCK)
    assert dataset.builder_config.name == f"22050hz-{'mono' if channels == 1 else 'stereo'}-250ms"
    assert {name: info.num_examples for name, info in dataset.info.splits.items()} == {
        "train": 2, "validation": 2, "test": 2}
    validation = dataset.as_data_source(split="validation")
    assert {e["track"] for e in validation} == {b"Actions - One Minute Smile"}
    example = by_key(validation)[("Actions - One Minute Smile", 5512)]
    assert example["stems"].shape == (4, channels, 5512)
    assert [n.decode() for n in example["stem_names"]] == ["drums", "bass", "other", "vocals"]
    vocals, rate = sf.read(root / "train" / "Actions - One Minute Smile" / "vocals.wav", dtype="float32")
    assert rate == 44100
    expected = scipy_signal.resample_poly(vocals.T, 1, 2, axis=-1)
    expected = expected.mean(axis=0, keepdims=True) if channels == 1 else expected
    np.testing.assert_allclose(stem_blocks.from_pcm16(example["stems"][3]), expected[:, 5512:11024],
                               atol=1.0 / 32768)


def test_musdb18hq_native_rate_is_lossless(tmp_path):
    root = fake_trees.write_musdb(tmp_path / "musdb", train=("A - B",), test=(), seconds=0.3)
    datasets.prepare("musdb18hq", manual_dir=root, data_dir=tmp_path / "tfds", sample_rate=44100,
                     channels=2, block_seconds=0.1)
    _, train = source(tmp_path / "tfds", "musdb18hq", "train", sample_rate=44100, channels=2,
                      block_seconds=0.1)
    example = by_key(train)[("A - B", 4410)]
    drums = sf.read(root / "train" / "A - B" / "drums.wav", dtype="int16")[0].T
    np.testing.assert_array_equal(example["stems"][0], drums[:, 4410:8820])


def test_official_validation_tracks():
    assert len(musdb18hq.VALIDATION_TRACKS) == len(set(musdb18hq.VALIDATION_TRACKS)) == 14
    assert "Traffic Experiment - Sirens" in musdb18hq.VALIDATION_TRACKS


def test_phenicx_excerpt_as_one_session(tmp_path, shared_data):
    folder = shared_data / "phenicx-anechoic-excerpt"
    datasets.prepare("multitrack_stems", manual_dir=folder, data_dir=tmp_path / "tfds",
                     sample_rate=44100, block_seconds=BLOCK)
    _, train = source(tmp_path / "tfds", "multitrack_stems", "train", sample_rate=44100,
                      block_seconds=BLOCK)
    assert len(train) == 4
    example = by_key(train)[("phenicx-anechoic-excerpt", 11025)]
    names = [n.decode() for n in example["stem_names"]]
    assert len(names) == 20 and names[0] == "bassoon1" and names[-1] == "violin4"
    cello = sf.read(folder / "cello.wav", dtype="int16")[0]
    np.testing.assert_array_equal(example["stems"][names.index("cello"), 0], cello[11025:22050])
    quiet = {n for n, level in zip(names, example["stem_rms_db"]) if level < -60}
    assert quiet == {"flute2", "trumpet1", "trumpet2"}  # nearly silent in this second (README)


def test_prepare_reuses_and_refuses_other_sources(tmp_path):
    first = fake_trees.write_sessions(tmp_path / "one", sessions=1, seconds=0.5)
    second = fake_trees.write_sessions(tmp_path / "two", sessions=1, seconds=0.5, seed=1)
    settings = {"data_dir": tmp_path / "tfds", "sample_rate": 8000, "block_seconds": BLOCK}
    assert datasets.prepare("multitrack_stems", manual_dir=first, **settings) == tmp_path / "tfds"
    info = tmp_path / "tfds" / "multitrack_stems" / "8000hz-mono-250ms" / "1.0.0" / "dataset_info.json"
    stamp = info.stat().st_mtime_ns
    assert datasets.prepare("multitrack_stems", manual_dir=first, **settings) == tmp_path / "tfds"
    assert info.stat().st_mtime_ns == stamp
    with pytest.raises(SessionError, match="prepared already from .*one"):
        datasets.prepare("multitrack_stems", manual_dir=second, **settings)
    datasets.prepare("multitrack_stems", manual_dir=second, overwrite=True, **settings)
    _, train = source(tmp_path / "tfds", "multitrack_stems", "train", sample_rate=8000, block_seconds=BLOCK)
    expected = sf.read(second / "session_0" / "stem_0.wav", dtype="int16")[0][:2000]
    np.testing.assert_array_equal(by_key(train)[("session_0", 0)]["stems"][0, 0], expected)
    # The same folder after its stems changed: --overwrite rebuilds (it used to keep the old data).
    fake_trees.write_sessions(tmp_path / "more", sessions=2, seconds=0.5, seed=2)
    shutil.copytree(tmp_path / "more" / "session_1", second / "session_1")
    datasets.prepare("multitrack_stems", manual_dir=second, overwrite=True, **settings)
    _, train = source(tmp_path / "tfds", "multitrack_stems", "train", sample_rate=8000, block_seconds=BLOCK)
    assert {key[0] for key in by_key(train)} == {"session_0", "session_1"}
    # A rebuild that fails keeps the dataset it would have replaced (it was deleted first), and
    # leaves no staging folder.
    bad = fake_trees.write_sessions(tmp_path / "bad", sessions=1, seconds=0.5, seed=3)
    fake_trees.write_session(tmp_path / "other_rate", ["x"], seconds=0.5, sample_rate=16000)
    shutil.move(tmp_path / "other_rate" / "x.wav", bad / "session_0" / "x.wav")
    with pytest.raises(SessionError, match="sample rate 16000 Hz differs"):
        datasets.prepare("multitrack_stems", manual_dir=bad, overwrite=True, **settings)
    _, train = source(tmp_path / "tfds", "multitrack_stems", "train", sample_rate=8000, block_seconds=BLOCK)
    assert {key[0] for key in by_key(train)} == {"session_0", "session_1"}
    assert sorted(p.name for p in (tmp_path / "tfds").iterdir()) == ["multitrack_stems"]


def test_missing_stem_names_the_file(tmp_path):
    root = fake_trees.write_musdb(tmp_path / "musdb", train=("A - B",), test=(), seconds=0.2)
    (root / "train" / "A - B" / "bass.wav").unlink()
    with pytest.raises(SessionError, match=r"A - B/bass\.wav: missing stem"):
        datasets.prepare("musdb18hq", manual_dir=root, data_dir=tmp_path / "tfds", block_seconds=0.1)


def test_mismatched_sample_rates_name_the_file(tmp_path):
    folder = fake_trees.write_session(tmp_path / "stems" / "take", ["a", "b"], seconds=0.5, sample_rate=8000)
    fake_trees.write_session(tmp_path / "other", ["c"], seconds=0.5, sample_rate=16000)
    shutil.move(tmp_path / "other" / "c.wav", folder / "c.wav")
    with pytest.raises(SessionError, match=r"take/c\.wav: sample rate 16000 Hz differs"):
        datasets.prepare("multitrack_stems", manual_dir=tmp_path / "stems", data_dir=tmp_path / "tfds",
                         sample_rate=8000, block_seconds=BLOCK)


def test_mismatched_lengths_name_the_file(tmp_path):
    root = fake_trees.write_musdb(tmp_path / "musdb", train=("A - B",), test=(), seconds=0.2)
    vocals = root / "train" / "A - B" / "vocals.wav"
    audio, rate = sf.read(vocals)
    sf.write(vocals, audio[:-10], rate, subtype="PCM_16")
    with pytest.raises(SessionError, match=r"vocals\.wav: length .* differs") as raised:
        datasets.prepare("musdb18hq", manual_dir=root, data_dir=tmp_path / "tfds", block_seconds=0.1)
    # `data prepare` has no --pad: the message once told the user to give it
    assert "--pad" not in str(raised.value) and "must be equally long" in str(raised.value)


def test_empty_and_wrong_manual_dirs_name_the_path(tmp_path):
    (tmp_path / "bare").mkdir()
    with pytest.raises(SessionError, match=f"{tmp_path / 'bare'}: manual_dir is empty"):
        datasets.prepare("multitrack_stems", manual_dir=tmp_path / "bare", data_dir=tmp_path / "tfds")
    short = fake_trees.write_sessions(tmp_path / "short", sessions=1, seconds=0.1)
    with pytest.raises(SessionError, match="no dataset prepared .* shorter than one block"):
        datasets.prepare("multitrack_stems", manual_dir=short, data_dir=tmp_path / "tfds", sample_rate=8000,
                         block_seconds=BLOCK)
    empty = tmp_path / "empty"
    (empty / "session").mkdir(parents=True)
    with pytest.raises(SessionError, match=f"{empty}: no stems found"):
        datasets.prepare("multitrack_stems", manual_dir=empty, data_dir=tmp_path / "tfds")
    with pytest.raises(SessionError, match=f"{tmp_path / 'nowhere'}: manual_dir is not a folder"):
        datasets.prepare("musdb18hq", manual_dir=tmp_path / "nowhere", data_dir=tmp_path / "tfds")
    with pytest.raises(SessionError, match=f"{empty}: not a MUSDB18-HQ folder"):
        datasets.prepare("musdb18hq", manual_dir=empty, data_dir=tmp_path / "tfds")
    (empty / "train").mkdir()
    with pytest.raises(SessionError, match=f"{empty / 'train'}: no track folders"):
        musdb18hq.find_tracks(empty)
    assert not (tmp_path / "tfds" / "musdb18hq").exists() or not any((tmp_path / "tfds" / "musdb18hq").rglob("*.array_record*"))


def test_split_folders_of_multitrack_stems(tmp_path):
    fake_trees.write_sessions(tmp_path / "stems" / "train", sessions=2, seconds=0.3)
    fake_trees.write_sessions(tmp_path / "stems" / "test", sessions=1, seconds=0.3)
    splits = multitrack_stems.find_sessions(tmp_path / "stems")
    assert {name: [p.name for p in folders] for name, folders in splits.items()} == {
        "train": ["session_0", "session_1"], "test": ["session_0"]}
    # Mixed layouts would leave stems out without a word (a session folder beside the splits, or
    # a typo such as valid/; loose stems beside session folders): refused, naming them.
    fake_trees.write_sessions(tmp_path / "stems" / "valid", sessions=1, seconds=0.3)
    with pytest.raises(SessionError, match=r"split folders \(train, test\) .* left out: .*valid"):
        multitrack_stems.find_sessions(tmp_path / "stems")
    loose = fake_trees.write_sessions(tmp_path / "loose", sessions=1, seconds=0.3)
    shutil.copy(loose / "session_0" / "stem_0.wav", loose / "stray.wav")
    with pytest.raises(SessionError, match="holds stems itself .* left out: session_0"):
        multitrack_stems.find_sessions(loose)


@pytest.mark.skipif(importlib.util.find_spec("stempeg") is not None, reason="a decoder is installed")
def test_stem_mp4_without_decoder_says_so(tmp_path):
    track = tmp_path / "musdb" / "train" / "A - B.stem.mp4"
    track.parent.mkdir(parents=True)
    track.write_bytes(b"not decoded")
    with pytest.raises(SessionError, match=r"A - B\.stem\.mp4: .* needs the optional decoder stempeg"):
        datasets.prepare("musdb18hq", manual_dir=tmp_path / "musdb", data_dir=tmp_path / "tfds")


def test_configs_unpickle_as_the_listed_objects():
    """Grain worker processes unpickle the data source; TFDS accepts a standard config only as
    the object listed in BUILDER_CONFIGS."""
    import pickle

    from bleedjax.data import rir_bank

    standard = stem_blocks.make_config(22050, 1, 10.0)
    assert standard in multitrack_stems.MultitrackStems.BUILDER_CONFIGS
    assert pickle.loads(pickle.dumps(standard)) is standard
    assert pickle.loads(pickle.dumps(rir_bank.DEFAULT_CONFIG)) is rir_bank.DEFAULT_CONFIG
    custom = stem_blocks.make_config(8000, 2, 0.5)
    assert pickle.loads(pickle.dumps(custom)).name == custom.name == "8000hz-stereo-500ms"


def test_builders_of_unprepared_datasets_leave_no_temporary_folders(tmp_path, monkeypatch):
    """TFDS makes a temporary folder for every builder whose dataset is not prepared yet (its
    public-bucket lookup); bleedjax's local builders skip that lookup."""
    import tempfile

    from bleedjax.data import rir_bank

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    for name in datasets.BUILDERS:
        builder = datasets.get_builder(name, data_dir=tmp_path / "tfds", sample_rate=8000, block_seconds=0.5)
        assert not builder.is_prepared()
    rir_bank.RirBank(config=rir_bank.DEFAULT_CONFIG, data_dir=str(tmp_path / "tfds"))
    assert not list(scratch.iterdir())


def test_bucket_data_dirs_stay_urls(tmp_path, monkeypatch):
    """`gs://bucket/tfds` went through pathlib, which made it a local folder named `gs:` (the
    pod recipe's prepare wrote to the workstation's disk and every worker then failed)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert datasets.resolve_data_dir("gs://my-bucket/tfds") == "gs://my-bucket/tfds"
    assert datasets.resolve_data_dir("~/tfds") == str(tmp_path / "tfds")
    assert datasets.resolve_data_dir("") is None
