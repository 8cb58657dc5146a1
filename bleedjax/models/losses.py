"""Training losses of the neural models on one batch of the data pipeline.

t-UNet, ``"matrix"`` (the paper [1], Sec. 3.2 and the authors' ``calc_interferenceMatrix``): the
target is the least-squares interference matrix of every example, ``Λ = X · pinv(S)`` (``X``:
``(J, T)`` microphones, ``S``: ``(J, T)`` sources), and the loss is the mean squared error of Λ̂.
``pinv(S) = Sᵀ (S Sᵀ)⁺``, so Λ is computed from the ``(J, J)`` Gram matrices instead of an SVD of
the ``(J, T)`` signal. A silent source ``j`` leaves column ``j`` of Λ undetermined (pinv sets it to
zero): those columns are left out of the mean.

t-UNet with ``frequency_bands > 1``: one real Λ per band of STFT bins, the least-squares fit of
``X(f, t) ≈ Λ_b S(f, t)`` over the band's bins and all frames,
``Λ_b = Re(Σ X Sᴴ) · Re(Σ S Sᴴ)⁺`` (which equals ``X · pinv(S)`` for frequency-independent bleed).

t-UNet, ``"signal"`` (beyond [1]): the sources are reconstructed, ``Ŝ = pinv(Λ̂) X`` (per band for
a frequency-dependent Λ̂), and compared with ``S`` on STFT magnitudes: each track's squared error
divided by its energy ``E_j = Σ|S_j|²`` (for a silent source the microphone's energy ``Σ|X_j|²``,
so whatever is left in that track is penalised relative to the bleed it started from; never less
than ``ENERGY_FLOOR`` of the mean microphone energy), as ``log(1 + error / E_j)``, which is the
relative error when it is small and keeps the gradients bounded when a nearly singular Λ̂ makes
``pinv(Λ̂) X`` explode (without the log, training on room bleed reached gradient norms of 1e10).
``STFT(pinv(Λ̂) X) = pinv(Λ̂) STFT(X)``, so this is computed on the microphones' STFT.

t-UNet, ``"gains"`` (beyond [1]): the MSE of Λ̂ against the amplitude bleed matrix that the
bleed augmentation drew (``batch["matrix"]``: Seipel's gains ``A``, the paper's matrix, or a room's
image-RMS ratios; :mod:`bleedjax.data.augment`), in every band. ``X · pinv(S)`` is a
waveform-domain target: with bleed delayed by a few milliseconds (Seipel's free-field delays, any
room) the delayed source is nearly uncorrelated with the undelayed one and the target shrinks
towards the identity, although the bleed is as loud as ever. The gains are what a
delay-insensitive demixer (:func:`bleedjax.models.inference.wiener_spectrogram`) needs.

CAE, ``"magnitude"`` ([1] Sec. 3.1): mean squared error of the predicted magnitude frames.

References:
    [1] Rajesh R, P. Rajan, "Neural networks for interference reduction in multi-track
        recordings", IEEE WASPAA 2023.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bleedjax import signal
from bleedjax._types import Array, Bool, Complex, Float, Int
from bleedjax.models import inference

HIGHEST = jax.lax.Precision.HIGHEST
ENERGY_FLOOR = 1e-3


def interference_matrix(
    mics: Float[Array, "*batch tracks samples"], targets: Float[Array, "*batch tracks samples"]
) -> Float[Array, "*batch tracks tracks"]:
    """The paper's training target ``Λ = X · pinv(S)`` of every example, ``X Sᵀ (S Sᵀ)⁺``."""
    cross = jnp.einsum("...it,...jt->...ij", mics, targets, precision=HIGHEST)
    gram = jnp.einsum("...it,...jt->...ij", targets, targets, precision=HIGHEST)
    return jnp.matmul(cross, inference.pinv_each(gram, hermitian=True), precision=HIGHEST)


def banded_interference_matrix(
    mics: Complex[Array, "*batch tracks bins frames"],
    targets: Complex[Array, "*batch tracks bins frames"],
    band_index: Int[Array, " bins"],
    bands: int,
) -> Float[Array, "*batch bands tracks tracks"]:
    """The real least-squares Λ of every band of STFT bins (module docstring), every example."""
    members = jax.nn.one_hot(band_index, bands, dtype=jnp.float32)
    cross = jnp.einsum("...ift,...jft,fb->...bij", mics, jnp.conj(targets), members, precision=HIGHEST).real
    gram = jnp.einsum("...ift,...jft,fb->...bij", targets, jnp.conj(targets), members, precision=HIGHEST).real
    return jnp.matmul(cross, inference.pinv_each(gram, hermitian=True), precision=HIGHEST)


def masked_mean(values: Float[Array, "*shape"], mask: Float[Array, "*shape"]) -> Float[Array, ""]:
    """``Σ mask · values / Σ mask`` (0 when the mask is empty)."""
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def matrix_loss(
    predicted: Float[Array, "batch *bands tracks tracks"],
    target: Float[Array, "batch *bands tracks tracks"],
    active: Bool[Array, "batch tracks"],
) -> Float[Array, ""]:
    """MSE between Λ̂ and Λ over the columns of active sources."""
    columns = active.astype(predicted.dtype)
    mask = jnp.broadcast_to(columns.reshape(columns.shape[0], *([1] * (predicted.ndim - 2)), columns.shape[1]),
                            predicted.shape)
    return masked_mean((predicted - target) ** 2, mask)


