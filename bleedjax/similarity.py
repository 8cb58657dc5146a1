"""Similarity kernels for Kernel Additive Modelling: the median over the k most similar frames.

KAM's proximity kernel [1] need not be a local footprint (:mod:`bleedjax.kernels`): for a
source that repeats, such as music, the frames most similar to frame ``t`` anywhere in the
recording are good neighbours [1, 2]. For every frame ``t`` this module finds the ``k`` frames
``j`` with the smallest Euclidean distance between *feature* frames with temporal context,

    d(t, j) = Σ_{c=−C..C} ‖ f_{t+c} − f_{j+c} ‖²      (frames at the edges repeated),

and estimates the source at ``(f, t)`` by the median of ``values[f, j]`` over those ``k`` frames
([2] Sec. 2; [3] computes ``d`` on an NMF estimate of the clean music, not on the mixture).
Frames closer in time than ``min_separation`` to ``t`` are not candidates (a cough that lasts 20
frames would otherwise find itself in its own neighbours); when fewer than ``k`` candidates
exist, the missing neighbours are ``t`` itself. The median is the value of rank ``k // 2``
(from 0) among the ``k``, the upper median for even ``k``, as in :func:`bleedjax.kernels.
median_filter`.

The ``frames × frames`` distance matrix is never formed: query frames go through in blocks of
``block`` (``lax.map``), each block needing ``block × frames`` distances, so memory grows
linearly with the recording. Distances use ``‖a‖² + ‖b‖² − 2 aᵀb`` with one matrix product per
block, and the median over the ``k`` gathered frames is a pruned comparator network (as in
:mod:`bleedjax.kernels`) that XLA fuses.

``k`` can be chosen automatically from the hubness of the k-NN graph (Fano Yela et al.,
LVA/ICA 2018): :mod:`bleedjax.hubness`.

References:
    [1] A. Liutkus, D. Fitzgerald, Z. Rafii, B. Pardo, L. Daudet, "Kernel additive models for
        source separation", IEEE Trans. Signal Processing 62(16), 2014.
    [2] Z. Rafii, B. Pardo, "Music/voice separation using the similarity matrix", ISMIR 2012.
    [3] D. Fano Yela, S. Ewert, D. FitzGerald, M. Sandler, "Interference reduction in music
        recordings combining kernel additive modelling and non-negative matrix factorization",
        ICASSP 2017.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from bleedjax._types import Array, Float, Int
from bleedjax.kernels import _selection_network


def stack_context(
    features: Float[Array, "dims frames"], context: int, valid: Float[Array, " frames"] | None = None
) -> Float[Array, "stacked frames"]:
    """Stacks each frame with its ``context`` neighbours on either side (edges repeated).

    Args:
        features: ``(dims, frames)``.
        context: neighbours on either side.
        valid: optional ``(frames,)`` 1 for the real frames, 0 for the zero padding after them:
            the last real frame is then the edge that is repeated, so a padded track's real frames
            get the context they get alone.

    Returns:
        ``(dims * (2 context + 1), frames)``; the squared Euclidean distance between two of its
        columns is ``d(t, j)`` of the module docstring.
    """
    if context < 0:
        raise ValueError(f"context must be >= 0 frames, got {context}")
    if context == 0:
        return features
    frames = features.shape[1]
    last = frames - 1 if valid is None else jnp.maximum(jnp.sum(valid > 0) - 1, 0)
    index = jnp.clip(jnp.arange(-context, context + 1)[:, None] + jnp.arange(frames)[None, :], 0, last)
    return jnp.moveaxis(features[:, index], 1, 0).reshape(-1, frames)


def _check(k: int, min_separation: int, block: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if min_separation < 0:
        raise ValueError(f"min_separation must be >= 0 frames, got {min_separation}")
    if block < 1:
        raise ValueError(f"block must be >= 1 frame, got {block}")


def _blocks(frames: int, block: int) -> tuple[int, int]:
    block = min(block, frames)
    return block, -(-frames // block)


@functools.partial(jax.jit, static_argnames=("k", "min_separation", "block"))
def nearest_frames(
    features: Float[Array, "dims frames"],
    *,
    k: int,
    min_separation: int = 0,
    valid: Float[Array, " frames"] | None = None,
    block: int = 256,
) -> Int[Array, "frames k"]:
    """The ``k`` frames nearest to every frame (module docstring), in order of distance.

    Args:
        features: ``(dims, frames)`` feature frames, context already stacked
            (:func:`stack_context`).
        k: neighbours per frame.
        min_separation: candidates ``j`` need ``|j − t| >= min_separation`` (0: ``t`` itself is
            its own nearest neighbour).
        valid: optional ``(frames,)`` 1 for real frames, 0 for padding (never a neighbour).
        block: query frames per block (memory ``block × frames``).

    Returns:
        ``(frames, k)`` frame indices; ``t`` itself where fewer than ``k`` candidates exist.
        Ties go to the lower index.
    """
    _check(k, min_separation, block)
    frames = features.shape[1]
    block, count = _blocks(frames, block)
    norms = jnp.sum(features * features, axis=0)
    candidate = jnp.ones(frames, bool) if valid is None else valid > 0
    padded = jnp.pad(features, ((0, 0), (0, block * count - frames)))
    index = jnp.arange(frames)

    def one_block(start):
        queries = jax.lax.dynamic_slice_in_dim(padded, start, block, axis=1)
        cross = jnp.matmul(queries.T, features, precision=jax.lax.Precision.HIGHEST)
        rows = start + jnp.arange(block)
        distance = jnp.sum(queries * queries, axis=0)[:, None] + norms[None, :] - 2.0 * cross
        allowed = candidate[None, :] & (jnp.abs(rows[:, None] - index[None, :]) >= min_separation)
        distance = jnp.where(allowed, jnp.maximum(distance, 0.0), jnp.inf)
        if k > frames:
            distance = jnp.pad(distance, ((0, 0), (0, k - frames)), constant_values=jnp.inf)
        negative, chosen = jax.lax.top_k(-distance, k)
        return jnp.where(jnp.isfinite(negative), chosen, rows[:, None])

    starts = jnp.arange(count) * block
    return jax.lax.map(one_block, starts).reshape(count * block, k)[:frames]


def _rank_select(views: list, rank: int):
    for i, j, keep_min, keep_max in _selection_network(len(views), rank):
        low = jnp.minimum(views[i], views[j]) if keep_min else None
        high = jnp.maximum(views[i], views[j]) if keep_max else None
        views[i], views[j] = low, high
    return views[rank]


@functools.partial(jax.jit, static_argnames=("block",))
def neighbour_median(
    values: Float[Array, "bins columns"], neighbours: Int[Array, "frames k"], *, block: int = 256
) -> Float[Array, "bins frames"]:
    """``out[f, t]`` = the value of rank ``k // 2`` among ``values[f, neighbours[t]]``.

    Args:
        values: ``(bins, columns)`` e.g. a magnitude spectrogram (``columns = frames``), or
            just the columns that ``neighbours`` point to.
        neighbours: ``(frames, k)`` column indices, e.g. from :func:`nearest_frames`.
        block: frames per block (memory ``bins × block × k``).
    """
    bins, frames = values.shape[0], neighbours.shape[0]
    k = neighbours.shape[1]
    block, count = _blocks(frames, block)
    padded = jnp.pad(neighbours, ((0, block * count - frames), (0, 0)))

    def one_block(start):
        rows = jax.lax.dynamic_slice_in_dim(padded, start, block, axis=0)
        return _rank_select([values[:, rows[:, j]] for j in range(k)], k // 2)

    out = jax.lax.map(one_block, jnp.arange(count) * block)
    return jnp.moveaxis(out, 0, 1).reshape(bins, count * block)[:, :frames]


def similarity_median(
    values: Float[Array, "bins frames"],
    features: Float[Array, "dims frames"],
    *,
    k: int,
    context: int = 0,
    min_separation: int = 0,
    valid: Float[Array, " frames"] | None = None,
    block: int = 256,
) -> Float[Array, "bins frames"]:
    """KAM with a similarity kernel: the median of ``values`` over each frame's ``k`` nearest
    frames by ``features`` with ``context`` frames of context (module docstring).

    Args:
        values: ``(bins, frames)`` what is filtered (e.g. the current music magnitude estimate).
        features: ``(dims, frames)`` what similarity is measured on (e.g. an NMF estimate of the
            music [3], or any linear map of it that preserves Euclidean distances).
        k, min_separation, valid, block: as in :func:`nearest_frames`.
        context: frames of temporal context on each side.

    Returns:
        ``(bins, frames)`` filtered values.
    """
    neighbours = nearest_frames(
        stack_context(features, context, valid), k=k, min_separation=min_separation, valid=valid, block=block
    )
    return neighbour_median(values, neighbours, block=block)

