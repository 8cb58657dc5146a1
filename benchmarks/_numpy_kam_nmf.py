"""KAM + NMF in NumPy/SciPy (float32), the same algorithm as ``bleedjax.methods.kam_nmf``.

The reference for ``benchmarks/speed_kam_nmf.py``: the same STFT (``scipy.signal.stft``, which
bleedjax's equals), the same multiplicative updates (BLAS matrix products), the same similarity
kernel computed blockwise with the same QR features (so it is not slowed by a naive distance
matrix), ``np.argpartition`` for the k nearest frames and ``np.partition`` for the median. Random
initial factors come from NumPy, so results agree with bleedjax's only statistically.
"""

from __future__ import annotations

import numpy as np
from scipy import signal as sps

EPS = 1.1920929e-07


def _stft(x, n_fft, hop):
    return sps.stft(x, window="hann", nperseg=n_fft, noverlap=n_fft - hop)[2].astype(np.complex64)


def _istft(X, n_fft, hop, length):
    return sps.istft(X, window="hann", nperseg=n_fft, noverlap=n_fft - hop)[1][:length].astype(np.float32)


def nmf_kl(V, W, H, fixed, iterations):
    """KL multiplicative updates; ``1 Hᵀ`` and ``Wᵀ 1`` as sums, as in bleedjax and scikit-learn."""
    for _ in range(iterations):
        ratio = V / np.maximum(W @ H, EPS)
        W[:, fixed:] *= (ratio @ H[fixed:].T) / np.maximum(H[fixed:].sum(axis=1)[None, :], EPS)
        ratio = V / np.maximum(W @ H, EPS)
        H *= (W.T @ ratio) / np.maximum(W.sum(axis=0)[:, None], EPS)
    return W, H


def nearest_frames(features, k, min_separation, block):
    frames = features.shape[1]
    norms = np.sum(features * features, axis=0)
    out = np.empty((frames, k), np.int64)
    index = np.arange(frames)
    for start in range(0, frames, block):
        rows = index[start : start + block]
        q = features[:, rows]
        distance = np.sum(q * q, axis=0)[:, None] + norms[None, :] - 2.0 * (q.T @ features)
        distance[np.abs(rows[:, None] - index[None, :]) < min_separation] = np.inf
        part = np.argpartition(distance, k - 1, axis=1)[:, :k]
        out[rows] = np.where(np.isfinite(np.take_along_axis(distance, part, axis=1)), part, rows[:, None])
    return out


def neighbour_median(values, neighbours, block):
    k = neighbours.shape[1]
    out = np.empty_like(values)
    for start in range(0, values.shape[1], block):
        gathered = values[:, neighbours[start : start + block]]
        out[:, start : start + block] = np.partition(gathered, k // 2, axis=-1)[..., k // 2]
    return out


def reduce_track(audio, W_n, *, n_fft=2048, hop=512, music_components=32, nmf_iterations=100, k=9,
                 context=2, min_separation=43, kam_iterations=2, detection_threshold=0.1, block=256, seed=0):
    X = _stft(audio, n_fft, hop)
    V = np.abs(X)
    V /= max(V.max(), 1e-12)
    rng = np.random.default_rng(seed)
    atoms = W_n.shape[1]
    scale = np.sqrt(max(V.mean(), EPS) / (atoms + music_components))
    W = np.concatenate([W_n, scale * np.abs(rng.standard_normal((V.shape[0], music_components)))], 1)
    H = scale * np.abs(rng.standard_normal((atoms + music_components, V.shape[1])))
    W, H = nmf_kl(V, W.astype(np.float32), H.astype(np.float32), atoms, nmf_iterations)
    N0, M0 = W[:, :atoms] @ H[:atoms], W[:, atoms:] @ H[atoms:]
    share = N0.sum(0) / np.maximum((N0 + M0).sum(0), 1e-12)
    corrupted = share > detection_threshold
    N = N0 * V / np.maximum(N0 + M0, 1e-12)
    features = np.linalg.qr(W[:, atoms:], mode="r") @ H[atoms:]
    padded = np.pad(features, ((0, 0), (context, context)), mode="edge")
    stacked = np.concatenate([padded[:, c : c + features.shape[1]] for c in range(2 * context + 1)])
    neighbours = nearest_frames(stacked, k, min_separation, block)
    gain = M0 / np.maximum(M0 + N0, 1e-12)
    for _ in range(kam_iterations):
        M = np.minimum(neighbour_median(gain * V, neighbours, block), V)
        gain = np.where(corrupted[None, :], M**2 / np.maximum(M**2 + N**2, 1e-12), 1.0)
    cleaned = _istft(gain * X, n_fft, hop, len(audio))
    return cleaned, audio - cleaned
