import dataclasses
import pathlib
import warnings

import jax
import jax.numpy as jnp
import mir_eval
import numpy as np
import optax
import pytest
import scipy.optimize
import soundfile as sf

from bleedjax import demo, evaluate, metrics, ratio_floor, sessions, signal, simulation
from bleedjax.methods import spectral_subtraction as ss

warnings.filterwarnings("ignore", category=FutureWarning, module="mir_eval")

NAMES = ["cello", "oboe1", "horn1", "flute1"]
PAPER_NNLS = dataclasses.replace(ss.PAPER, solver="nnls")


@pytest.fixture(scope="module")
def stems(shared_data):
    folder = shared_data / "phenicx-anechoic-excerpt"
    return np.stack([sf.read(folder / f"{name}.wav", dtype="float32")[0] for name in NAMES])


@pytest.fixture(scope="module")
def simulated(stems):
    return simulation.simulate_linear(jnp.asarray(stems), key=jax.random.key(0), max_crosstalk_db=-12,
                                      sample_rate=44100)


estimate_lambda = jax.jit(ss.estimate_lambda, static_argnums=1)
"""λ from magnitudes, compiled whole as inside ``reduce_session`` (op by op, a test compiled about 60 small programs)."""


def magnitudes(audio):
    return jnp.abs(signal.stft(jnp.asarray(audio), n_fft=4096, hop=2048, window_name="hamming"))


def test_gram_cost_equals_literal_cost(simulated):
    mags = magnitudes(simulated.mics)
    gram = ss.magnitude_gram(mags)
    lam = jnp.asarray([0.3, 0.0, 0.7, 0.1])
    for target in range(4):
        ours = ss.row_cost(lam, gram, jnp.asarray(target))
        literal = ss.literal_row_cost(lam, mags, jnp.asarray(target))
        np.testing.assert_allclose(float(ours), float(literal), rtol=1e-4)


def test_descent_reaches_the_exact_solution(simulated):
    mags = magnitudes(simulated.mics)
    descent, iterations = estimate_lambda(mags, ss.PAPER)
    exact, _ = estimate_lambda(mags, PAPER_NNLS)
    descent, exact = np.asarray(descent), np.asarray(exact)
    assert np.all(np.asarray(iterations) < ss.Settings().max_iterations)
    np.testing.assert_allclose(descent, exact, atol=1e-3 * exact.max())
    np.testing.assert_array_equal(np.diag(descent), 0.0)
    assert descent.min() >= 0.0


def test_nnls_matches_scipy(simulated):
    mags = np.asarray(magnitudes(simulated.mics), np.float64)
    exact, _ = estimate_lambda(jnp.asarray(mags, jnp.float32), PAPER_NNLS)
    for i in range(4):
        others = [j for j in range(4) if j != i]
        theirs, _ = scipy.optimize.nnls(mags[others].reshape(3, -1).T, mags[i].ravel())
        np.testing.assert_allclose(np.asarray(exact)[i, others], theirs, atol=1e-4 * max(theirs.max(), 1e-3))


def test_descent_with_active_constraints():
    rng = np.random.default_rng(0)
    base = rng.random((4, 20, 30)).astype(np.float32)
    base[0] = 0.5 * base[1] - 0.4 * base[2] + 0.1 * rng.random((20, 30))
    mags = jnp.asarray(np.abs(base))
    descent, _ = estimate_lambda(mags, ss.PAPER)
    exact, _ = estimate_lambda(mags, PAPER_NNLS)
    assert np.any(np.asarray(exact)[0, 1:] == 0.0)
    np.testing.assert_allclose(np.asarray(descent), np.asarray(exact), atol=2e-3)


@pytest.mark.parametrize("level", [1e-4, 1e3])
def test_hyperparameters_converge_at_any_level(simulated, level):
    reference, _ = estimate_lambda(magnitudes(simulated.mics), ss.Settings())
    scaled, iterations = estimate_lambda(magnitudes(simulated.mics * level), ss.Settings())
    np.testing.assert_allclose(np.asarray(scaled), np.asarray(reference), atol=2e-3)
    assert np.all(np.asarray(iterations) < ss.Settings().max_iterations)


