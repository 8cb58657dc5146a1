"""Strict JAX for every test (equinox's conftest), 8 CPU devices for mesh tests and the suite's
codegen flags (:mod:`tests.xla_flags`)."""

import os
import pathlib

from tests import xla_flags

if "XLA_FLAGS" not in os.environ:
    os.environ["XLA_FLAGS"] = xla_flags.suite_flags()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings not found at {SHARED_DATA}")
    return SHARED_DATA

os.environ.setdefault("BLEEDJAX_CACHE_DIR", str(REPO / ".jax_cache"))
