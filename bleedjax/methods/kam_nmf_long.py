"""KAM + NMF (:mod:`bleedjax.methods.kam_nmf`, after Fano Yela et al., ICASSP 2017 [1]) for
tracks of any length, without spectrogram-sized arrays in memory.

The in-memory path holds several ``bins × frames`` arrays (the spectrogram, ``W H``, the NMF
ratios, the gains), about 0.1 GiB per minute of a track. This path computes the same result
with those arrays streamed block by block:

1. **Spectrogram to disk.** One pass of the streaming STFT (:mod:`bleedjax.streaming`) writes
   ``|X|`` of every track to a :class:`~bleedjax.frame_store.FrameStore` (an unlinked temporary
   file, read with ``pread``: ``4 × bins`` bytes per frame, 159 MB for 15 minutes at 22.05 kHz)
   and gathers the peak and mean that the in-memory path scales and initialises with.
2. **NMF, exactly, in ``nmf_iterations + 1`` passes.** Only ``H`` (``components × frames``,
   about 0.7 MB per minute) is kept whole. The ``W`` update is a sum over frames
   (:func:`bleedjax.nmf.W_sums`) accumulated block by block; the ``H`` update is local to each
   frame. Pass ``p`` updates every block's ``H`` with ``W_p`` and accumulates the sums for
   ``W_{p+1}``, which is the in-memory order of updates (``W`` first, then ``H``).
3. **The similarity kernel in memory, from ``H``.** Distances between columns of ``M₀ = W_m H_m``
   are those between columns of ``R H_m`` (``W_m = Q R``), so the k-NN search (and the hubness
   choice of ``k``) runs on ``components × frames`` features, chunked as in memory; the
   neighbours are ``frames × k`` integers.
4. **KAM, exactly, one pass per iteration.** The median for a corrupted frame needs the current
   music estimate at its neighbours anywhere in the recording: those frames of ``|X|`` (and of the
   previous iteration's gain, kept in another frame store) are read back from disk, each run of
   consecutive frames at once; the first iteration's gain ``M₀ / (M₀ + N₀)`` at the neighbours
   comes from their columns of ``H``. Frames that are not corrupted keep gain 1 and read nothing.
5. **Output.** The last pass recomputes each block's STFT and streams ``G X`` and ``(1 − G) X``
   through :class:`~bleedjax.streaming.OverlapAddWriter`, exactly as one iSTFT of the whole
   track would (outputs appear only when everything succeeded).

The result equals the in-memory path up to the order of floating-point sums (the ``W`` update
sums over blocks). Memory is set by the block size, plus ``H``, the ``C × frames`` features, the
neighbour lists and one ``block × frames`` slab of distances of the k-NN search (about 10 MB
per minute of a track together), instead of about 100 MB per minute. The ``"kam"`` ablation
measures similarity on the spectrogram itself and has no streamed path.

References:
    [1] D. Fano Yela, S. Ewert, D. FitzGerald, M. Sandler, "Interference reduction in music
        recordings combining kernel additive modelling and non-negative matrix factorization",
        ICASSP 2017.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from bleedjax import hubness, nmf, signal, streaming
from bleedjax._types import Array, Float, Int
from bleedjax.frame_store import FrameStore
from bleedjax.methods import kam_nmf


@dataclasses.dataclass(frozen=True)
class LongSettings:
    """How the long-track path streams: frames per block."""

    block_frames: int = 512

    def __post_init__(self):
        if self.block_frames < 1:
            raise ValueError(f"block_frames must be >= 1, got {self.block_frames}")


@dataclasses.dataclass
class _Track:
    """What is kept of one track: its spectrogram on disk, the factors and the kernel."""

    magnitude: FrameStore
    peak: float = 0.0
    total: float = 0.0
    W: Array | None = None
    H: np.ndarray | None = None
    share: np.ndarray | None = None
    kernel: kam_nmf.Kernel | None = None
    neighbours: np.ndarray | None = None
    gain: FrameStore | None = None

    def scale(self) -> np.float32:
        return np.float32(max(self.peak, kam_nmf.EPS))

    def read(self, first: int, last: int) -> np.ndarray:
        return self.magnitude.read(first, last) / self.scale()


def _pad(array: np.ndarray, size: int, axis: int = -1) -> np.ndarray:
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, size - array.shape[axis])
    return np.pad(array, widths)


@functools.partial(jax.jit, static_argnames=("settings", "atoms", "update_h", "accumulate"))
def _nmf_block(V, W, H, valid, *, settings: kam_nmf.Settings, atoms: int, update_h: bool, accumulate: bool):
    """One block's share of an NMF pass: ``H`` updated with ``W`` (:func:`bleedjax.nmf.update_H`),
    then the block's sums for the next ``W`` (:func:`bleedjax.nmf.W_sums`)."""
    if update_h:
        H = nmf.update_H(V, W, H, beta=settings.beta, sparsity=settings.sparsity, weights=valid)
    sums = nmf.W_sums(V, W, H, beta=settings.beta, fixed=atoms, weights=valid) if accumulate else None
    return H, sums