def test_track_gain_rescales_lambda(simulated):
    gain = jnp.asarray([1.0, 8.0, 1.0, 1.0])[:, None]
    reference, _ = estimate_lambda(magnitudes(simulated.mics), PAPER_NNLS)
    scaled, _ = estimate_lambda(magnitudes(simulated.mics * gain), PAPER_NNLS)
    expected = np.asarray(reference) * np.asarray(gain) / np.asarray(gain).T
    np.testing.assert_allclose(np.asarray(scaled), expected, atol=1e-3 * expected.max())


@pytest.mark.parametrize(
    "preset, passes", [("refined", "chunked"), ("paper", "chunked"), ("refined", "whole"), ("floor", "chunked")]
)
def test_padding_and_batching_do_not_change_results(simulated, preset, passes):
    settings = ss.Settings(**ss.PRESETS[preset], passes=passes)
    audio = simulated.mics
    alone = ss.reduce_session(audio, settings)
    padded = jnp.pad(audio, ((0, 0), (0, 10000)))
    shorter = audio.at[:, 30000:].set(0.0)
    batch = ss.reduce_sessions(jnp.stack([padded, jnp.pad(shorter, ((0, 0), (0, 10000)))]), settings,
                               jnp.asarray([44100, 54100]))
    np.testing.assert_allclose(np.asarray(batch.lam[0]), np.asarray(alone.lam), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(batch.cleaned[0, :, :44100]), np.asarray(alone.cleaned), atol=1e-5)
    second = ss.reduce_session(jnp.pad(shorter, ((0, 0), (0, 10000))), settings)
    np.testing.assert_allclose(np.asarray(batch.lam[1]), np.asarray(second.lam), atol=1e-5)


def test_refinement_on_a_lattice_of_points_matches_every_point(simulated):
    mags = jnp.swapaxes(magnitudes(simulated.mics), -1, -2)
    every, _ = estimate_lambda(mags, ss.Settings(refinement_stride=1))
    lattice, _ = estimate_lambda(mags, ss.Settings())
    first_fit, _ = estimate_lambda(mags, ss.Settings(refinements=0))
    explicit, _ = estimate_lambda(mags, ss.Settings(refinement_stride=4))
    np.testing.assert_array_equal(np.asarray(lattice), np.asarray(explicit))  # automatic: max(4, J)
    refinement_effect = np.abs(np.asarray(every) - np.asarray(first_fit)).max()
    assert refinement_effect > 0.05
    # The lattice moves λ by a small fraction of what the rounds themselves change (1.3 % here,
    # 4-6 % on the 15 s quartet: each round's regressors carry the previous rounds' λ).
    assert np.abs(np.asarray(lattice) - np.asarray(every)).max() < 0.05 * refinement_effect


@pytest.mark.parametrize("exponent", [1.0, 2.0, 1.5])
def test_subtract_follows_eq7_in_the_power_domain(exponent):
    rng = np.random.default_rng(0)
    spectrogram = rng.normal(size=(3, 5, 7)) + 1j * rng.normal(size=(3, 5, 7))
    lam = rng.uniform(0.0, 0.6, size=(3, 3)) * (1 - np.eye(3))
    ours = ss.subtract(jnp.asarray(spectrogram, jnp.complex64), jnp.asarray(lam, jnp.float32), 0.8, exponent)
    magnitudes = np.abs(spectrogram)
    bleed = np.einsum("ij,jkn->ikn", (0.8 * lam) ** exponent, magnitudes**exponent)
    expected = np.maximum(magnitudes**exponent - bleed, 0.0) ** (1 / exponent) * np.exp(1j * np.angle(spectrogram))
    np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-5)


def test_power_and_floor_presets_keep_every_track_of_a_quartet_better_at_weak_bleed():
    names = ["violin1", "violin2", "viola", "cello"]
    folder = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "audio" / "string_quartet"
    stems = np.stack([sf.read(folder / f"{name}.flac", dtype="float32")[0][: 4 * 22050] for name in names])
    sim = simulation.simulate_linear(jnp.asarray(stems), key=jax.random.key(0), max_crosstalk_db=-18, sample_rate=22050)
    references, mics = np.asarray(sim.references), np.asarray(sim.mics)
    before = evaluate.score(references, mics)["sdr"]
    gains = {}
    for preset in ("refined", "power", "floor"):
        cleaned = ss.reduce_session(sim.mics, ss.Settings(**ss.PRESETS[preset])).cleaned
        gains[preset] = evaluate.score(references, np.asarray(cleaned))["sdr"] - before
    assert np.all(gains["power"] > 2.0)
    assert gains["power"].mean() > gains["refined"].mean() + 2.0
    # Measured: refined 8.45 / 4.81 / 0.05 / 2.50 dB, floor 9.48 / 7.54 / 4.98 / 4.83 dB.
    assert np.all(gains["floor"] > 4.0)
    assert gains["floor"].mean() > gains["refined"].mean() + 2.0


