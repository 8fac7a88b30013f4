"""The training graph shared by trials of one structure: the per-model graph's arithmetic, one
trace for every width, and results that do not depend on what the thread trained before."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest
import tensorflow as tf

import sweep.nets.shared_graph as shared
from sweep.nets import ModelSpec
from sweep.nets.normalization import fit_normalization, normalize
from sweep.nets.shared_graph import GraphKey, SharedRun, shared_graph, traced_graphs
from sweep.nets.training import BuiltModel, build, make_epoch_function, predict, train

RNG = np.random.default_rng(11)
X = RNG.uniform(1, 400, size=(300, 2))
X_VAL = RNG.uniform(1, 400, size=(60, 2))
Y, Y_VAL = np.sqrt(X[:, 0]) * X[:, 1], np.sqrt(X_VAL[:, 0]) * X_VAL[:, 1]


def _spec(**kw: object) -> ModelSpec:
    base = dict(
        hidden_layers=(6, 3), activation="tanh", input_normalization="minmax",
        target_normalization="standard", learning_rate=0.01, batch_size=32, loss="mse",
        epochs=4, lr_schedule="cosine", refit_output=False,
    )
    base.update(kw)
    return ModelSpec(**base)  # type: ignore[arg-type]


def _built(spec: ModelSpec) -> tuple[BuiltModel, np.ndarray, np.ndarray]:
    tf.keras.utils.set_random_seed(5)
    params = fit_normalization(spec.target_normalization, Y)
    built = build(spec, 2, fit_normalization(spec.input_normalization, X), params)
    return built, X.astype(spec.precision), normalize(params, Y).astype(spec.precision)


def _in_a_fresh_thread(work: Callable[[], np.ndarray]) -> np.ndarray:
    """A thread of its own holds no traced graph yet."""
    out: list[np.ndarray] = []
    worker = threading.Thread(target=lambda: out.append(work()))
    worker.start()
    worker.join()
    return out[0]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"hidden_layers": (), "loss": "mae"},
        {"hidden_layers": (9,), "activation": "relu", "lr_schedule": "constant"},
        {"hidden_layers": (4, 4, 4), "activation": "gelu", "loss": "huber", "batch_size": 64},
        {"precision": "float32", "activation": "swish"},
    ],
    ids=["two-tanh", "linear-mae", "relu-constant", "three-gelu-huber", "float32"],
)
def test_it_takes_the_per_model_graphs_steps(changes: dict[str, object]) -> None:
    """Same initial weights, same shuffles: the same losses and predictions epoch by epoch
    and the same trained weights, to rounding (the two graphs are optimised apart)."""
    spec = _spec(**changes)
    built, x, y = _built(spec)
    reference_built, _, _ = _built(spec)
    run = SharedRun(built, spec, x, y, X_VAL)
    reference = make_epoch_function(reference_built, spec, x, y, X_VAL)
    orders = np.random.default_rng(3)
    rtol = 1e-5 if spec.precision == "float32" else 1e-12
    for _ in range(spec.epochs):
        order = tf.constant(orders.permutation(len(x)), tf.int32)
        (loss, predictions), (expected_loss, expected) = run(order), reference(order)
        np.testing.assert_allclose(float(loss), float(expected_loss), rtol=rtol)
        np.testing.assert_allclose(np.asarray(predictions), np.asarray(expected), rtol=rtol)
    run.finish()
    for mine, theirs in zip(built.training.get_weights(), reference_built.training.get_weights(),
                            strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=rtol, atol=rtol)


def test_one_trace_serves_every_width_batch_size_and_row_count() -> None:
    def work() -> np.ndarray:
        for widths, batch, rows in [((6, 3), 32, 300), ((2, 17), 128, 300), ((8, 8), 64, 120)]:
            spec = _spec(hidden_layers=widths, batch_size=batch, epochs=2)
            train(spec, X[:rows], Y[:rows], X_VAL, Y_VAL, seed=1)
        graph = shared_graph(_spec())
        return np.array([traced_graphs(), graph._epoch.experimental_get_tracing_count()])

    assert list(_in_a_fresh_thread(work)) == [1, 1]


def test_results_do_not_depend_on_what_the_thread_trained_before() -> None:
    """The graph's state is reset per trial: after other widths of its structure, and after a
    trial stopped in its first epoch (as a pruned one is), a trial trains as in a fresh thread."""
    spec = _spec()

    def alone() -> np.ndarray:
        return predict(train(spec, X, Y, X_VAL, Y_VAL, seed=2).model, X_VAL)

    class Stop(Exception):
        pass

    def stop(epoch: int, predictions: np.ndarray) -> None:
        raise Stop

    def after_others() -> np.ndarray:
        train(_spec(hidden_layers=(12, 5), learning_rate=0.03), X, Y, X_VAL, Y_VAL, seed=9)
        with pytest.raises(Stop):
            train(_spec(hidden_layers=(3, 3)), X, Y, X_VAL, Y_VAL, seed=4, on_epoch=stop)
        return alone()

    np.testing.assert_array_equal(_in_a_fresh_thread(after_others), _in_a_fresh_thread(alone))


def test_threads_training_at_once_keep_their_own_graphs() -> None:
    """Models built up front (Keras' seeding is process-wide), trained at once in three threads
    on the same structure: each as if alone."""
    spec = _spec(epochs=6)
    orders = [np.random.default_rng(7).permutation(len(X)) for _ in range(spec.epochs)]

    def trained(built: BuiltModel, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        run = SharedRun(built, spec, x, y, X_VAL)
        for order in orders:
            run(tf.constant(order, tf.int32))
        run.finish()
        return predict(built.exported, X_VAL)

    expected = _in_a_fresh_thread(lambda: trained(*_built(spec)))
    models = [_built(spec) for _ in range(3)]
    results: list[np.ndarray] = []
    barrier = threading.Barrier(3)

    def work(model: tuple[BuiltModel, np.ndarray, np.ndarray]) -> None:
        barrier.wait()
        results.append(trained(*model))

    threads = [threading.Thread(target=work, args=(model,)) for model in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3
    for result in results:
        np.testing.assert_array_equal(result, expected)


def test_the_key_is_the_structure_and_the_least_recently_used_goes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert GraphKey.of(_spec(hidden_layers=(), activation="relu")) == GraphKey.of(
        _spec(hidden_layers=(), activation="gelu")
    )
    assert GraphKey.of(_spec(hidden_layers=(4,))) == GraphKey.of(_spec(hidden_layers=(40,)))
    assert GraphKey.of(_spec()) != GraphKey.of(_spec(lr_schedule="constant"))
    monkeypatch.setattr(shared, "GRAPHS_PER_THREAD", 2)

    def work() -> np.ndarray:
        first = shared_graph(_spec(loss="mse"))
        shared_graph(_spec(loss="mae"))
        shared_graph(_spec(loss="mse"))  # used again: now the most recent
        shared_graph(_spec(loss="huber"))  # drops mae's
        kept = traced_graphs()
        same = shared_graph(_spec(loss="mse")) is first
        return np.array([kept, same])

    assert list(_in_a_fresh_thread(work)) == [2, 1]
