"""Bad shapes and sizes raise ``ValueError`` as users call the library, without the suite's runtime
type checker (which rejects most of them first with its own ``TypeError``)."""

import subprocess
import sys

CALLS = """
import jax.numpy as jnp
import numpy as np
from bleedjax import bleed_model, same_source
from bleedjax.methods import kam_nmf
from bleedjax.metrics import bss_eval_images_framewise, bss_eval_sources, frobenius_distance, table3_correlation

r = jnp.ones((2, 100))
calls = {
    "filter_length 0 (a ZeroDivisionError)": lambda: bss_eval_sources(r, r, filter_length=0),
    "2-D images (an unpacking error)": lambda: bss_eval_images_framewise(r, r, window=50, hop=50),
    "table 3 of (3, 3) and (2, 2)": lambda: table3_correlation(jnp.eye(3), jnp.zeros((2, 2))),
    "Frobenius of (3, 3) and (3,) (broadcast)": lambda: frobenius_distance(jnp.eye(3), jnp.zeros(3)),
    "gains for 2 of 3 sources (an einsum error)": lambda: bleed_model.bleed(
        jnp.ones((3, 100)), jnp.ones((3, 2)), jnp.zeros((3, 2)), max_delay=4),
    "(3,) delays for (3, 3) gains": lambda: bleed_model.bleed(
        jnp.ones((3, 100)), jnp.ones((3, 3)), jnp.zeros(3), max_delay=4),
    "(3,) gains (a (1, samples) result)": lambda: bleed_model.bleed(
        jnp.ones((3, 100)), jnp.ones(3), jnp.zeros(3), max_delay=4),
    "max_delay -5 (every delay wrapped)": lambda: bleed_model.bleed(
        jnp.ones((3, 100)), jnp.ones((3, 3)), jnp.zeros((3, 3)), max_delay=-5),
    "(tracks, samples) to reduce_track (blamed on the dictionary)": lambda: kam_nmf.reduce_track(
        jnp.zeros((2, 4000)), jnp.ones((2049, 4))),
    "a 1-D dictionary (an IndexError)": lambda: kam_nmf.reduce_track(jnp.zeros(4000), jnp.ones(2049)),
    "(2, 3) gains with (3, 3) delays to detect": lambda: same_source.detect(np.ones((2, 3)), np.zeros((3, 3)), 44100),
}
for name, call in calls.items():
    try:
        call()
        print(f"{name}: no error")
    except ValueError:
        pass
    except Exception as error:
        print(f"{name}: {type(error).__name__}: {error}")
"""


def test_bad_shapes_and_sizes_are_value_errors_without_the_type_checker():
    done = subprocess.run([sys.executable, "-c", CALLS], capture_output=True, text=True, check=True, timeout=300)
    assert done.stdout == "", done.stdout