def test_ratio_floor_bound_is_the_energy_weighted_quantile_of_the_ratio():
    rng = np.random.default_rng(3)
    points = rng.exponential(size=(3, 500)) * (rng.uniform(size=(3, 500)) > 0.2)
    points[2] = 0.0  # a silent track bounds nothing
    quantile = 0.3
    ours = np.asarray(ratio_floor.ratio_floor_bound(jnp.asarray(points, jnp.float32), quantile))
    for i in range(3):
        for j in range(2):
            weights = points[j] ** 2
            ratios = np.log(np.maximum(points[i], np.finfo(np.float32).tiny)) - np.log(np.maximum(points[j], 1e-300))
            order = np.argsort(ratios[weights > 0])
            cumulative = np.cumsum(weights[weights > 0][order]) / weights.sum()
            expected = ratios[weights > 0][order][np.searchsorted(cumulative, quantile)]
            expected = np.exp(np.clip(expected, -ratio_floor.LOG_RATIO_RANGE, ratio_floor.LOG_RATIO_RANGE))  # the bisection's range
            np.testing.assert_allclose(ours[i, j], expected, rtol=1e-5)
    assert np.all(np.isinf(ours[:, 2]))
    assert ours[2, 0] < 1e-6  # a silent target: the bound is the range's floor, e^-16


