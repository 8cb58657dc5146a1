"""Shape aliases used in signatures across bleedjax (jaxtyping).

Dimension names:
    tracks   microphone tracks of one session (J in the papers)
    sources  sources (usually equal to tracks)
    samples  time-domain samples
    bins     STFT frequency bins, n_fft // 2 + 1
    frames   STFT frames
"""

from jaxtyping import Array, ArrayLike, Bool, Complex, Float, Int, PRNGKeyArray, Real, Shaped

__all__ = [
    "Array",
    "ArrayLike",
    "Bool",
    "Complex",
    "Float",
    "Int",
    "PRNGKeyArray",
    "Real",
    "Shaped",
]