@functools.partial(jax.jit, static_argnames=("atoms",))
def _share(W, H, valid, *, atoms: int):
    return kam_nmf.interference_share(*kam_nmf.estimates(W, H, atoms), valid)


@functools.partial(jax.jit, static_argnames=("atoms",))
def _start_gain(W, H, *, atoms: int):
    return kam_nmf.start_gain(*kam_nmf.estimates(W, H, atoms))


@functools.partial(jax.jit, static_argnames=("settings", "atoms"))
def _gain_block(
    V: Float[Array, "bins frames"],
    W: Float[Array, "bins components"],
    H: Float[Array, "components frames"],
    values: Float[Array, "bins columns"],
    neighbours: Int[Array, "frames k"],
    corrupted: Float[Array, " frames"],
    index: Int[Array, ""],
    *,
    settings: kam_nmf.Settings,
    atoms: int,
) -> Float[Array, "bins frames"]:
    """One KAM iteration's gain on a block, from the music estimate at its neighbours."""
    N0, M0 = kam_nmf.estimates(W, H, atoms)
    if settings.variant == "nmf":
        return kam_nmf.nmf_gain(N0, M0)
    median = hubness.chosen_median(values, neighbours, index, settings.candidates, block=settings.block)
    return kam_nmf.kam_gain(median, V, N0, M0, corrupted)


def _bucket(count: int, cap: int) -> int:
    """A size for ``count`` gathered columns from few distinct sizes (few compilations)."""
    return min(cap, max(64, 1 << (max(count, 1) - 1).bit_length()))


