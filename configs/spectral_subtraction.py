"""Seipel & Lerch (AES 2018) spectral subtraction: the paper's settings.

Use with ``bleedjax reduce --config configs/spectral_subtraction.py`` or override single values
with ``--set solver=nnls``. The defaults are the library's (one source of truth); this file is
where an experiment changes them.
"""

import dataclasses

import ml_collections

from bleedjax.methods.spectral_subtraction import Settings


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(dataclasses.asdict(Settings()))
    config.n_fft = 4096  # Hamming 4096 / 2048 at 44.1 kHz: 93 ms frames, as in the paper
    config.hop = 2048
    config.window = "hamming"
    config.momentum = 0.8  # β
    config.learning_rate = 1e-3  # γ(0)
    config.learning_rate_decay = 0.99  # γ(m+1) = 0.99 γ(m)
    return config
