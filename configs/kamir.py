"""KAMIR (Prätzlich et al., ICASSP 2015): defaults and the paper's presets K1–K5.

``bleedjax reduce --method kamir --preset K4`` picks a preset; ``--set key=value`` overrides single
values. ``channel_map`` names a JSON or CSV file mapping sources to microphones (empty: microphone
j belongs to source j).
"""

import dataclasses

import ml_collections

from bleedjax.methods.kamir import PRESETS, Settings
from bleedjax.methods.kamir_long import LongSettings
from bleedjax.methods.phase_check import KamirCheckSettings
from bleedjax.same_source import Detection

DEFAULT_PRESET = "K4"


def get_config(preset: str = DEFAULT_PRESET) -> ml_collections.ConfigDict:
    if preset not in PRESETS:
        raise ValueError(f"unknown KAMIR preset {preset!r}; choose from {', '.join(PRESETS)}")
    config = ml_collections.ConfigDict(dataclasses.asdict(Settings(**PRESETS[preset])))
    config.n_fft = 4096  # 93 ms at 44.1 kHz, hop 1024 (75 % overlap)
    config.hop = 1024
    config.beta = 0.0  # Itakura-Saito
    # "mm": the λ update's exponent that never increases the divergence (1/2 for beta 0); "heuristic":
    # exponent 1, twice the step (README "KAMIR: iterations and the update rule").
    config.update_rule = "mm"
    # The ratio floor's bound (bleedjax.methods.kamir.floor_cap), for the presets that update Λ (K4):
    # Λ_ij <= (bound_headroom x u_ij)², u_ij the bound_quantile-th energy-weighted quantile of |X_i| / |X_j|
    # in bands of bound_band bins of bound_frames frames, where microphone j is the loudest; 0 turns
    # it off (the paper's K4). README "KAMIR: the ratio floor".
    config.bound_quantile = 0.3
    config.channel_map = ""
    # Long recordings (bleedjax.methods.kamir_long): frames per streamed block, frames in the
    # random sample that Λ is learned from, and "projection" (one pass) or "exact" (a pass per
    # iteration, equal to the in-memory result).
    config.update(dataclasses.asdict(LongSettings()))
    # The phase check (bleedjax.methods.phase_check.kamir_check), for the presets that update Λ (K4),
    # sessions of at least phase_check_min_seconds and no channel_map: pairs whose gains have
    # sqrt(g_ij g_ji) >= phase_check_min_gain keep Λ within (h x the differentiable model's gain)²,
    # fitted on the busiest phase_check_seconds; h = phase_check_headroom, or with phase_check_gate
    # 1 + (phase_check_headroom - 1) x the model's residual gate (1 where its inversion leaves no bleed).
    config.update(dataclasses.asdict(KamirCheckSettings()))
    # Where no channel_map is given, the check's fit also looks for microphones of one source, on
    # sessions of any length (bleedjax.same_source.detect: a gain >= same_source_min_gain at a delay
    # <= same_source_max_delay_ms), and puts each group on one source, as a channel_map would
    # (bleedjax.methods.kamir.pooled_phi). The presets that keep Λ at ρ (K1-K3, K5) bound nothing
    # but search too, where K4's gains have such a pair.
    config.update(dataclasses.asdict(Detection()))
    return config
