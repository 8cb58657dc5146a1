"""Choosing ``k`` of the similarity kernel from the hubness of the k-NN graph.

The k-occurrence ``N_k(j)`` of a frame ``j`` is the number of frames ``t`` that have ``j`` among
their ``k`` nearest neighbours, the in-degree of ``j`` in the k-NN graph [1]. Its mean over the
frames is ``k``; its skewness

    S(k) = E[(N_k − k)³] / E[(N_k − k)²]^(3/2)      (0 when every N_k is equal)

measures hubness: a right-skewed ``N_k`` means a few *hub* frames are the neighbours of many
frames, and a median over the neighbours then returns the hubs rather than the repetitions of
each frame [1, 2]. Fano Yela, Stowell & Sandler [2] propose the k-NN hubness as a cheap
indicator for a tailored ``k`` in KAM. The rule used here (:func:`choose_k`) is ours, after [2]:

    k* = the largest candidate ``k`` such that ``S(k') <= threshold`` for every candidate
         ``k' <= k`` (the candidates are scanned upwards and the scan stops before the first
         that exceeds the threshold); when already the smallest candidate exceeds it, the
         candidate with the least ``S``.

The reasoning: with music that repeats ``R`` times, the ``R − 1`` other repetitions of a frame are
its right neighbours, every frame is chosen about equally often, and ``S`` stays small; a larger
``k`` has to take frames of other music, which the frames nearest to everything (onsets,
quiet frames) supply to many queries, and ``S`` jumps. The largest ``k`` before the first jump uses
as many repetitions as the recording offers (a robust median) without drawing in hubs. For a
recording made of clusters of ``R`` repeated frames the rule returns ``R − 1``. The scan stops at
the first jump because ``S`` can fall again for much larger ``k`` (once whole neighbouring clusters
are included), which says nothing about the repetitions of a frame. The fallback covers data
whose hubness only decreases with ``k`` (as for i.i.d. high-dimensional points [1]).

All ``N_k`` for ``k = 1 .. k_max`` come from one neighbour search with ``k_max``
(:func:`bleedjax.similarity.nearest_frames` returns neighbours in order of distance, so the
first ``k`` columns are the ``k`` nearest), chunked as that search is; the extra memory is
``k_max × frames``.

References:
    [1] M. Radovanović, A. Nanopoulos, M. Ivanović, "Hubs in space: popular nearest neighbors in
        high-dimensional data", JMLR 11, 2010 (Sec. 3, the skewness ``S_{N_k}``).
    [2] D. Fano Yela, D. Stowell, M. Sandler, "Does k matter? k-NN hubness analysis for kernel
        additive modelling vocal separation", LVA/ICA 2018.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from bleedjax import similarity
from bleedjax._types import Array, Float, Int


def k_occurrences(
    neighbours: Int[Array, "frames k"], valid: Float[Array, " frames"] | None = None
) -> Float[Array, "k frames"]:
    """``out[c, j]`` = ``N_{c+1}(j)``: how many (valid) frames have ``j`` among their first
    ``c + 1`` neighbours.

    Args:
        neighbours: ``(frames, k_max)`` from :func:`bleedjax.similarity.nearest_frames`.
        valid: optional ``(frames,)`` 1 for real frames, 0 for padding (padding queries do not count).
    """
    frames, k = neighbours.shape
    weight = jnp.ones(frames) if valid is None else valid

    def column(c):
        return jnp.zeros(frames).at[neighbours[:, c]].add(weight)

    return jnp.cumsum(jax.vmap(column)(jnp.arange(k)), axis=0)


def skewness(counts: Float[Array, "k frames"], valid: Float[Array, " frames"] | None = None) -> Float[Array, " k"]:
    """The skewness ``S`` of every row of ``counts`` over the (valid) frames; 0 for a constant row."""
    weight = jnp.ones(counts.shape[1]) if valid is None else valid
    total = jnp.maximum(jnp.sum(weight), 1.0)
    mean = jnp.sum(counts * weight[None, :], axis=1, keepdims=True) / total
    centred = (counts - mean) * jnp.sqrt(weight)[None, :]
    second = jnp.sum(centred**2, axis=1) / total
    third = jnp.sum(centred**2 * (counts - mean), axis=1) / total
    scale = jnp.maximum(second, 1e-12) ** 1.5
    return jnp.where(second > 1e-9, third / scale, 0.0)


def choose_k(
    hubness: Float[Array, " k"], candidates: Sequence[int], threshold: float | Float[Array, ""]
) -> Int[Array, ""]:
    """The index into ``candidates`` (ascending) of the rule of the module docstring.

    Args:
        hubness: ``(k_max,)`` ``S(k)`` for ``k = 1 .. k_max`` (:func:`skewness`).
        candidates: ascending values of ``k``, at most ``k_max``.
        threshold: the largest acceptable skewness.
    """
    scores = hubness[jnp.asarray(candidates) - 1]
    before_first_jump = jnp.sum(jnp.cumprod(scores <= threshold))
    return jnp.where(before_first_jump > 0, before_first_jump - 1, jnp.argmin(scores)).astype(jnp.int32)


def check_candidates(candidates: Sequence[int]) -> tuple[int, ...]:
    """``candidates`` as a sorted tuple; raises on an empty list or a ``k < 1``."""
    values = tuple(sorted({int(k) for k in candidates}))
    if not values or values[0] < 1:
        raise ValueError(f"k_candidates must be a non-empty list of k >= 1, got {tuple(candidates)}")
    return values


@functools.partial(jax.jit, static_argnames=("candidates", "min_separation", "block"))
def auto_neighbours(
    features: Float[Array, "dims frames"],
    *,
    candidates: tuple[int, ...],
    threshold: float | Float[Array, ""],
    min_separation: int = 0,
    valid: Float[Array, " frames"] | None = None,
    block: int = 256,
) -> tuple[Int[Array, "frames k"], Int[Array, ""], Float[Array, " k"]]:
    """The neighbours for the largest candidate, the chosen candidate's index and ``S(k)``.

    Args:
        features: ``(dims, frames)``, context stacked (:func:`bleedjax.similarity.stack_context`).
        candidates: ascending values of ``k``.
        threshold: the largest acceptable skewness (:func:`choose_k`).
        min_separation, valid, block: as in :func:`bleedjax.similarity.nearest_frames`.

    Returns:
        ``(frames, max(candidates))`` neighbours in order of distance, the index into
        ``candidates`` of ``k*``, and ``(max(candidates),)`` the skewness for ``k = 1 ..``.
    """
    neighbours = similarity.nearest_frames(
        features, k=candidates[-1], min_separation=min_separation, valid=valid, block=block
    )
    hubness = skewness(k_occurrences(neighbours, valid), valid)
    return neighbours, choose_k(hubness, candidates, threshold), hubness


def chosen_median(
    values: Float[Array, "bins columns"],
    neighbours: Int[Array, "frames k"],
    index: Int[Array, ""],
    candidates: tuple[int, ...],
    *,
    block: int = 256,
) -> Float[Array, "bins frames"]:
    """:func:`bleedjax.similarity.neighbour_median` over the first ``candidates[index]``
    neighbours (a ``lax.switch``: one branch runs, all of them under vmap)."""
    def branch(k):
        return lambda v: similarity.neighbour_median(v, neighbours[:, :k], block=block)

    return jax.lax.switch(index, [branch(k) for k in candidates], values)
