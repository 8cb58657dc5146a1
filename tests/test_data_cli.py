"""``bleedjax data prepare`` and ``bleedjax data inspect`` on a fake MUSDB18-HQ tree."""

import numpy as np
from matplotlib import image

from bleedjax import cli
from bleedjax.data import fake_trees


def run(*args) -> int:
    return cli.main([str(a) for a in args])


def test_prepare_then_inspect_musdb(tmp_path, capsys):
    root = fake_trees.write_musdb(tmp_path / "musdb", seconds=0.6)
    settings = ("--builder", "musdb18hq", "--data-dir", tmp_path / "tfds", "--sample-rate", 8000,
                "--block-seconds", 0.25)
    assert run("data", "prepare", "--manual-dir", root, *settings) == 0
    assert "musdb18hq prepared in" in capsys.readouterr().out
    png = tmp_path / "example.png"
    assert run("data", "inspect", *settings, "--split", "validation", "--out", png) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("  ")}
    # tracks, duration, blocks, duration in blocks, stems: 0.6 s per track, two 0.25 s blocks
    assert rows["train"] == ["1", "0:00:00.6", "2", "0:00:00.5", "4"]
    assert rows["validation"] == ["1", "0:00:00.6", "2", "0:00:00.5", "4"]
    assert rows["test"] == ["1", "0:00:00.6", "2", "0:00:00.5", "4"]
    picture = image.imread(png)
    assert picture.shape[0] > 300 and np.std(picture[..., :3]) > 0.05


def test_bad_manual_dir_is_one_line_naming_it(tmp_path, capsys):
    missing = tmp_path / "not-musdb"
    assert run("data", "prepare", "--builder", "musdb18hq", "--manual-dir", missing,
               "--data-dir", tmp_path / "tfds") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"{missing}: manual_dir is not a folder" in error
    assert run("data", "inspect", "--data-dir", tmp_path / "empty") == 2
    assert "not prepared" in capsys.readouterr().err
