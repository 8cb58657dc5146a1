"""``bleedjax reduce`` compiled as users compile it gives the suite's audio.

The suite compiles with XLA's legacy CPU emitters and LLVM at level 1, which compile faster
(:mod:`tests.xla_flags`); users run XLA's defaults. This test runs the CLI in a process with them and
compares its files with the suite's process, method by method, so that a program that XLA's
defaults compile wrongly fails. Measured on the 2-core machine (2026-12-07, the suite with both
flags): identical files for spectral subtraction, at most 2.2e-7 of a track's peak apart for the
t-UNet and KAMIR K4 and 6.1e-7 for the differentiable model (with the legacy emitters alone,
2026-12-06: identical, identical, 1.2e-7 and 9.9e-7). Each method compiles twice, from an empty
cache: all four took 55-68 s of the default run with a cold suite cache, so KAMIR and the differentiable model
(about 8 s each in the users' process alone) are compared in the heavy run, spectral subtraction
and the t-UNet (about 3 s each) in the default run.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from bleedjax import cli, demo
from tests import xla_flags

METHODS = [["spectral-subtraction", "tunet"], pytest.param(["kamir", "differentiable"], marks=pytest.mark.heavy)]
SECONDS = 4
"""The t-UNet needs 3.68 s."""

REDUCE_EACH = """import sys
from bleedjax import cli
session, out, *methods = sys.argv[1:]
for method in methods:
    assert cli.main(["reduce", session, "--method", method, "--out", f"{out}/{method}"]) == 0
"""


@pytest.mark.skipif(not xla_flags.uses_suite_codegen(), reason="the suite already compiles as users do")
@pytest.mark.parametrize("compared", METHODS, ids=["spectral-subtraction+tunet", "kamir+differentiable"])
def test_reduce_compiled_with_default_emitters_writes_the_suites_audio(tmp_path, compared):
    stems = tmp_path / "stems"
    stems.mkdir()
    for name in ["cello", "oboe", "horn"]:
        audio, rate = sf.read(demo.bundled_stems() / f"{name}.flac", dtype="float32")
        sf.write(stems / f"{name}.wav", audio[: SECONDS * rate], rate, subtype="FLOAT")
    assert cli.main(["simulate", str(stems), "--out", str(tmp_path / "sim"), "--bleed", "linear",
                     "--max-crosstalk-db", "-6", "--seed", "1"]) == 0
    session = tmp_path / "sim" / "session"
    for method in compared:
        assert cli.main(["reduce", str(session), "--method", method, "--out", str(tmp_path / "suite" / method)]) == 0

    env = os.environ | {"XLA_FLAGS": xla_flags.without_suite_codegen(), "BLEEDJAX_CACHE_DIR": str(tmp_path / "cache")}
    subprocess.run([sys.executable, "-c", REDUCE_EACH, str(session), str(tmp_path / "users"), *compared],
                   env=env, check=True, capture_output=True, timeout=600)

    for method in compared:
        names = sorted(p.name for p in (tmp_path / "suite" / method).glob("*.wav"))
        assert names == ["cello.wav", "horn.wav", "oboe.wav"]
        for name in names:
            suite = sf.read(tmp_path / "suite" / method / name, dtype="float32")[0]
            users = sf.read(tmp_path / "users" / method / name, dtype="float32")[0]
            assert suite.shape == users.shape
            np.testing.assert_allclose(users, suite, atol=1e-5 * np.abs(suite).max(), err_msg=f"{method} {name}")
