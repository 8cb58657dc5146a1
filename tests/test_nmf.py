"""NMF against scikit-learn's multiplicative updates, monotone cost, semi-supervised columns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.decomposition import NMF, non_negative_factorization

from bleedjax import nmf

BINS, FRAMES, COMPONENTS = 24, 40, 5


def _problem(seed=0, bins=BINS, frames=FRAMES, components=COMPONENTS):
    rng = np.random.default_rng(seed)
    V = (rng.random((bins, 3)) @ rng.random((3, frames)) + 0.1 * rng.random((bins, frames))).astype(np.float32)
    W, H = nmf.random_init(jnp.asarray(V), components, key=jax.random.key(seed))
    return V, np.asarray(W), np.asarray(H)


@pytest.mark.parametrize("beta, loss", [(2.0, "frobenius"), (1.0, "kullback-leibler")])
@pytest.mark.parametrize("sparsity", [0.0, 0.05])
def test_matches_sklearn(beta, loss, sparsity):
    V, W0, H0 = _problem()
    iterations = 60
    model = NMF(
        COMPONENTS, init="custom", solver="mu", beta_loss=loss, tol=0.0, max_iter=iterations,
        alpha_W=0.0, alpha_H=sparsity / BINS, l1_ratio=1.0,
    )
    W_ref = model.fit_transform(V.astype(np.float64), W=W0.astype(np.float64), H=H0.astype(np.float64))
    H_ref = model.components_
    assert model.n_iter_ == iterations
    result = nmf.nmf(jnp.asarray(V), jnp.asarray(W0), jnp.asarray(H0), beta=beta, iterations=iterations,
                     sparsity=sparsity)
    # float32 against float64 over 60 multiplicative steps (observed: 3e-6 relative)
    np.testing.assert_allclose(result.W, W_ref, rtol=5e-5, atol=1e-7)
    np.testing.assert_allclose(result.H, H_ref, rtol=5e-5, atol=1e-7)


def test_fixed_dictionary_matches_sklearn_with_fixed_factor():
    V, W0, H0 = _problem(1)
    # V ≈ W H with W fixed is Vᵀ ≈ Hᵀ Wᵀ with sklearn's H (= Wᵀ) fixed (update_H=False); sklearn
    # then starts from a constant sqrt(mean(V) / components).
    H0 = np.full_like(H0, np.sqrt(V.astype(np.float64).mean() / COMPONENTS))
    Ht_ref, _, _ = non_negative_factorization(
        V.T.astype(np.float64), H=W0.T.astype(np.float64), n_components=COMPONENTS, init="custom",
        update_H=False, solver="mu", beta_loss="kullback-leibler", tol=0.0, max_iter=50,
    )
    result = nmf.nmf(jnp.asarray(V), jnp.asarray(W0), jnp.asarray(H0), beta=1.0, iterations=50,
                     update_dictionary=False)
    np.testing.assert_array_equal(result.W, W0)
    np.testing.assert_allclose(result.H, Ht_ref.T, rtol=5e-5, atol=1e-7)


def _numpy_semi_supervised_step(V, W, H, fixed):
    """One KL update of W[:, fixed:] and then H, written out in float64 (reference)."""
    V, W, H = (np.asarray(a, np.float64) for a in (V, W, H))
    Lam = W @ H
    W = W.copy()
    W[:, fixed:] *= ((V / Lam) @ H[fixed:].T) / (np.ones_like(V) @ H[fixed:].T)
    Lam = W @ H
    H = H * (W.T @ (V / Lam)) / (W.T @ np.ones_like(V))
    return W, H


def test_semi_supervised_keeps_fixed_columns():
    V, W0, H0 = _problem(2)
    fixed = 2
    one = nmf.nmf(jnp.asarray(V), jnp.asarray(W0), jnp.asarray(H0), beta=1.0, iterations=1, fixed=fixed)
    W_ref, H_ref = _numpy_semi_supervised_step(V, W0, H0, fixed)
    np.testing.assert_array_equal(one.W[:, :fixed], W0[:, :fixed])
    np.testing.assert_allclose(one.W, W_ref, rtol=1e-5)
    np.testing.assert_allclose(one.H, H_ref, rtol=1e-5)


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
def test_cost_non_increasing(beta):
    V, W0, H0 = _problem(3)
    weights = jnp.asarray((np.arange(FRAMES) < FRAMES - 5).astype(np.float32))
    result = nmf.nmf(jnp.asarray(V), jnp.asarray(W0), jnp.asarray(H0), beta=beta, iterations=80,
                     sparsity=0.01, fixed=1, weights=weights, track_cost=True)
    costs = np.asarray(result.cost, np.float64)
    assert costs[-1] < 0.5 * costs[0]
    # float32 cost: allow rounding of the sum (relative 1e-6), never a real increase
    assert np.all(np.diff(costs) <= 1e-6 * costs[:-1])


def test_beta_divergence_against_numpy():
    rng = np.random.default_rng(4)
    V, V_hat = rng.random((2, 6, 7)) + 0.1
    expected = {
        2.0: 0.5 * np.sum((V - V_hat) ** 2),
        1.0: np.sum(V * np.log(V / V_hat) - V + V_hat),
        0.0: np.sum(V / V_hat - np.log(V / V_hat) - 1),
    }
    for beta, value in expected.items():
        got = nmf.beta_divergence(jnp.asarray(V, jnp.float32), jnp.asarray(V_hat, jnp.float32), beta)
        np.testing.assert_allclose(got, value, rtol=1e-5)


def test_vmap_and_determinism():
    V = np.stack([_problem(s)[0] for s in range(3)])
    keys = jax.random.split(jax.random.key(7), 3)

    def run(v, key):
        W, H = nmf.random_init(v, COMPONENTS, key=key)
        return nmf.nmf(v, W, H, beta=1.0, iterations=20).H

    batched = jax.vmap(run)(jnp.asarray(V), keys)
    for i in range(3):
        np.testing.assert_allclose(batched[i], run(jnp.asarray(V[i]), keys[i]), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(batched, jax.vmap(run)(jnp.asarray(V), keys))


def test_bad_input():
    V, W0, H0 = _problem()
    with pytest.raises(ValueError, match="beta"):
        nmf.nmf(jnp.asarray(V), jnp.asarray(W0), jnp.asarray(H0), beta=0.5)
    with pytest.raises(ValueError, match="fixed"):
        nmf.nmf(jnp.asarray(V), jnp.asarray(W0), jnp.asarray(H0), fixed=COMPONENTS + 1)
