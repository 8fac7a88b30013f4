"""The power family's least squares: the solve, the sparse refits, snapping to a grid."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from sweep.nets.least_squares import (
    SNAP_DENOMINATORS,
    OutputSystem,
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
    np.testing.assert_allclose(
        solve_output(OutputSystem(features, 2 * a - b + 5)), [2.0, -1.0, 5.0]
    )
    assert solve_output(OutputSystem(features[:0], a[:0])) is None
    features[3, 1] = np.inf
    assert solve_output(OutputSystem(features, a)) is None


def _monomial_design(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = _columns(_data(rng, 1, 500, rows))
    features = np.stack([a, b, a * b, a**2, b**2, a / b, np.sqrt(a) * b, a**3 / b], axis=1)
    return features, 3 * a * b - 7 + a / b


def _subsets(rng: np.random.Generator, columns: int) -> list[np.ndarray]:
    subsets = [rng.random(columns) < 0.5 for _ in range(20)] + [np.ones(columns, dtype=bool)]
    for keep in subsets:
        keep[-1] = True  # the bias, as the refits keep it
    return subsets


def _assert_same_solve(solution: np.ndarray, direct: np.ndarray, design: np.ndarray,
                       target: np.ndarray) -> None:
    """Equal to rounding: each unit's share of the target, next to the target's magnitude."""
    magnitude = np.max(np.abs(design), axis=0)
    np.testing.assert_allclose(solution * magnitude, direct * magnitude, rtol=1e-9,
                               atol=1e-12 * np.max(np.abs(target)))


def test_a_solve_on_the_factored_design_is_the_solve_on_the_columns_kept() -> None:
    """The refits' shortcut (one QR of the design, then p-row solves) changes no answer."""
    rng = np.random.default_rng(SEED)
    features, target = _monomial_design(rng, 2000)
    system = OutputSystem(features, target)
    for keep in _subsets(rng, features.shape[1] + 1):
        direct = solve_columns(system.design[:, keep], target)
        _assert_same_solve(system.solve(keep), direct, system.design[:, keep], target)


def test_duplicated_units_get_the_same_minimum_norm_solution_as_on_the_columns() -> None:
    rng = np.random.default_rng(SEED)
    features, target = _monomial_design(rng, 2000)
    features = np.hstack([features, features[:, [2, 5]], np.zeros((len(features), 1))])
    system = OutputSystem(features, target)
    for keep in _subsets(rng, features.shape[1] + 1):
        direct = solve_columns(system.design[:, keep], target)
        _assert_same_solve(system.solve(keep), direct, system.design[:, keep], target)
    both = system.solve()
    # The minimum norm: a unit and its duplicate carry half the coefficient each.
    np.testing.assert_allclose(both[[2, 5]], both[[8, 9]], rtol=1e-9)
    np.testing.assert_allclose(both[[2, 5]] * 2, [3.0, 1.0], rtol=1e-9)


@pytest.mark.parametrize("rows", [5, 40])
def test_fewer_rows_than_columns_or_values_not_finite_solve_on_the_columns(rows: int) -> None:
    rng = np.random.default_rng(SEED)
    features, target = _monomial_design(rng, rows)
    if rows > features.shape[1] + 1:
        features[2, 3] = np.nan
    system = OutputSystem(features, target)

    def outcome(solve: Callable[..., np.ndarray], *args: np.ndarray) -> np.ndarray | str:
        try:
            return solve(*args)
        except np.linalg.LinAlgError as error:  # lstsq's SVD on a NaN
            return str(error)

    for keep in _subsets(rng, features.shape[1] + 1):
        np.testing.assert_array_equal(
            outcome(system.solve, keep), outcome(solve_columns, system.design[:, keep], target)
        )


def test_sparse_refits_drop_the_units_that_carry_nothing() -> None:
    rng = np.random.default_rng(SEED)
    a, b = _columns(_data(rng, 1, 500, 300))
    features = np.stack([a, b, a * b, a**2, b**2], axis=1)
    target = 3 * a * b - 7
    # The plain solve's leftovers: tiny coefficients on the units that are not in the truth.
    noisy = np.array([1e-11, -2e-11, 3.0 + 1e-13, 4e-14, -1e-14, -7.0])
    sparsest = sparse_solutions(OutputSystem(features, target), noisy)[0]
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
        solution, OutputSystem(features, target), monomial_scale=[512.0],
        exponents=[[1.0], [2.0]], target_scale=2.0, target_offset=1.0,
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
        np.array([1.0, np.nan, 0.0]), OutputSystem(features, a), monomial_scale=[1.0],
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