class _Run:
    """The passes of the module docstring over one session's tracks."""

    def __init__(self, reader, dictionary, settings: kam_nmf.Settings, long: LongSettings, progress: bool):
        if settings.variant == "kam":
            raise ValueError("variant 'kam' (KAM alone, similarity on the spectrogram) has no streaming "
                             "path for long recordings; use kam-nmf or nmf")
        self.reader, self.settings, self.long, self.progress = reader, settings, long, progress
        self.dictionary = jnp.asarray(dictionary)
        self.atoms = dictionary.shape[1]
        self.bins = settings.n_fft // 2 + 1
        if dictionary.shape[0] != self.bins:
            raise ValueError(f"dictionary has {dictionary.shape[0]} bins, n_fft={settings.n_fft} needs {self.bins}")
        self.frames = streaming.num_frames(reader.length, settings.n_fft, settings.hop)
        self.valid = np.asarray(signal.frame_mask(reader.length, self.frames, n_fft=settings.n_fft, hop=settings.hop))
        self.blocks = streaming.block_ranges(self.frames, long.block_frames)
        self.tracks: list[_Track] = []

    def _progress(self, label: str):
        return streaming.progress_blocks(self.blocks, label, self.progress)

    def _stft(self, first: int, last: int) -> np.ndarray:
        s = self.settings
        return np.asarray(streaming.stft_block(self.reader, first, last, n_fft=s.n_fft, hop=s.hop, window=s.window))

    def spectrogram(self) -> None:
        self.tracks = [_Track(FrameStore(self.bins, self.frames)) for _ in range(self.reader.num_tracks)]
        for first, last in self._progress("spectrogram"):
            magnitude = np.abs(self._stft(first, last))
            for track, block in zip(self.tracks, magnitude):
                track.magnitude.write(first, block)
                track.peak = max(track.peak, float(block.max(initial=0.0)))
                track.total += float(block.sum(dtype=np.float64))

    def _block(self, first: int, last: int):
        size = self.long.block_frames
        return size, jnp.asarray(_pad(self.valid[first:last], size))

    def factorise(self) -> None:
        s = self.settings
        for track in self.tracks:
            mean = jnp.asarray(np.float32(track.total / (self.bins * self.frames)) / track.scale())
            W, H = kam_nmf.initial_factors(self.dictionary, mean, self.frames, s)
            track.W, track.H = W, np.array(H)
        for p in range(s.nmf_iterations + 1 if s.nmf_iterations else 0):
            update_h, accumulate = p > 0, p < s.nmf_iterations
            sums = [None] * len(self.tracks)
            for first, last in self._progress(f"NMF pass {p + 1}/{s.nmf_iterations + 1}"):
                size, valid = self._block(first, last)
                for i, track in enumerate(self.tracks):
                    V = jnp.asarray(_pad(track.read(first, last), size))
                    H, block_sums = _nmf_block(V, track.W, jnp.asarray(_pad(track.H[:, first:last], size)), valid,
                                               settings=s, atoms=self.atoms, update_h=update_h, accumulate=accumulate)
                    track.H[:, first:last] = np.asarray(H)[:, : last - first]
                    if accumulate:
                        sums[i] = block_sums if sums[i] is None else jax.tree.map(jnp.add, sums[i], block_sums)
            if accumulate:
                for track, (numerator, denominator) in zip(self.tracks, sums):
                    track.W = nmf.apply_W_sums(track.W, numerator, denominator, beta=s.beta, fixed=self.atoms)

    def locate(self) -> None:
        """The interference share per frame and the similarity kernel (steps 2–3)."""
        valid = jnp.asarray(self.valid)
        for track in self.tracks:
            track.share = np.concatenate([
                np.asarray(_share(track.W, jnp.asarray(track.H[:, a:b]), valid[a:b], atoms=self.atoms))
                for a, b in self.blocks
            ])
            if self.settings.variant == "kam-nmf":
                features = kam_nmf.music_features(track.W, jnp.asarray(track.H), self.atoms)
                track.kernel = kam_nmf.similarity_kernel(features, self.settings, valid)
                track.neighbours = np.asarray(track.kernel.neighbours)

    def _music_at(self, track: _Track, columns: np.ndarray, iteration: int) -> np.ndarray:
        """The music estimate ``G V`` of the previous iteration at frames ``columns``."""
        V = track.magnitude.gather(columns) / track.scale()
        if iteration == 0:
            gain = _start_gain(track.W, jnp.asarray(track.H[:, columns]), atoms=self.atoms)
        else:
            gain = track.gain.gather(columns)
        return np.asarray(gain) * V

    def gain(self, track: _Track, first: int, last: int, iteration: int) -> np.ndarray:
        """Iteration ``iteration``'s (from 0) gain ``(bins, last - first)`` of one block."""
        size, _ = self._block(first, last)
        corrupted = (track.share[first:last] > self.settings.detection_threshold).astype(np.float32)
        k = max(self.settings.candidates)
        if track.neighbours is None or not corrupted.any():
            columns, local = np.zeros(1, np.int64), np.zeros((last - first, k), np.int32)
        else:
            rows = track.neighbours[first:last]
            columns = np.unique(rows[corrupted > 0])
            local = np.minimum(np.searchsorted(columns, rows), len(columns) - 1).astype(np.int32)
        values = self._music_at(track, columns, iteration) if corrupted.any() else np.zeros((self.bins, 1), np.float32)
        index = jnp.zeros((), jnp.int32) if track.kernel is None else track.kernel.index
        gain = _gain_block(
            jnp.asarray(_pad(track.read(first, last), size)), track.W, jnp.asarray(_pad(track.H[:, first:last], size)),
            jnp.asarray(_pad(values, _bucket(values.shape[1], size * k))), jnp.asarray(_pad(local, size, axis=0)),
            jnp.asarray(_pad(corrupted, size)), index, settings=self.settings, atoms=self.atoms,
        )
        return np.asarray(gain)[:, : last - first]

    def refine(self) -> None:
        """KAM iterations before the last, each gain into a frame store (step 4)."""
        if self.settings.variant != "kam-nmf":
            return
        for iteration in range(self.settings.kam_iterations - 1):
            stores = [FrameStore(self.bins, self.frames) for _ in self.tracks]
            for first, last in self._progress(f"KAM pass {iteration + 1}/{self.settings.kam_iterations}"):
                for track, store in zip(self.tracks, stores):
                    store.write(first, self.gain(track, first, last, iteration))
            for track, store in zip(self.tracks, stores):
                if track.gain is not None:
                    track.gain.close()
                track.gain = store

    def write(self, out_dir: pathlib.Path) -> dict[str, int]:
        """The last gain on each block's STFT, streamed into ``out_dir`` and its ``interference/``;
        returns the samples clipped in the cleaned PCM files (:attr:`bleedjax.streaming.TrackWriter.clipped`)."""
        s = self.settings
        last_iteration = s.kam_iterations - 1 if s.variant == "kam-nmf" else 0
        writer = functools.partial(streaming.OverlapAddWriter, self.reader, total_frames=self.frames, n_fft=s.n_fft,
                                   hop=s.hop, window=s.window)
        music = writer(out_dir, offsets=self.reader.offsets)
        with streaming.committed(music):
            interference = writer(out_dir / "interference")
            with streaming.committed(interference):
                for first, last in self._progress("output"):
                    gain = np.stack([self.gain(track, first, last, last_iteration) for track in self.tracks])
                    spec = self._stft(first, last)
                    music.add(first, gain * spec)
                    interference.add(first, (1.0 - gain) * spec)
        return music.clipped

    def close(self) -> None:
        for track in self.tracks:
            track.magnitude.close()
            if track.gain is not None:
                track.gain.close()