def signal_loss(
    estimate: Complex[Array, "tracks bins frames"],
    reference: Complex[Array, "tracks bins frames"],
    mics: Complex[Array, "tracks bins frames"],
    active: Bool[Array, " tracks"],
) -> Float[Array, ""]:
    """Per-track relative STFT-magnitude error of one example on a log scale, averaged over
    tracks (module docstring): ``log(1 + Σ(|Ŝ_j| − |S_j|)² / E_j)``."""
    error = jnp.sum((jnp.abs(estimate) - jnp.abs(reference)) ** 2, axis=(1, 2))
    mic_energy = jnp.sum(jnp.abs(mics) ** 2, axis=(1, 2))
    energy = jnp.where(active, jnp.sum(jnp.abs(reference) ** 2, axis=(1, 2)), mic_energy)
    floor = ENERGY_FLOOR * jnp.mean(mic_energy) + 1e-20
    return jnp.mean(jnp.log1p(error / jnp.maximum(energy, floor)))


def tunet_loss(model, batch: dict, config) -> tuple[Float[Array, ""], dict]:
    """The t-UNet loss of ``config.loss`` (``"matrix"``, ``"gains"`` or ``"signal"``) on a batch.

    Args:
        model: a :class:`~bleedjax.models.tunet.TUNet`.
        batch: ``"mics"``, ``"targets"`` ``(B, J, T)``, ``"active"`` ``(B, J)`` and, for
            ``"gains"``, ``"matrix"`` ``(B, J, J)``.
        config: the training config (``config.loss``, ``config.model``).

    Returns:
        the scalar loss and ``{"matrix_mse": ..., "signal_error": ...}`` (the metric of the
        other variant is reported too, without gradient, where it is cheap: ``matrix_mse`` always).
    """
    mics, targets = batch["mics"], batch["targets"]
    active = batch["active"].astype(bool)
    model_config = config.model
    lam_hat = model(mics)
    bands = model_config.get("frequency_bands", 1)
    n_fft, hop = model_config.n_fft, model_config.hop
    if config.loss == "gains":
        gains = batch["matrix"]
        target = gains if bands == 1 else jnp.broadcast_to(gains[:, None], lam_hat.shape)
    elif bands == 1:
        target = interference_matrix(mics, targets)
    else:
        band_index = jnp.asarray(_band_index(model_config, config))
        mic_spec = signal.stft(mics, n_fft=n_fft, hop=hop)
        ref_spec = signal.stft(targets, n_fft=n_fft, hop=hop)
        target = banded_interference_matrix(mic_spec, ref_spec, band_index, bands)
    matrix_mse = matrix_loss(lam_hat, jax.lax.stop_gradient(target), active)
    aux = {"matrix_mse": matrix_mse}
    if config.loss in ("matrix", "gains"):
        return matrix_mse, aux
    if config.loss != "signal":
        raise ValueError(f"t-UNet loss must be 'matrix', 'gains' or 'signal', got {config.loss!r}")
    if bands == 1:
        mic_spec = signal.stft(mics, n_fft=n_fft, hop=hop)
        ref_spec = signal.stft(targets, n_fft=n_fft, hop=hop)
        per_band = lam_hat[:, None]
        band_index = jnp.zeros(mic_spec.shape[-2], jnp.int32)
    else:
        per_band = lam_hat
    unmixing = inference.pinv_each(per_band)
    estimate = jax.vmap(inference.demix_spectrogram, in_axes=(0, 0, None))(mic_spec, unmixing, band_index)
    error = jnp.mean(jax.vmap(signal_loss)(estimate, ref_spec, mic_spec, active))
    return error, aux | {"signal_error": error}


def _band_index(model_config, config):
    rate = model_rate(config)
    return inference.band_of_bin(
        model_config.frequency_bands, n_fft=model_config.n_fft, sample_rate=rate,
        model_n_fft=model_config.n_fft, model_rate=rate,
    )


def model_rate(config) -> float:
    """The sample rate a model is trained at: ``config.data.sample_rate`` (22 050 Hz, the
    paper's, when the config has no data section)."""
    data = config.get("data") if hasattr(config, "get") else None
    return float(data.sample_rate) if data is not None and "sample_rate" in data else 22050.0


def cae_loss(model, batch: dict, config) -> tuple[Float[Array, ""], dict]:
    """The CAE's magnitude MSE ([1] Sec. 3.1) on the tracks of ``config.model.stem``.

    Every selected track contributes ``config.model.train_frames`` evenly spaced context windows
    (all frames when 0); inputs and targets are divided by the microphone's mean magnitude
    (:func:`bleedjax.models.cae.track_scale`), as at inference.
    """
    from bleedjax.models import cae

    model_config = config.model
    index = cae.stem_tracks(model_config, config, batch["mics"].shape[1])
    mics = batch["mics"][:, index].reshape(-1, batch["mics"].shape[-1])
    targets = batch["targets"][:, index].reshape(-1, batch["targets"].shape[-1])
    n_fft, hop = model_config.n_fft, model_config.hop
    mic_mag = jnp.abs(signal.stft(mics, n_fft=n_fft, hop=hop))
    ref_mag = jnp.abs(signal.stft(targets, n_fft=n_fft, hop=hop))
    scale = jax.vmap(cae.track_scale)(mic_mag)[:, None, None]
    frames = cae.training_frames(mic_mag.shape[-1], model_config.get("train_frames", 0))
    context = model_config.context_frames
    windows = jax.vmap(cae.context_windows, in_axes=(0, None, None))(mic_mag / scale, context, frames)
    wanted = jax.vmap(cae.context_windows, in_axes=(0, None, None))(ref_mag / scale, context, frames)
    predicted = model(windows.reshape(-1, *windows.shape[2:]))
    mse = jnp.mean((predicted - wanted.reshape(predicted.shape)) ** 2)
    return mse, {"magnitude_mse": mse}
