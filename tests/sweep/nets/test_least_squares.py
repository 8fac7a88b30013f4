"""The power family's least squares: the solve, the sparse refits, snapping to a grid."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from sweep.nets.least_squares import (
    SNAP_DENOMINATORS,
    snap_candidates,
    solve_columns,
    solve_output,
    sparse_solutions,
)
from sweep.nets.spec import ModelSpec
from sweep.nets.training import TrainingResult, train

# Every test draws from its own generator, so what it sees does not depend on which tests ran
# before it (the "plain solve is not exact" premise below holds for some draws, not all).
SEED = 15

Formula = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _data(rng: np.random.Generator, low: int, high: int, rows: int) -> np.ndarray:
    return rng.integers(low, high, size=(rows, 2))


def _columns(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x[:, 0].astype(float), x[:, 1].astype(float)


def test_scaled_columns_keep_the_constant_that_an_unscaled_solve_drops() -> None:
    rng = np.random.default_rng(SEED)
    a, b = _columns(_data(rng, 1, 5000, 400))
    design = np.stack([a**4, a * b, b, np.ones_like(a)], axis=1)  # up to 6e14 next to 1
    target = design @ np.array([1.0, -3.0, 0.5, 7.0])
    solution = solve_columns(design, target)
    np.testing.assert_allclose(solution[:3], [1.0, -3.0, 0.5], rtol=1e-3)
    # The targets reach 6e14, where float64 resolves 0.125: the constant is right to that.
    assert abs(solution[3] - 7.0) < 0.5
    unscaled, *_ = np.linalg.lstsq(design, target, rcond=None)
    assert abs(unscaled[3]) < 0.01  # its singular value fell below lstsq's cut-off


def test_the_output_solve_is_kernel_then_bias_and_none_when_it_cannot_be_trusted() -> None:
    rng = np.random.default_rng(SEED)
    a, b = _columns(_data(rng, 1, 500, 200))
    features = np.stack([a, b], axis=1)
    np.testing.assert_allclose(solve_output(features, 2 * a - b + 5), [2.0, -1.0, 5.0])
    assert solve_output(features[:0], a[:0]) is None
    features[3, 1] = np.inf
    assert solve_output(features, a) is None


def test_sparse_refits_drop_the_units_that_carry_nothing() -> None:
    rng = np.random.default_rng(SEED)
    a, b = _columns(_data(rng, 1, 500, 300))
    features = np.stack([a, b, a * b, a**2, b**2], axis=1)
    target = 3 * a * b - 7
    # The plain solve's leftovers: tiny coefficients on the units that are not in the truth.
    noisy = np.array([1e-11, -2e-11, 3.0 + 1e-13, 4e-14, -1e-14, -7.0])
    sparsest = sparse_solutions(features, target, noisy)[0]
    np.testing.assert_array_equal(sparsest[[0, 1, 3, 4]], 0.0)
    np.testing.assert_allclose(sparsest[[2, 5]], [3.0, -7.0], rtol=1e-9)


def test_snap_candidates_round_in_original_units_and_come_back_exactly() -> None:
    rng = np.random.default_rng(SEED)
    a, _ = _columns(_data(rng, 1, 500, 100))
    features = np.stack([a / 512.0, (a / 512.0) ** 2], axis=1)
    # y = 2a - a**2/4 + 3 in model units (scaled monomials, target (y - 1) / 2), slightly off.
    solution = np.array([2.0 * 512 / 2 + 1e-9, -0.25 * 512**2 / 2 - 1e-7, 1.0 + 1e-12])
    target = features @ solution[:-1] + solution[-1]
    candidates = snap_candidates(
        solution, features, target, monomial_scale=[512.0], exponents=[[1.0], [2.0]],
        target_scale=2.0, target_offset=1.0,
    )
    names = [name for name, _ in candidates]
    assert names[-len(SNAP_DENOMINATORS) - 1 :] == [
        *(f"plain solve, rounded to 1/{d}" for d in SNAP_DENOMINATORS), "plain solve"
    ]
    quarters = dict(candidates)["plain solve, rounded to 1/4"]
    np.testing.assert_array_equal(quarters, [2.0 * 512 / 2, -0.25 * 512**2 / 2, 1.0])
    assert all(name.startswith("sparse refit") for name in names[: -len(SNAP_DENOMINATORS) - 1])


def test_snap_candidates_are_finite() -> None:
    rng = np.random.default_rng(SEED)
    a, _ = _columns(_data(rng, 1, 500, 100))
    features = np.stack([a, a**2], axis=1)
    candidates = snap_candidates(
        np.array([1.0, np.nan, 0.0]), features, a, monomial_scale=[1.0],
        exponents=[[1.0], [2.0]], target_scale=1.0, target_offset=0.0,
    )
    assert candidates and all(np.all(np.isfinite(c)) for _, c in candidates)
    assert not any(name.startswith("plain solve") for name, _ in candidates)


def _train(f: Formula, x: np.ndarray, x_val: np.ndarray, **kw: object
           ) -> tuple[TrainingResult, np.ndarray]:
    y, y_val = f(*_columns(x)), f(*_columns(x_val))
    options = {"degree": 4, "negative_powers": True, "half_powers": False,
               "snap_output": True, "target_normalization": "none"}
    options.update(kw)
    seen: list[int] = []
    spec = ModelSpec((), "linear", "none", str(options.pop("target_normalization")), 0.0, 1,
                     "mse", 0, "constant", True, family="power", **options)  # type: ignore[arg-type]
    result = train(spec, x, y, x_val, y_val, on_epoch=lambda epoch, _: seen.append(epoch))
    assert seen == [0] and result.epochs_run == 0 and result.refitted
    return result, y_val


@pytest.mark.parametrize("low", [0, -500])
def test_solved_and_snapped_power_model_is_exact_in_range_above_and_below(low: int) -> None:
    def f(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a**3 - b + a * b

    rng = np.random.default_rng(SEED)
    result, _ = _train(f, _data(rng, low, 500, 4000), _data(rng, low, 500, 500))
    bands = [_data(rng, low, 500, 1000), _data(rng, 500, 1000, 1000),
             _data(rng, 1000, 5000, 1000)]
    if low < 0:
        bands.append(_data(rng, 2 * low, low, 1000))
    for x in bands:
        np.testing.assert_array_equal(result.predict(x), f(*_columns(x)))


@pytest.mark.parametrize("half", [False, True])
def test_snapping_makes_degree_four_exact_where_the_plain_solve_is_not(half: bool) -> None:
    """With half powers too (144 nearly collinear units) only the sparse refit finds it."""

    def f(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a**4 - b**4 + a * b

    rng = np.random.default_rng(SEED)
    x, x_val = _data(rng, 0, 500, 4000), _data(rng, 0, 500, 500)
    far = _data(rng, 1000, 5000, 2000)
    truth = f(*_columns(far))
    plain, _ = _train(f, x, x_val, snap_output=False, half_powers=half)
    snapped, _ = _train(f, x, x_val, half_powers=half)
    assert np.mean(np.rint(plain.predict(far)) == truth) < 1.0
    np.testing.assert_array_equal(snapped.predict(far), truth)


def test_snapping_keeps_the_solve_when_no_grid_fits() -> None:
    def f(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return 0.3 * a * b + a / b

    rng = np.random.default_rng(SEED)
    x, x_val = _data(rng, 1, 500, 4000), _data(rng, 1, 500, 500)
    plain, _ = _train(f, x, x_val, snap_output=False)
    snapped, y_val = _train(f, x, x_val)
    # 0.3 fits no grid: at most a sparser solve is kept, never a rounding (0.25 would be 17% off).
    np.testing.assert_allclose(snapped.predict(x_val), plain.predict(x_val), rtol=1e-9)
    relative = np.abs(snapped.predict(x_val) - y_val) / np.abs(y_val)
    assert relative.max() <= 1e-6
