"""bleedjax.metrics against mir_eval (BSS Eval v3), a NumPy re-implementation of museval's v4,
direct formulas (SI-SDR, Seipel & Lerch Table 3, Frobenius) and the silent-signal cases."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile

from bleedjax import metrics

mir_eval_separation = pytest.importorskip("mir_eval.separation")

TOL_DB = 0.01
RATE = 8000


def _mir_eval(name, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(mir_eval_separation, name)(*args, **kwargs)


def _mir_eval_sources(refs, ests):
    out = _mir_eval(
        "bss_eval_sources", np.float64(refs), np.float64(ests), compute_permutation=False
    )
    return np.stack(out[:3])


def _stack(result):
    return np.stack([np.asarray(m) for m in result])


def _delay(x, samples):
    return np.concatenate(
        [np.zeros(x.shape[:-1] + (samples,)), x[..., : x.shape[-1] - samples]], -1
    )


def _random_case(seed=0, sources=3, samples=RATE):
    """References, and estimates = known linear mix of the references + noise (float32)."""
    rng = np.random.default_rng(seed)
    refs = rng.standard_normal((sources, samples))
    mix = np.eye(sources) + 0.3 * rng.standard_normal((sources, sources))
    ests = mix @ refs + 0.05 * rng.standard_normal((sources, samples))
    ests[0] = ests[0] + 0.5 * _delay(ests[0], 3)
    return refs.astype(np.float32), ests.astype(np.float32)


def test_sources_match_mir_eval_on_random_mix():
    refs, ests = _random_case()
    ours = _stack(metrics.bss_eval_sources(jnp.asarray(refs), jnp.asarray(ests)))
    expected = _mir_eval_sources(refs, ests)
    assert ours.shape == (3, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, rtol=0, atol=TOL_DB)


def test_sources_match_mir_eval_on_real_audio(shared_data):
    names = ("violin1", "violin2", "cello", "oboe1")
    refs = np.stack(
        [soundfile.read(shared_data / "phenicx-anechoic-excerpt" / f"{n}.wav")[0] for n in names]
    )
    refs = refs[:, :44100]
    rng = np.random.default_rng(1)
    leak = 0.1 + 0.2 * rng.random((4, 4))
    ests = refs.copy()
    for i in range(4):
        for j in range(4):
            if i != j:
                ests[i] += leak[i, j] * _delay(refs[j], 5 + 7 * i + 3 * j)
    ests += 1e-3 * rng.standard_normal(ests.shape)
    refs, ests = refs.astype(np.float32), ests.astype(np.float32)
    ours = _stack(metrics.bss_eval_sources(jnp.asarray(refs), jnp.asarray(ests)))
    # the Gram matrix of real music is ill-conditioned: a float32 solve misses here by ~30 dB
    np.testing.assert_allclose(ours, _mir_eval_sources(refs, ests), rtol=0, atol=TOL_DB)


def test_sources_with_a_reference_given_twice_match_mir_eval():
    """A source given twice (or scaled) makes the Gram system singular: mir_eval falls back to
    least squares, and so do these (every source's SIR and SAR were NaN). A reference that is a
    sum of two others is not caught (the LU solve stays finite): left undone."""
    refs, ests = _random_case(seed=1)
    for copy in (refs[0], 0.5 * refs[0]):
        refs[1] = copy
        ours = _stack(metrics.bss_eval_sources(jnp.asarray(refs), jnp.asarray(ests)))
        np.testing.assert_allclose(ours, _mir_eval_sources(refs, ests), rtol=0, atol=TOL_DB)


def test_sources_silent_reference_is_nan_and_the_others_are_mir_eval_without_it():
    refs, ests = _random_case(seed=2)
    refs[1] = 0.0
    ours = _stack(metrics.bss_eval_sources(jnp.asarray(refs), jnp.asarray(ests)))
    assert np.all(np.isnan(ours[:, 1]))
    # A silent reference adds nothing to the span of the references: the other sources' numbers
    # are those of mir_eval on the sources without it (mir_eval itself raises on the silent one).
    with pytest.raises(ValueError):
        _mir_eval_sources(refs, ests)
    keep = [0, 2]
    np.testing.assert_allclose(
        ours[:, keep], _mir_eval_sources(refs[keep], ests[keep]), atol=TOL_DB
    )


def test_sources_silent_estimate_is_nan_and_the_others_unchanged():
    refs, ests = _random_case(seed=3)
    ests[2] = 0.0
    ours = _stack(metrics.bss_eval_sources(jnp.asarray(refs), jnp.asarray(ests)))
    assert np.all(np.isnan(ours[:, 2])) and not np.any(np.isinf(ours))
    filled = ests.copy()
    filled[2] = refs[2]
    np.testing.assert_allclose(ours[:, :2], _mir_eval_sources(refs, filled)[:, :2], atol=TOL_DB)


def test_integer_pcm_gives_float_decibels_and_nan_for_silence():
    refs, ests = _random_case(seed=4)
    scale = 3000.0 / np.abs(refs).max()
    refs16, ests16 = (np.round(x * scale).astype(np.int16) for x in (refs, ests))
    refs16[1] = 0
    ours = metrics.bss_eval_sources(jnp.asarray(refs16), jnp.asarray(ests16))
    assert ours.sdr.dtype == jnp.float32 and np.isnan(ours.sdr[1])
    floats = metrics.bss_eval_sources(jnp.asarray(refs16, jnp.float32), jnp.asarray(ests16, jnp.float32))
    np.testing.assert_array_equal(np.asarray(ours.sdr), np.asarray(floats.sdr))
    assert np.isfinite(float(metrics.si_sdr(jnp.asarray(refs16[0]), jnp.asarray(ests16[0]))))
    with pytest.raises((ValueError, TypeError), match="sources,? samples"):  # TypeError: jaxtyping in tests
        metrics.bss_eval_sources(jnp.asarray(refs[0]), jnp.asarray(ests[0]))


def test_sources_jit_vmap_and_no_global_x64():
    refs, ests = _random_case(seed=4)
    batch_refs = jnp.stack([jnp.asarray(refs), jnp.asarray(refs)])
    batch_ests = jnp.stack([jnp.asarray(ests), 0.5 * jnp.asarray(refs) + jnp.asarray(ests)])
    batched = _stack(jax.jit(jax.vmap(metrics.bss_eval_sources))(batch_refs, batch_ests))
    for b in range(2):
        expected = _mir_eval_sources(np.asarray(batch_refs[b]), np.asarray(batch_ests[b]))
        np.testing.assert_allclose(batched[:, b], expected, atol=TOL_DB)
    assert not jax.config.jax_enable_x64
    assert jnp.asarray(1.0).dtype == jnp.float32
    with pytest.raises((ValueError, TypeError)):  # TypeError: jaxtyping's runtime check
        metrics.bss_eval_sources(jnp.asarray(refs), jnp.asarray(ests[:2]))


def _delayed_columns(x, taps):
    """``(len(x) + taps - 1, taps)``: column ``a`` is ``x`` delayed by ``a`` samples."""
    out = np.zeros((x.size + taps - 1, taps))
    for a in range(taps):
        out[a : a + x.size, a] = x
    return out


def _db(num, den):
    return 10 * np.log10(np.sum(num**2) / np.sum(den**2))


def _numpy_v4(refs, ests, window, hop, taps):
    """Float64 BSS Eval v4 images (museval ``framewise_filters=False``) by explicit least squares
    on time-domain delay matrices: filters fitted on the whole signal, applied per window."""
    sources, samples, channels = refs.shape
    refs, ests = np.float64(refs), np.float64(ests)

    def basis(r):
        return np.concatenate(
            [
                _delayed_columns(r[j, :, c], taps)
                for j in range(r.shape[0])
                for c in range(channels)
            ],
            1,
        )

    def fit(columns, target):
        keep = np.any(columns != 0, axis=0)
        filt = np.zeros((columns.shape[1], channels))
        filt[keep] = np.linalg.lstsq(columns[:, keep], target, rcond=None)[0]
        return filt

    pad = np.zeros((taps - 1, channels))
    full = basis(refs)
    filters = [
        (
            fit(full, np.vstack([ests[j], pad])),
            fit(basis(refs[j : j + 1]), np.vstack([ests[j], pad])),
        )
        for j in range(sources)
    ]
    frames = (samples - window + hop) // hop if window < samples else 1
    window = min(window, samples)
    out = np.full((4, sources, frames), np.nan)
    for t in range(frames):
        win = slice(t * hop, t * hop + window)
        cols = basis(refs[:, win])
        for j, (f_all, f_own) in enumerate(filters):
            s_true = np.vstack([refs[j, win], pad])
            est = np.vstack([ests[j, win], pad])
            if not (np.any(s_true) and np.any(est)):
                continue
            p_all = cols @ f_all
            p_own = basis(refs[j : j + 1, win]) @ f_own
            out[:, j, t] = [
                _db(s_true, est - s_true),
                _db(s_true, p_own - s_true),
                _db(p_own, p_all - p_own),
                _db(p_all, est - p_all),
            ]
    return out


def _stereo_case(seed, sources=3, samples=4000):
    rng = np.random.default_rng(seed)
    refs = rng.standard_normal((sources, samples, 2))
    mix = np.eye(sources) + 0.3 * rng.standard_normal((sources, sources))
    ests = np.einsum("ij,jnc->inc", mix, refs) + 0.05 * rng.standard_normal(refs.shape)
    ests[0, :, 1] += 0.7 * _delay(ests[0, :, 0], 2)
    return refs.astype(np.float32), ests.astype(np.float32)


V4 = {"window": 1000, "hop": 750, "filter_length": 32}


def test_v4_framewise_matches_numpy_reference():
    refs, ests = _stereo_case(5)
    ours = _stack(metrics.bss_eval_images_framewise(jnp.asarray(refs), jnp.asarray(ests), **V4))
    expected = _numpy_v4(refs, ests, V4["window"], V4["hop"], V4["filter_length"])
    assert ours.shape == (4, 3, 5)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=TOL_DB)
    # whole-signal filters: frames differ from re-fitting per window (mir_eval's v3 framewise)
    v3 = _numpy_v4(refs[:, :1000], ests[:, :1000], 1000, 1000, 32)[:, :, 0]
    assert np.max(np.abs(ours[:, :, 0] - v3)) > 0.05


def test_v4_single_frame_equals_mir_eval_bss_eval_images():
    refs, ests = _stereo_case(6, sources=2, samples=3000)
    ours = _stack(
        metrics.bss_eval_images_framewise(
            jnp.asarray(refs), jnp.asarray(ests), window=4000, hop=4000
        )
    )
    expected = _mir_eval(
        "bss_eval_images", np.float64(refs), np.float64(ests), compute_permutation=False
    )
    assert ours.shape == (4, 2, 1)
    np.testing.assert_allclose(ours[..., 0], np.stack(expected[:4]), rtol=0, atol=TOL_DB)


def test_v4_silent_frames_and_sources_are_nan_and_aggregation_skips_them():
    refs, ests = _stereo_case(7)
    refs[1, 750:1750] = 0.0  # frame 1 of source 1
    ests[2, 2250:] = 0.0  # frames 3, 4 of source 2
    ours = _stack(metrics.bss_eval_images_framewise(jnp.asarray(refs), jnp.asarray(ests), **V4))
    expected = _numpy_v4(refs, ests, V4["window"], V4["hop"], V4["filter_length"])
    nan = np.isnan(ours)
    assert nan[:, 1, 1].all() and nan[:, 2, 3:].all() and nan.sum() == 4 * 3
    assert not np.any(np.isinf(ours))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=TOL_DB)

    sdr = ours[0]
    median = np.asarray(metrics.nan_aggregate(jnp.asarray(sdr), axis=-1, how="median"))
    mean = np.asarray(metrics.nan_aggregate(jnp.asarray(sdr), how="mean"))
    np.testing.assert_allclose(median[2], np.median(sdr[2, :3]), rtol=1e-6)
    np.testing.assert_allclose(median[1], np.median(sdr[1, [0, 2, 3, 4]]), rtol=1e-6)
    np.testing.assert_allclose(mean, np.mean(sdr[~np.isnan(sdr)]), rtol=1e-6)
    with pytest.raises((ValueError, TypeError)):
        metrics.nan_aggregate(jnp.asarray(sdr), how="max")


def test_v4_wholly_silent_reference_does_not_crash():
    refs, ests = _stereo_case(8)
    refs[0] = 0.0
    ours = _stack(metrics.bss_eval_images_framewise(jnp.asarray(refs), jnp.asarray(ests), **V4))
    assert np.isnan(ours[:, 0]).all()
    expected = _numpy_v4(refs[1:], ests[1:], V4["window"], V4["hop"], V4["filter_length"])
    np.testing.assert_allclose(ours[:, 1:], expected, rtol=0, atol=TOL_DB)


def test_si_sdr_formula_scale_invariance_and_silence():
    rng = np.random.default_rng(9)
    refs = rng.standard_normal((3, 2000))
    ests = refs + rng.uniform(0.1, 1.0, (3, 1)) * rng.standard_normal((3, 2000))
    alpha = np.sum(refs * ests, 1, keepdims=True) / np.sum(refs**2, 1, keepdims=True)
    expected = 10 * np.log10(np.sum((alpha * refs) ** 2, 1) / np.sum((ests - alpha * refs) ** 2, 1))
    si_sdr = jax.vmap(metrics.si_sdr)
    r, e = jnp.asarray(refs, jnp.float32), jnp.asarray(ests, jnp.float32)
    ours = np.asarray(si_sdr(r, e))
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    np.testing.assert_allclose(np.asarray(si_sdr(r, 3.7 * e)), ours, atol=1e-4)
    np.testing.assert_allclose(np.asarray(si_sdr(0.01 * r, e)), ours, atol=1e-4)
    silent = np.asarray(si_sdr(r.at[0].set(0.0), e.at[1].set(0.0)))
    assert np.isnan(silent[:2]).all() and np.isclose(silent[2], ours[2], atol=1e-4)


def _circulant(first_row):
    return np.stack([np.roll(first_row, k) for k in range(len(first_row))])


def test_table3_correlation_exact_and_imperfect():
    mixing = _circulant(np.array([1.0, 0.3, 0.1, 0.2]))
    inverse = np.linalg.inv(mixing)
    lam = np.eye(4) - inverse / np.diag(inverse)[:, None]  # unit-diagonal rows of A^-1
    assert np.allclose(np.diag(lam), 0.0)
    a, l = jnp.asarray(mixing, jnp.float32), jnp.asarray(lam, jnp.float32)
    assert np.isclose(metrics.table3_correlation(a, l), 1.0, atol=1e-5)
    assert np.isclose(metrics.table3_correlation(a, l, off_diagonal_only=True), 1.0, atol=1e-5)

    rng = np.random.default_rng(10)
    noisy = lam + 0.05 * (1 - np.eye(4)) * rng.standard_normal((4, 4))
    full = float(metrics.table3_correlation(a, jnp.asarray(noisy, jnp.float32)))
    off = float(
        metrics.table3_correlation(a, jnp.asarray(noisy, jnp.float32), off_diagonal_only=True)
    )
    unmix = np.eye(4) - noisy
    mask = ~np.eye(4, dtype=bool)
    assert np.isclose(full, np.corrcoef(inverse.ravel(), unmix.ravel())[0, 1], atol=1e-5)
    assert np.isclose(off, np.corrcoef(inverse[mask], unmix[mask])[0, 1], atol=1e-5)
    assert off < full < 1.0

    two = np.array([[1.0, 0.4], [0.25, 1.0]])  # any 2x2: row-normalised A^-1 is a multiple of it
    lam2 = np.array([[0.0, 0.4], [0.25, 0.0]])
    assert np.isclose(
        metrics.table3_correlation(jnp.asarray(two), jnp.asarray(lam2)), 1.0, atol=1e-5
    )


def test_frobenius_distance():
    rng = np.random.default_rng(11)
    true = rng.standard_normal((4, 4))
    est = true + 0.1 * rng.standard_normal((4, 4))
    expected = np.sqrt(np.sum((est - true) ** 2))
    t, e = jnp.asarray(true, jnp.float32), jnp.asarray(est, jnp.float32)
    assert np.isclose(metrics.frobenius_distance(e, t), expected, rtol=1e-5)
    assert np.isclose(
        metrics.frobenius_distance(e, t, relative=True), expected / np.linalg.norm(true), rtol=1e-5
    )
    assert float(metrics.frobenius_distance(t, t)) == 0.0


def test_block_correlations_equal_the_direct_sums_across_blocks():
    """The overlap-save cross-correlations behind the Gram system equal ``Σ_u x_i[u + m] y_j[u]``
    at every lag ``|m| < L``, on signals spanning several blocks and ending inside one."""
    from bleedjax.metrics import bss_eval

    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((2, 40000)), rng.standard_normal((3, 40000))
    lags = 64
    with jax.enable_x64(True):
        ours = np.asarray(bss_eval._delayed_correlations(jnp.asarray(x), jnp.asarray(y), lags))
    assert ours.shape == (2, 3, 2 * lags - 1) and 40000 > bss_eval.CORRELATION_FFT
    direct = np.array([[[x[i, max(m, 0) : 40000 + min(m, 0)] @ y[j, max(-m, 0) : 40000 - max(m, 0)]
                         for m in range(1 - lags, lags)] for j in range(3)] for i in range(2)])
    np.testing.assert_allclose(ours, direct, rtol=0, atol=1e-9)


def test_an_estimate_equal_to_its_reference_scores_far_above_100_db_not_inf():
    """Where an estimate is its own projection, the Gram system's quadratic forms are float64
    rounding, so the projections are filtered as in mir_eval: a finite SDR/SAR far above 100 dB;
    a single source's SIR is +inf, as in mir_eval."""
    refs = np.round(_random_case()[0] * 3000) / 32768  # 16-bit samples, as the CLI's test reads them
    ours = _stack(metrics.bss_eval_sources(jnp.asarray(refs), jnp.asarray(refs)))
    assert np.all(np.isfinite(ours)) and np.all(ours > 100), ours
    one = _stack(metrics.bss_eval_sources(jnp.asarray(refs[:1]), jnp.asarray(refs[:1])))
    assert np.isfinite(one[0, 0]) and one[0, 0] > 100 and one[1, 0] == np.inf and one[2, 0] > 100, one