def reduce_long(
    folder: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    dictionary: np.ndarray,
    settings: kam_nmf.Settings,
    long: LongSettings = LongSettings(),
    *,
    pad: bool = False,
    progress: bool = False,
    offsets: np.ndarray | None = None,
    leave_out: tuple[str, ...] = (),
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Cleans every track of a session folder of any length into ``out_dir`` (the removed
    interference into ``out_dir/interference``).

    Args:
        folder: the session (one track or more; each is processed on its own).
        out_dir: where the cleaned files go, in the session's layout.
        dictionary: ``(n_fft // 2 + 1, atoms)`` interference dictionary.
        settings: as for :func:`bleedjax.methods.kam_nmf.reduce_track`.
        long: streaming settings.
        pad: zero-pad files of unequal length.
        progress: show progress bars.
        offsets: ``(tracks,)`` DC offsets taken out before and put back on the cleaned tracks
            (not on the interference), from :meth:`~bleedjax.streaming.SessionReader.scan_offsets`.
        leave_out: file names of the folder that are not part of the session (``reduce --keep``).

    Returns:
        ``(tracks, frames)`` the interference share per frame, ``(tracks,)`` the ``k`` used and
        the samples clipped in the cleaned PCM files (:attr:`bleedjax.streaming.TrackWriter.clipped`).
    """
    reader = streaming.SessionReader(folder, pad=pad, min_tracks=1, offsets=offsets, leave_out=leave_out)
    run = _Run(reader, np.asarray(dictionary, np.float32), settings, long, progress)
    try:
        run.spectrogram()
        run.factorise()
        run.locate()
        run.refine()
        clipped = run.write(pathlib.Path(out_dir))
    finally:
        run.close()
    ks = [settings.k if t.kernel is None else int(t.kernel.k(settings)) for t in run.tracks]
    return np.stack([t.share for t in run.tracks]), np.asarray(ks), clipped
