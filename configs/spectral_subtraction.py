"""Seipel & Lerch (AES 2018) spectral subtraction: presets ``auto`` (default), ``refined``,
``paper``, ``power`` and ``floor``.

``paper`` is [1] exactly (Eq. (1) on the microphones, λ ≥ 0). ``refined`` is the library's
``Settings()``: the box λ ≤ 1 and three rounds that regress each microphone on the other tracks'
cleaned magnitudes (:func:`bleedjax.methods.spectral_subtraction.estimate_lambda`). ``power``
subtracts powers with ``refined``'s λ; ``floor`` caps ``refined``'s λ by the ratio floor
(``bound_quantile``) and subtracts it from the microphones. ``auto``, the default, is ``floor``
for sessions of up to 6 tracks and ``refined`` above (``bound_max_tracks``), and checks the pairs
with large λ both ways (geometric mean) by phase (``phase_check``: unison or bleed?). Use with
``bleedjax reduce --preset paper``, ``--config configs/spectral_subtraction.py`` or override
single values with ``--set refinements=0``. The defaults are the library's (one source of truth);
this file is where an experiment changes them.
"""

import dataclasses

import ml_collections

from bleedjax.methods.phase_check import CheckSettings
from bleedjax.methods.spectral_subtraction import PRESETS, Settings
from bleedjax.methods.spectral_subtraction_long import LongSettings
from bleedjax.same_source import Detection

DEFAULT_PRESET = "auto"


def get_config(preset: str = DEFAULT_PRESET) -> ml_collections.ConfigDict:
    if preset not in PRESETS:
        raise ValueError(f"unknown spectral-subtraction preset {preset!r}; choose from {', '.join(PRESETS)}")
    settings = dataclasses.asdict(Settings(**PRESETS[preset]))
    del settings["same_source"]  # from channel_map, for each session's track names
    config = ml_collections.ConfigDict(settings)
    # A JSON or CSV file mapping sources to microphones (bleedjax.channel_map), as for kamir: the
    # microphones of one source are not regressed on, nor subtracted from, each other.
    config.channel_map = ""
    config.n_fft = 4096  # Hamming 4096 / 2048 at 44.1 kHz: 93 ms frames, as in the paper
    config.hop = 2048
    config.window = "hamming"
    config.momentum = 0.8  # β
    config.learning_rate = 1e-3  # γ(0)
    config.learning_rate_decay = 0.99  # γ(m+1) = 0.99 γ(m)
    # Long recordings (bleedjax.methods.spectral_subtraction_long): frames per streamed block, and
    # the most lattice points (all tracks) kept for the refinement rounds and the ratio floor.
    config.update(dataclasses.asdict(LongSettings()))
    # The phase check (bleedjax.methods.phase_check), on in `auto`: pairs with sqrt(λ_ij λ_ji) >=
    # phase_check_min_lambda get λ set to the differentiable model's gain (within max_lambda), fitted on
    # the busiest phase_check_seconds.
    config.update(dataclasses.asdict(CheckSettings(phase_check=preset == "auto")))
    # Where no channel_map is given, the phase check's fit also looks for microphones of one source
    # (bleedjax.same_source.detect: a gain >= same_source_min_gain at a delay <= same_source_max_delay_ms)
    # and leaves such pairs apart, as a channel map would. The presets without the check run that fit
    # for the search alone, on sessions with a pair of sqrt(λ_ij λ_ji) >= phase_check_min_lambda;
    # detect_same_source=false keeps the paper's λ as it is.
    config.update(dataclasses.asdict(Detection()))
    return config
