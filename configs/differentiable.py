"""The differentiable bleed model (delay- and phase-aware): fit and cleaning settings.

``bleedjax reduce --method differentiable`` uses these; ``--set key=value`` overrides single values
(e.g. ``--set residual=none`` for bleed that is only delayed copies, ``--set bands=8`` to fit a
per-band colouration, ``--set cleaning=wiener`` for a soft mask). Delays are in samples: at 44.1 kHz
``max_delay=1024`` is 23 ms, 7.9 m of extra path.
"""

import dataclasses

import ml_collections

from bleedjax.methods.differentiable import Settings
from bleedjax.methods.differentiable_long import LongSettings
from bleedjax.same_source import Detection


def get_config() -> ml_collections.ConfigDict:
    settings = dataclasses.asdict(Settings())
    del settings["same_source"]  # from channel_map, for each session's track names
    config = ml_collections.ConfigDict(settings)
    # A JSON or CSV file mapping sources to microphones (bleedjax.channel_map), as for kamir: no
    # bleed is fitted between the microphones of one source.
    config.channel_map = ""
    config.n_fft = 4096  # 93 ms Hann frames at 44.1 kHz, hop 1024
    config.hop = 1024
    config.max_delay = 1024  # samples; must be below n_fft / 2 (GCC-PHAT's lag range)
    config.rounds = 4  # unmix / fit alternations
    config.steps = 150  # Adam steps per round
    config.candidates = 4  # GCC-PHAT peaks per pair that each round chooses among by the cost
    config.shrinkage = True  # shrink each gain by its block-jackknife significance (bleedjax.bleed_fit)
    config.shrinkage_scale = 1.5  # κ: a gain within κ standard errors of 0 is set to 0
    config.shrinkage_blocks = 8  # blocks of frames for the jackknife
    config.cleaning = "invert"  # invert | subtract | wiener
    config.residual = "spectral-subtraction"  # spectral-subtraction | none
    config.residual_max_lambda = 0.25  # box on the residual's λ: −12 dB (1 removes unison targets)
    config.residual_gate = True  # scale each pair's residual λ by the coherence gate (bleedjax.coherence)
    config.residual_gate_low = 0.08  # mutual coherent fraction min(E_ij, E_ji) at or below which the residual is off
    config.residual_gate_high = 0.2  # ... and from which it is fully on
    config.residual_gate_lags = 3  # previous frames in the coherence test's filters
    config.residual_significance = True  # also scale it by the lesser shrinkage factor of the pair's two gains
    config.residual_significance_min_frames = 86  # ... on sessions of this many frames or more (2 s at 44.1 kHz)
    # On shorter sessions: the residual's λ capped by the ratio floor (bleedjax.ratio_floor; 0: no cap) ...
    config.residual_bound_quantile = 0.3
    # ... and no residual between two tracks at the box both ways whose fitted gain is below this in one
    # direction (taken for players of one part; 0: off)
    config.residual_unison_gain = 0.1
    # ... unless their mutual coherent fraction reaches this (reverberant bleed of a room; above 1: no exception)
    config.residual_unison_coherence = 0.65
    # ... and the ratio floor caps no pair whose mutual coherent fraction reaches this (above 1: every pair)
    config.residual_floor_coherence = 0.65
    # Long sessions (bleedjax.methods.differentiable_long): the model is fitted on the busiest
    # excerpt of fit_seconds, then the session is cleaned in blocks of block_seconds.
    config.update(dataclasses.asdict(LongSettings()))
    # Where no channel_map is given, microphones that the fit finds on one source (bleedjax.same_source.detect:
    # a gain >= same_source_min_gain at a delay <= same_source_max_delay_ms) are fitted again with no bleed between them.
    config.update(dataclasses.asdict(Detection()))
    return config
