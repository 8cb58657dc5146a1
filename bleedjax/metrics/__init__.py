"""Evaluation metrics: BSS Eval v3/v4, SI-SDR, and bleed-matrix accuracy."""

from bleedjax.metrics.bss_eval import (
    BssEvalImages,
    BssEvalSources,
    bss_eval_images_framewise,
    bss_eval_sources,
    nan_aggregate,
    si_sdr,
)
from bleedjax.metrics.matrices import frobenius_distance, table3_correlation

__all__ = [
    "BssEvalImages",
    "BssEvalSources",
    "bss_eval_images_framewise",
    "bss_eval_sources",
    "frobenius_distance",
    "nan_aggregate",
    "si_sdr",
    "table3_correlation",
]
