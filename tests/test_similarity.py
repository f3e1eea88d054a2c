"""The representation-similarity measures against their defining properties and a second computation."""

import numpy as np
import pytest

from metarl.experiments.similarity import linear_cka, linear_cka_gram, svcca


def _data(n=300, p=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, p)) @ rng.normal(size=(p, p)) + rng.normal(size=p), rng


def test_identical_representations_have_similarity_one():
    x, _ = _data()
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert svcca(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling_but_not_to_any_linear_map():
    x, rng = _data()
    y = np.tanh(x @ rng.normal(size=(6, 4)))
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    assert linear_cka(x, 3.7 * y @ q) == pytest.approx(linear_cka(x, y), rel=1e-10)
    stretched = y @ np.diag([10.0, 1.0, 0.1, 1.0])
    assert abs(linear_cka(x, stretched) - linear_cka(x, y)) > 1e-3


def test_cca_is_invariant_to_invertible_linear_maps():
    x, rng = _data()
    y = np.tanh(x @ rng.normal(size=(6, 5)))
    a = rng.normal(size=(5, 5)) + 3 * np.eye(5)
    assert svcca(x, y @ a, keep=1.0) == pytest.approx(svcca(x, y, keep=1.0), rel=1e-9)
    assert svcca(x, x @ rng.normal(size=(6, 6)), keep=1.0) == pytest.approx(1.0, abs=1e-9)


def test_independent_representations_are_near_zero_with_many_more_inputs_than_units():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5000, 10)), rng.normal(size=(5000, 10))
    assert linear_cka(x, y) < 0.01
    assert svcca(x, y) < 0.1
    assert linear_cka(x, x[:, :5]) > 0.5  # half of the same units is far from independent


def test_cka_from_gram_matrices_equals_cka_from_features():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 7)) + 2.0
    y = np.maximum(x @ rng.normal(size=(7, 5)), 0) + rng.normal(size=(200, 5))
    assert linear_cka_gram(x, y) == pytest.approx(linear_cka(x, y), rel=1e-10)


def test_svcca_drops_directions_below_the_kept_variance():
    x, rng = _data()
    # the same units plus two of independent noise each, far below 1% of the variance
    a, b = (np.hstack([x, 1e-3 * rng.normal(size=(x.shape[0], 2))]) for _ in range(2))
    assert svcca(a, b) == pytest.approx(1.0, abs=1e-4)
    assert svcca(a, b, keep=1.0) < 0.85  # kept, the noise directions correlate with nothing


def test_constant_representations_and_bad_input_are_handled():
    x, _ = _data()
    assert linear_cka(x, np.ones((x.shape[0], 3))) == 0.0 and svcca(x, np.zeros((x.shape[0], 2))) == 0.0
    with pytest.raises(ValueError, match="same inputs: 300 rows against 10"):
        linear_cka(x, x[:10])
    with pytest.raises(ValueError, match="0 < keep <= 1, got 1.5"):
        svcca(x, x, keep=1.5)
    with pytest.raises(ValueError, match=r"\(inputs, units\) array, got shape \(300,\)"):
        svcca(x[:, 0], x)
