"""How much of one track a convolutive linear filter of another track explains: the test that
tells whether bleed is left after the differentiable model's phase-aware inversion.

For tracks ``i`` and ``j`` with STFTs ``Y_i, Y_j`` (``(bins, frames)``), each bin ``f`` gets the
least-squares complex filter over the current and ``lags`` previous frames of ``Y_j``,

    w_ij(f) = argmin_w Σ_t |Y_i(f, t) − Σ_{k=0}^{L} w_k Y_j(f, t − k)|²,

the convolutive transfer function (CTF) approximation of a room response in the STFT domain
(Talmon, Cohen & Gannot, "Relative transfer function identification using convolutive transfer
function approximation", IEEE TASLP 17(4), 2009, Eq. 7). The **coherent fraction** is the share
of ``Y_i``'s energy that these filters explain,

    E_ij = Σ_f c_ij(f)ᴴ G_j(f)⁻¹ c_ij(f) / Σ_{f,t} |Y_i(f, t)|² − (L + 1) / T,

with ``G_j(f)[k, l] = Σ_t conj(Y_j(f, t−k)) Y_j(f, t−l)`` and ``c_ij(f)[k] = Σ_t conj(Y_j(f, t−k))
Y_i(f, t)``. The subtracted ``(L + 1) / T`` is what ``L + 1`` free complex coefficients per bin
explain of ``T`` frames of an unrelated signal, so ``E_ij ≈ 0`` for independent tracks.

Bleed, direct or reverberant, is such a filtered copy of its source and raises ``E_ij``; music
that merely plays along is not phase-coherent over many frames. Measured on the inversion's
output (10 s, ``benchmarks/quality_differentiable.py`` conditions, seed 0): mean ``E_ij`` 0.04–0.10
for delayed linear bleed, which the inversion removes, against 0.26–0.44 in rooms, whose
reverberation it leaves, and 0.007–0.025 between the true sources. Players in unison over a
short excerpt are the exception: on the PHENICX desks (1 s) the true sources reach 0.69.

The gate asks for **mutual** coherence, ``min(E_ij, E_ji)``. ``E_ij`` alone also rises when
output ``j`` holds a faint copy of source ``i`` (the direction opposite to the one the residual
stage subtracts): in the bins where source ``j`` is quiet that copy explains output ``i`` through a
filter of large gain. After an inversion that raised the SDR of both outputs by 30 dB, leaving a
faint copy of source ``i`` in output ``j`` and nothing of ``j`` in ``i``, ``E_ij`` reached 0.26 while
``E_ji`` stayed at 0.05 (the Mozart quartet's cello and viola). Bleed that the residual stage should remove raises both: output ``i`` holds
source ``j``, which explains output ``j`` where source ``i`` is quiet, and what it explains of
output ``i`` is the bleed itself. Per bin the coherence of the two is the same, and ``E_ji``
weights it by the power of output ``j``, which is large where the bleed dominates, so ``E_ji`` is
usually the larger: then the minimum is ``E_ij`` and the gate of a real bleed pair is what
``E_ij`` alone would set (the test builds such a pair: 0.92 against 0.24). Real bleed is also
mutual in practice: on the Dagstuhl choir's dynamic microphones ``E`` is 0.12–0.61 in both
directions of every pair.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bleedjax._types import Array, Complex, Float

HIGHEST = jax.lax.Precision.HIGHEST
CHUNK_BYTES = 1 << 27


def _delayed_frames(spectra: Complex[Array, "tracks bins frames"], lags: int) -> Complex[Array, "tracks bins frames taps"]:
    """``Z[..., t, k] = Y(f, t − k)`` for ``k = 0..lags``, zero for ``t < k``."""
    frames = spectra.shape[-1]
    padded = jnp.pad(spectra, ((0, 0), (0, 0), (lags, 0)))
    return jnp.stack([padded[..., lags - k : lags - k + frames] for k in range(lags + 1)], axis=-1)


def _explained(
    chunk: Complex[Array, "tracks bins frames"], lags: int, mask: Float[Array, " frames"]
) -> Float[Array, "tracks tracks"]:
    """``Σ_f c_ij(f)ᴴ G_j(f)⁻¹ c_ij(f)`` over the bins of ``chunk``, summing over the frames ``t``
    with ``mask[t] = 1`` only: a padded frame holds no target, but its lagged regressors would
    still hold the last real frames."""
    delayed = _delayed_frames(chunk, lags) * mask[None, None, :, None]
    cross = jnp.einsum("ibt,jbtk->ijbk", chunk, jnp.conj(delayed), precision=HIGHEST)
    gram = jnp.einsum("jbtk,jbtl->jbkl", jnp.conj(delayed), delayed, precision=HIGHEST)
    scale = jnp.real(jnp.trace(gram, axis1=-2, axis2=-1)) / (lags + 1)
    ridge = (1e-6 * scale[..., None, None] + 1e-30) * jnp.eye(lags + 1)[None, None]
    filters = jnp.linalg.solve((gram + ridge)[None], cross[..., None])[..., 0]
    return jnp.sum(jnp.real(jnp.sum(jnp.conj(cross) * filters, axis=-1)), axis=-1)


def coherent_fraction(
    spectra: Complex[Array, "tracks bins frames"],
    *,
    lags: int = 3,
    mask: Float[Array, " frames"] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Float[Array, "tracks tracks"]:
    """``E_ij`` of the module docstring for every ordered pair (zero diagonal).

    The statistics are gathered over chunks of bins (``lax.map``) whose lagged frames take about
    ``chunk_bytes``, so memory stays that of ``spectra`` plus one chunk for any length.

    Args:
        spectra: ``(J, bins, frames)`` STFTs of the tracks.
        lags: ``L``, the previous frames each filter uses besides the current one.
        mask: ``(frames,)`` 1 for real frames, 0 for the padding of a batched session.
        chunk_bytes: the size of one chunk's lagged frames.

    Returns:
        ``(J, J)``, row ``i`` explained by column ``j``; 0 where track ``i`` is silent.
    """
    num, bins, frames = spectra.shape
    if mask is None:
        mask = jnp.ones(frames, jnp.float32)
    spectra = spectra * mask[None, None, :]
    count = jnp.sum(mask)
    per_bin = num * frames * (lags + 1) * spectra.dtype.itemsize
    size = int(min(bins, max(1, chunk_bytes // per_bin)))
    chunks = -(-bins // size)
    padded = jnp.pad(spectra, ((0, 0), (0, chunks * size - bins), (0, 0)))
    blocks = jnp.moveaxis(padded.reshape(num, chunks, size, frames), 1, 0)
    explained = jnp.sum(jax.lax.map(lambda chunk: _explained(chunk, lags, mask), blocks), axis=0)
    energy = jnp.sum(jnp.abs(spectra) ** 2, axis=(1, 2))
    fraction = explained / jnp.where(energy > 0, energy, 1.0)[:, None] - (lags + 1) / jnp.maximum(count, 1.0)
    fraction = jnp.where(energy[:, None] > 0, fraction, 0.0)
    return fraction * (1.0 - jnp.eye(num, dtype=fraction.dtype))


def gate(fraction: Float[Array, "tracks tracks"], low: float, high: float) -> Float[Array, "tracks tracks"]:
    """``clip((min(E_ij, E_ji) − low) / (high − low), 0, 1)``: 0 where the tracks are no more
    mutually coherent than ``low``, 1 from ``high`` on (the module docstring says why mutual).

    Args:
        fraction: ``(J, J)`` coherent fractions, row ``i`` explained by column ``j``.
        low, high: the ends of the ramp.

    Returns:
        ``(J, J)`` weights in [0, 1], symmetric.
    """
    mutual = jnp.minimum(fraction, fraction.T)
    return jnp.clip((mutual - low) / (high - low), 0.0, 1.0)