def test_ratio_floor_bound_finds_the_gain_where_a_source_plays_alone():
    # Magnitudes that mix linearly: where only source j sounds, X_i / X_j is a_ij exactly; where
    # both do (half of each source's points, as correlated parts play together) it is larger.
    rng = np.random.default_rng(0)
    size = 4000
    alone = np.repeat([0, 1, 2], size // 4)
    together = np.full(size - alone.size, -1)
    owner = rng.permutation(np.concatenate([alone, together]))
    sources = rng.exponential(size=(3, size)) * ((owner == np.arange(3)[:, None]) | (owner == -1))
    mixing = np.array([[1.0, 0.05, 0.12], [0.08, 1.0, 0.03], [0.1, 0.06, 1.0]])
    bound = np.asarray(ratio_floor.ratio_floor_bound(jnp.asarray(mixing @ sources, jnp.float32), 0.3))
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(bound[off], mixing[off], rtol=0.05)
    # The regression of Eq. (1) on the same points is biased upwards by the shared points.
    gram = ss.magnitude_gram(jnp.asarray(mixing @ sources, jnp.float32)[:, None, :])
    lam = np.stack([np.asarray(ss.nnls_row(gram, jnp.asarray(i), PAPER_NNLS).lam) for i in range(3)])
    assert np.all(lam[off] > 1.5 * mixing[off])


def test_loudest_only_ratio_floor_ignores_points_of_other_sources_bleed():
    # A loud source 1 with strong bleed into microphone 2 (0.6) and little into microphone 0
    # (0.05): where it plays alone, X_0 / X_2 = 0.05 / 0.6, far below a_02 = 0.3, and those
    # points hold most of microphone 2's energy. Only with loudest_only does the floor stay near
    # every gain.
    rng = np.random.default_rng(1)
    size = 6000
    owner = rng.permutation(np.concatenate([np.repeat([0, 1, 2], size // 4), np.full(size - 3 * (size // 4), -1)]))
    sources = rng.exponential(size=(3, size)) * ((owner == np.arange(3)[:, None]) | (owner == -1))
    sources[1] *= 3.0
    mixing = np.array([[1.0, 0.05, 0.3], [0.1, 1.0, 0.08], [0.2, 0.6, 1.0]])
    points = jnp.asarray(mixing @ sources, jnp.float32)
    off = ~np.eye(3, dtype=bool)
    plain = np.asarray(ratio_floor.ratio_floor_bound(points, 0.3))
    loudest = np.asarray(ratio_floor.ratio_floor_bound(points, 0.3, loudest_only=True))
    assert plain[0, 2] < 0.5 * mixing[0, 2]
    np.testing.assert_allclose(loudest[off], mixing[off], rtol=0.05)


def test_floor_preset_caps_the_refined_lambda_and_subtracts_the_microphones(simulated):
    spectrogram = jnp.swapaxes(signal.stft(simulated.mics, n_fft=4096, hop=2048, window_name="hamming"), -1, -2)
    mags = jnp.abs(spectrogram)
    settings = ss.Settings(**ss.PRESETS["floor"])
    refined = ss.refine_lambda(mags, ss.Settings())
    floor = ss.refine_lambda(mags, settings)
    points = mags.reshape(4, -1)[:, :: ss.lattice_stride(settings, 4)][:, ::4]
    expected = np.minimum(np.asarray(refined.lam), np.asarray(ratio_floor.ratio_floor_bound(points, 0.3)))
    np.testing.assert_allclose(np.asarray(floor.lam), expected, rtol=1e-6)
    assert np.any(np.asarray(floor.lam) < np.asarray(refined.lam) - 1e-3)
    assert int(floor.rounds) == 0
    transform = {"n_fft": 4096, "hop": 2048, "window_name": "hamming"}
    subtracted = signal.istft(jnp.swapaxes(ss.subtract(spectrogram, floor.lam), -1, -2),
                              length=simulated.mics.shape[-1], **transform)
    np.testing.assert_allclose(np.asarray(ss.reduce_session(simulated.mics, settings).cleaned),
                               np.asarray(subtracted), atol=1e-5)


def test_auto_preset_is_floor_up_to_its_track_limit_and_refined_above(simulated):
    mags = jnp.abs(signal.stft(simulated.mics, n_fft=4096, hop=2048, window_name="hamming"))
    auto = ss.Settings(**ss.PRESETS["auto"])
    assert auto.bound_max_tracks == ss.AUTO_MAX_TRACKS >= 4
    floor = ss.refine_lambda(mags, ss.Settings(**ss.PRESETS["floor"]))
    refined = ss.refine_lambda(mags, ss.Settings())
    small = ss.refine_lambda(mags, auto)
    large = ss.refine_lambda(mags, dataclasses.replace(auto, bound_max_tracks=3))
    np.testing.assert_array_equal(np.asarray(small.lam), np.asarray(floor.lam))
    assert small.basis.shape[0] == 0
    np.testing.assert_array_equal(np.asarray(large.lam), np.asarray(refined.lam))
    np.testing.assert_array_equal(np.asarray(large.basis), np.asarray(refined.basis))
    assert int(large.rounds) == int(refined.rounds) > 0
    assert np.any(np.asarray(small.lam) < np.asarray(large.lam) - 1e-3)


def test_command_line_default_is_the_auto_preset():
    from bleedjax import methods

    config = methods.get_method("spectral-subtraction").default_config(None)
    assert config.to_dict() == methods.get_method("spectral-subtraction").default_config("auto").to_dict()
    assert (config.bound_quantile, config.bound_max_tracks) == (0.3, ss.AUTO_MAX_TRACKS)


def test_refined_lambda_subtracts_the_regressors_it_was_fitted_against(simulated):
    spectrogram = jnp.swapaxes(signal.stft(simulated.mics, n_fft=4096, hop=2048, window_name="hamming"), -1, -2)
    mags = jnp.abs(spectrogram)
    refinement = ss.refine_lambda(mags, ss.Settings())
    assert int(refinement.rounds) >= 1
    manual = np.asarray(mags)
    for k in range(int(refinement.rounds)):
        manual = np.maximum(np.asarray(mags) - np.einsum("ij,jtf->itf", np.asarray(refinement.basis[k]), manual), 0.0)
    regressors = ss.cleaned_regressors(mags, refinement)
    np.testing.assert_allclose(np.asarray(regressors), manual, rtol=1e-5, atol=1e-6 * float(mags.max()))
    assert np.all(np.asarray(regressors) <= np.asarray(mags) + 1e-6)
    transform = {"n_fft": 4096, "hop": 2048, "window_name": "hamming"}
    expected = signal.istft(jnp.swapaxes(ss.subtract(spectrogram, refinement.lam, regressors=regressors), -1, -2),
                            length=simulated.mics.shape[-1], **transform)
    np.testing.assert_allclose(np.asarray(ss.reduce_session(simulated.mics).cleaned), np.asarray(expected), atol=1e-5)


@pytest.mark.parametrize("stride, chunk_frames", [(4, 32), (5, 8), (7, 3), (4, 64)])
def test_chunked_statistics_equal_the_whole_spectrogram(simulated, stride, chunk_frames):
    spectrogram = jnp.swapaxes(signal.stft(simulated.mics, n_fft=1024, hop=256, window_name="hamming"), -1, -2)
    num_frames = spectrogram.shape[1]
    assert num_frames % (stride * max(1, chunk_frames // stride))  # a shorter last chunk is exercised
    frames = jnp.arange(num_frames)
    mask = ((frames < 40) | (frames >= 49)).astype(jnp.float32)  # the last chunk stays unmasked
    gram, points = ss.spectrogram_statistics(spectrogram, stride, mask, chunk_frames)
    masked = np.abs(np.asarray(spectrogram)) * np.asarray(mask)[None, :, None]
    flat = masked.reshape(masked.shape[0], -1).astype(np.float64)
    np.testing.assert_array_equal(np.asarray(points), flat[:, ::stride].astype(np.float32))
    # float32 sums of n non-negative terms: rounding grows like sqrt(n)·eps (here 6e-6 for the
    # chunks and 7e-6 for one matmul over the whole spectrogram).
    np.testing.assert_allclose(np.asarray(gram), flat @ flat.T, rtol=np.sqrt(flat.shape[1]) * np.finfo(np.float32).eps)


@pytest.mark.parametrize("preset", ["refined", "paper", "power"])
@pytest.mark.parametrize("chunk_bytes", [4 << 20, 5 * 4 * 2049 * 8, 1])
def test_subtraction_in_place_equals_the_whole_spectrogram(simulated, preset, chunk_bytes):
    settings = ss.Settings(**ss.PRESETS[preset])
    spectrogram = jnp.swapaxes(signal.stft(simulated.mics, n_fft=4096, hop=2048, window_name="hamming"), -1, -2)
    assert spectrogram.shape[1] % 5  # 5-frame chunks leave a shorter last chunk
    refinement = ss.refine_lambda(jnp.abs(spectrogram), settings)
    assert int(refinement.rounds) == (0 if preset == "paper" else 3)
    regressors = ss.cleaned_regressors(jnp.abs(spectrogram), refinement) if settings.refinements else None
    whole = ss.subtract(spectrogram, refinement.lam, 0.8, settings.exponent, regressors)
    in_place = jax.jit(lambda s: ss.subtract_in_place(s, refinement, 0.8, settings.exponent, chunk_bytes))(spectrogram)
    scale = float(jnp.abs(spectrogram).max())
    np.testing.assert_allclose(np.asarray(in_place), np.asarray(whole), rtol=1e-5, atol=1e-6 * scale)
    assert float(jnp.abs(whole - spectrogram).max()) > 1e-2 * scale  # the subtraction did something


def test_zero_scale_is_identity_and_silent_tracks_stay_finite(simulated):
    audio = simulated.mics.at[2].set(0.0)
    result = ss.reduce_session(audio, ss.Settings(lambda_scale=0.0))
    np.testing.assert_allclose(np.asarray(result.cleaned), np.asarray(audio), atol=1e-5)
    cleaned = ss.reduce_session(audio)
    assert np.all(np.isfinite(np.asarray(cleaned.cleaned))) and np.all(np.isfinite(np.asarray(cleaned.lam)))
    np.testing.assert_array_equal(np.asarray(cleaned.cleaned[2]), 0.0)
    np.testing.assert_array_equal(np.asarray(cleaned.lam[:, 2]), 0.0)
    np.testing.assert_array_equal(np.asarray(cleaned.lam[2]), 0.0)
    assert int(cleaned.iterations[2]) == 0  # nothing to descend for a silent target


def test_removes_bleed_without_making_tracks_worse(simulated):
    result = ss.reduce_session(simulated.mics)
    references = np.asarray(simulated.references, np.float64)
    before = mir_eval.separation.bss_eval_sources(references, np.asarray(simulated.mics, np.float64),
                                                  compute_permutation=False)
    after = mir_eval.separation.bss_eval_sources(references, np.asarray(result.cleaned, np.float64),
                                                 compute_permutation=False)
    sdr_gain, sir_gain = after[0] - before[0], after[1] - before[1]
    assert np.all(sdr_gain > 0) and np.mean(sdr_gain) > 5
    assert np.all(sir_gain > 10)


def test_max_lambda_solves_the_box_constrained_problem(simulated):
    mags = np.asarray(magnitudes(simulated.mics), np.float64)
    unconstrained, _ = estimate_lambda(jnp.asarray(mags, jnp.float32), PAPER_NNLS)
    bound = 0.5 * float(np.asarray(unconstrained).max())
    boxed, _ = estimate_lambda(jnp.asarray(mags, jnp.float32), dataclasses.replace(ss.PAPER, max_lambda=bound))
    boxed = np.asarray(boxed)
    assert boxed.max() <= bound + 1e-7 and np.isclose(boxed.max(), bound)
    gram = ss.magnitude_gram(jnp.asarray(mags, jnp.float32))
    for i in range(4):
        others = [j for j in range(4) if j != i]
        theirs = np.zeros(4, np.float32)
        theirs[others] = scipy.optimize.lsq_linear(mags[others].reshape(3, -1).T, mags[i].ravel(),
                                                   bounds=(0, bound)).x
        ours_cost = float(ss.row_cost(jnp.asarray(boxed[i]), gram, jnp.asarray(i)))
        best_cost = float(ss.row_cost(jnp.asarray(theirs), gram, jnp.asarray(i)))
        assert ours_cost <= best_cost * (1 + 1e-3)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"solver": "adam"}, "solver"),
        ({"momentum": 1.5}, "momentum"),
        ({"lambda_scale": -1.0}, "lambda_scale"),
        ({"lambda_scale": float("inf")}, "lambda_scale"),
        ({"lambda_scale": float("nan")}, "lambda_scale"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"learning_rate": float("inf")}, "learning_rate"),
        ({"curvature": 0.0}, "curvature"),
        ({"curvature": float("nan")}, "curvature"),
        ({"tolerance": float("nan")}, "tolerance"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"solver": "nnls", "max_lambda": 1.0}, "descent"),
        ({"refinements": -1}, "refinements"),
        ({"refinement_stride": -1}, "refinement_stride"),
        ({"exponent": 0.0}, "exponent"),
        ({"passes": "streamed"}, "passes"),
        ({"bound_quantile": 1.0}, "bound_quantile"),
        ({"bound_stride": -1}, "bound_stride"),
        ({"bound_max_tracks": -1}, "bound_max_tracks"),
        ({"unroll": -1}, "unroll"),
    ],
)
def test_settings_are_validated(fields, message):
    with pytest.raises(ValueError, match=message):
        ss.Settings(**fields)


@pytest.mark.parametrize("unroll", [1, 2, 3, 7, 13])  # 13: every loop in one trip
def test_unrolled_while_loop_takes_the_same_steps(unroll):
    def condition(state):
        value, steps = state
        return (value % 7 != 3) & (steps < 12)

    def body(state):
        value, steps = state
        return (value * 5 + 1) % 97, steps + 1

    unrolled = jax.jit(jax.vmap(lambda s: ss.unrolled_while_loop(condition, body, s, unroll)))
    starts = (jnp.arange(0, 97, 4), jnp.zeros(25, jnp.int32))
    expected = jax.vmap(lambda s: jax.lax.while_loop(condition, body, s))(starts)
    assert int(expected[1].min()) == 0 and int(expected[1].max()) == 12  # loops of every length, some cut at 12
    np.testing.assert_array_equal(np.asarray(unrolled(starts)[0]), np.asarray(expected[0]))
    np.testing.assert_array_equal(np.asarray(unrolled(starts)[1]), np.asarray(expected[1]))


def test_schedules_resolve_by_backend():
    on_cpu = jax.default_backend() == "cpu"
    assert ss.descent_unroll(ss.Settings()) == (1 if on_cpu else ss.ACCELERATOR_UNROLL)
    assert ss.descent_unroll(ss.Settings(unroll=5)) == 5
    assert ss.whole_array_passes(ss.Settings()) is not on_cpu
    assert ss.whole_array_passes(ss.Settings(passes="whole")) and not ss.whole_array_passes(ss.Settings(passes="chunked"))


@pytest.mark.parametrize("preset", ["refined", "paper", "power"])
def test_accelerator_schedule_equals_the_cpu_schedule(simulated, preset):
    results = {
        schedule: ss.reduce_session(simulated.mics, ss.Settings(**ss.PRESETS[preset], passes=passes, unroll=unroll))
        for schedule, (passes, unroll) in {"cpu": ("chunked", 1), "accelerator": ("whole", 8)}.items()
    }
    cpu, accelerator = results["cpu"], results["accelerator"]
    np.testing.assert_array_equal(np.asarray(accelerator.iterations), np.asarray(cpu.iterations))
    np.testing.assert_allclose(np.asarray(accelerator.lam), np.asarray(cpu.lam), rtol=1e-5, atol=1e-6)
    scale = float(jnp.abs(simulated.mics).max())
    np.testing.assert_allclose(np.asarray(accelerator.cleaned), np.asarray(cpu.cleaned), atol=1e-5 * scale)


def test_momentum_descent_is_heavy_ball_sgd():
    settings = ss.Settings()
    ours, theirs = ss.momentum_descent(settings), optax.sgd(
        optax.exponential_decay(settings.learning_rate, 1, settings.learning_rate_decay), momentum=settings.momentum
    )
    params = jnp.asarray([0.3, -0.2, 0.5])
    state_ours, state_theirs = ours.init(params), theirs.init(params)
    for step in range(5):
        grads = jnp.asarray([1.0, -2.0, 0.5]) * (step + 1)
        update_ours, state_ours = ours.update(grads, state_ours)
        update_theirs, state_theirs = theirs.update(grads, state_theirs)
        np.testing.assert_allclose(np.asarray(update_ours), np.asarray(update_theirs), rtol=1e-6)


@pytest.fixture(scope="module")
def bach_excerpt():
    session = sessions.read_session(demo.bundled_stems())
    stems = jnp.asarray(session.audio[:, 5 * session.sample_rate : 13 * session.sample_rate])
    return simulation.simulate_linear(stems, key=jax.random.key(0), max_crosstalk_db=-12,
                                      sample_rate=session.sample_rate)


def test_refined_default_meets_table3_correlation_with_a_sparse_timpani(bach_excerpt):
    paper = ss.reduce_session(bach_excerpt.mics, ss.PAPER)
    refined = ss.reduce_session(bach_excerpt.mics)
    corr_paper = float(metrics.table3_correlation(bach_excerpt.gains, paper.lam))
    corr_refined = float(metrics.table3_correlation(bach_excerpt.gains, refined.lam))
    assert corr_paper < 0.9 <= corr_refined
    assert float(refined.lam.max()) <= 1.0 + 1e-6


def test_cli_offers_every_preset():
    from bleedjax import methods

    assert methods.METHODS["spectral-subtraction"].presets == tuple(ss.PRESETS)


@pytest.mark.parametrize("typechecked", [True, False], ids=["jaxtyping", "plain"])
def test_wrong_shapes_are_clear_errors(typechecked, monkeypatch):
    """Under jaxtyping the signatures already refuse a wrong rank (TypeError); without it (as a
    user runs the library), a ValueError names the shapes instead of a broadcasting error deep
    in XLA."""
    import jaxtyping

    from bleedjax import kernels
    from bleedjax.methods import kamir

    monkeypatch.setattr(jaxtyping.config, "jaxtyping_disable", not typechecked)
    error = TypeError if typechecked else ValueError
    with pytest.raises(error, match="tracks"):
        ss.reduce_session(jnp.zeros((2, 8192)), lambda_weights=jnp.ones((3, 3)))
    with pytest.raises(error, match="mics"):
        kamir.reduce_session(jnp.zeros((2, 8192)), jnp.eye(3, dtype=bool))
    with pytest.raises(error, match="bins"):
        kernels.median_filter(jnp.zeros((3, 4, 5)), kernels.horizontal(3))
    with pytest.raises(error, match="sources"):
        simulation.simulate_linear(jnp.zeros(100), key=jax.random.key(0), max_crosstalk_db=-12, sample_rate=8000)
