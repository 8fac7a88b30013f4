"""The bound before Keras builds a model: computed from the graph, never from the file's claims.

Crafted archives are written in Keras 3's own config format (a control built by the same helper
loads); each is refused in one line, in a fresh process whose peak memory is measured, and every
genuine model the sweep builds (both families, every activation, both precisions) still loads,
its parameter count computed exactly.
"""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from _hand_models import IDENTITY, IDENTITY_1, exact_add, exact_multiply, mlp, standard_add

from sweep.errors import ModelLoadError
from sweep.nets import ACTIVATIONS
from sweep.nets.archive import (
    MAX_LAYERS,
    MAX_MONOMIALS,
    MAX_PARAMETERS,
    MAX_WIDTH,
    check_archive,
    check_keras_version,
)
from sweep.nets.layers import MAX_MONOMIALS as LAYERS_MAX_MONOMIALS
from sweep.nets.layers import power_of_four_scale
from sweep.nets.saving import load_model_bytes, serialize_model
from sweep.nets.spec import ModelSpec
from sweep.nets.training import build, predict

Json = dict[str, Any]
_POLICY = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float64"},
           "registered_name": None}


# --- crafting, in the format Keras 3 writes ----------------------------------------------------


def _node(source: str, width: int) -> list[Json]:
    tensor = {"class_name": "__keras_tensor__",
              "config": {"shape": [None, width], "dtype": "float64",
                         "keras_history": [source, 0, 0]}}
    return [{"args": [tensor], "kwargs": {}}]


def _input(width: int, name: str = "operands", batch: int | None = None) -> Json:
    return {"module": "keras.layers", "class_name": "InputLayer",
            "config": {"batch_shape": [batch, width], "dtype": "float64", "sparse": False,
                       "ragged": False, "name": name, "optional": False},
            "registered_name": None, "name": name, "inbound_nodes": []}


def _dense(name: str, units: int, source: str, width: int, *, build: int | bool | None = True
           ) -> Json:
    """A Dense layer called on `source` (`width` features); its build_config says `build`
    features (True: the truth, None: no build_config)."""
    layer: Json = {
        "module": "keras.layers", "class_name": "Dense",
        "config": {"name": name, "trainable": True, "dtype": _POLICY, "units": units,
                   "activation": "linear", "use_bias": True,
                   "kernel_initializer": {"module": "keras.initializers",
                                          "class_name": "GlorotUniform",
                                          "config": {"seed": None}, "registered_name": None},
                   "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros",
                                        "config": {}, "registered_name": None},
                   "kernel_regularizer": None, "bias_regularizer": None,
                   "kernel_constraint": None, "bias_constraint": None,
                   "quantization_config": None},
        "registered_name": None, "name": name, "inbound_nodes": _node(source, width),
    }
    if build is not None:
        layer["build_config"] = {"input_shape": [None, width if build is True else build]}
    return layer


def _ours(kind: str, name: str, source: str, width: int, **config: Any) -> Json:
    return {"module": "sweep.nets.layers", "class_name": kind,
            "config": {"name": name, "trainable": kind != "Monomials", "dtype": _POLICY,
                       **config},
            "registered_name": f"sweep>{kind}", "build_config": {"input_shape": [None, width]},
            "name": name, "inbound_nodes": _node(source, width)}


def _functional(layers: list[Json]) -> Json:
    return {"module": "keras.src.models.functional", "class_name": "Functional",
            "config": {"name": "crafted", "trainable": True, "layers": layers,
                       "input_layers": ["operands", 0, 0],
                       "output_layers": [layers[-1]["name"], 0, 0]},
            "registered_name": "Functional", "build_config": {"input_shape": None}}


def _chain(width: int, units: list[int], *, build: int | bool | None = True) -> Json:
    layers, source, features = [_input(width)], "operands", width
    for index, unit in enumerate(units):
        layers.append(_dense(f"d{index}", unit, source, features, build=build))
        source, features = f"d{index}", unit
    return _functional(layers)


def _sequential_chain(width: int, units: list[int], *, build: int | bool | None = True) -> Json:
    """The same chain as a Sequential model (its layers carry no inbound nodes)."""
    layers = [{k: v for k, v in layer.items() if k != "inbound_nodes"}
              for layer in _chain(width, units, build=build)["config"]["layers"]]
    return {"module": "keras", "class_name": "Sequential",
            "config": {"name": "crafted", "trainable": True, "dtype": _POLICY, "layers": layers,
                       "build_input_shape": [None, width]},
            "registered_name": None, "build_config": {"input_shape": [None, width]}}


def _archive(config: Json | bytes, weights: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("config.json", config if isinstance(config, bytes)
                         else json.dumps(config))
        archive.writestr("metadata.json", json.dumps({"keras_version": keras.__version__}))
        if weights is not None:
            archive.writestr("model.weights.h5", weights)
    return buffer.getvalue()


def _h5_bomb() -> bytes:
    """A weights file whose one dataset declares 1 GiB and stores a few bytes (gzip, fill)."""
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as weights:
        weights.create_dataset("layers/dense/vars/0", shape=(1 << 27,), dtype="float64",
                               chunks=(1 << 16,), compression="gzip", fillvalue=0.0)
    return buffer.getvalue()


def _cycle() -> Json:
    a = _dense("a", 4, "b", 4)
    b = _dense("b", 4, "a", 4)
    return _functional([_input(2), a, b])


def _renamed(layer: Json, **fields: Any) -> Json:
    return {**layer, **fields}


# Each crafted archive, and what its one line must say. Every one of them names a model Keras
# would start building (no safe-mode refusal comes before the allocation).
CRAFTED: dict[str, tuple[Callable[[], bytes], str]] = {
    # The case: a huge Dense declared without build_config.
    "huge units, no build_config": (
        lambda: _archive(_chain(2, [100_000_000], build=None)), "units = 100000000; the limit"),
    "wide input, no build_config": (
        lambda: _archive(_chain(MAX_WIDTH, [MAX_WIDTH, 1], build=None)),
        "would build 268,468,225 parameters; the limit"),
    "build_config understates the input": (
        lambda: _archive(_chain(4096, [4096, 4096, 1], build=2)),
        "declares the build input {\"input_shape\": [null, 2]}, but the graph gives it "
        "[null, 4096]"),
    "a tensor that understates its shape": (
        lambda: _archive(_chain(8192, [8192, 1], build=None)),  # nodes say 8192: see below
        "would build 67,125,249 parameters"),
    "a deep chain whose total is huge": (
        lambda: _archive(_chain(2, [1500] * 40)), "would build 87,813,000 parameters"),
    "a Sequential chain without build_configs": (
        lambda: _archive(_sequential_chain(4096, [4096, 4096, 1], build=None)),
        "would build 33,566,721 parameters"),
    "a Sequential whose build_config understates": (
        lambda: _archive(_sequential_chain(4096, [4096, 1], build=2)),
        "declares the build input {\"input_shape\": [null, 2]}"),
    "too many layers": (
        lambda: _archive(_chain(2, [1] * (MAX_LAYERS + 1))), f"the limit is {MAX_LAYERS}"),
    "unknown layer class": (
        lambda: _archive(_functional([_input(2), _renamed(
            _dense("e", 4, "operands", 2), class_name="Embedding",
            config={"input_dim": 10**6, "output_dim": 10**4, "name": "e"})])),
        "layer 'e' is a 'Embedding', not one of the layers a sweep model is built from"),
    "a Dense resolved to another registered class": (
        lambda: _archive(_functional([_input(2), _renamed(
            _dense("d", 4, "operands", 2), registered_name="evil>Dense")])),
        "layer 'd' is a 'evil>Dense', not one of the layers"),
    "a legacy layer config (no module)": (
        lambda: _archive(_functional([_input(2), {
            k: v for k, v in _dense("d", 4, "operands", 2).items() if k != "module"}])),
        "layer 'd' has a legacy config (no module)"),
    "LoRA factors on a Dense": (
        lambda: _archive(_functional([_input(2), _renamed(_dense("d", 4, "operands", 2), config={
            **_dense("d", 4, "operands", 2)["config"], "lora_rank": 10**6})])),
        "sets lora_rank, which a sweep model never uses"),
    "a quantised dtype policy": (
        lambda: _archive(_functional([_input(2), _renamed(_dense("d", 4, "operands", 2), config={
            **_dense("d", 4, "operands", 2)["config"],
            "dtype": {**_POLICY, "config": {"name": "int8_from_float32"}}})])),
        "Dense layer 'd' has a dtype policy a sweep model never uses"),
    "an unknown config key": (
        lambda: _archive(_functional([_input(2), _renamed(_dense("d", 4, "operands", 2), config={
            **_dense("d", 4, "operands", 2)["config"], "weights": [[0.0] * 4] * 2})])),
        "Dense layer 'd' has a key a sweep model never uses ('weights')"),
    "a huge input": (
        lambda: _archive(_functional([_input(10**9), _dense("d", 1, "operands", 10**9)])),
        "input 'operands' has 1000000000 features; the limit is 1 to 16,384"),
    "a fixed huge batch": (
        lambda: _archive(_functional([_input(2, batch=10**9), _dense("d", 1, "operands", 2)])),
        "has the shape [1000000000, 2], not (any batch, features)"),
    "a cycle": (lambda: _archive(_cycle()), "cannot be inferred"),
    "a free tensor of a declared shape": (
        lambda: _archive(_functional([_input(2), _renamed(_dense("d", 4, "operands", 2),
                                                          inbound_nodes=[{"args": [{
            "class_name": "__keras_tensor__",
            "config": {"shape": [None, 10**7], "dtype": "float64"}}], "kwargs": {}}])])),
        "is called on a tensor no layer of the model produces"),
    "absurd Monomials": (
        lambda: _archive(_functional([_input(2), _ours(
            "Monomials", "m", "operands", 2, exponents=[[0, 0]] * (MAX_MONOMIALS + 1),
            scale=[1.0, 1.0])])),
        f"has {MAX_MONOMIALS + 1:,} product units; the limit is 1 to {MAX_MONOMIALS:,}"),
    "Monomials wider than their input": (
        lambda: _archive(_functional([_input(2), _ours(
            "Monomials", "m", "operands", 2, exponents=[[1.0] * 5000], scale=None)])),
        "has exponents or scales that are not 2 per unit"),
    "a Normalize that broadcasts wide": (
        lambda: _archive(_functional([_input(1), _ours(
            "Normalize", "n", "operands", 1, scheme="none", transform="identity",
            offset=[0.0] * 50_000, scale=[1.0] * 50_000)])),
        "Normalize layer 'n' has 50,000 offset values for 1 features"),
    "a weights file that declares 1 GiB": (
        lambda: _archive(_chain(2, [1]), _h5_bomb()),
        f"weights file declares more than the limit of {64 << 20:,} bytes"),
}


def _understated_tensor(data: bytes) -> bytes:
    """The 'tensor that understates its shape' case: every node's tensor claims 2 features."""
    source = zipfile.ZipFile(io.BytesIO(data))
    config = json.loads(source.read("config.json"))
    for layer in config["config"]["layers"]:
        for node in layer["inbound_nodes"]:
            node["args"][0]["config"]["shape"] = [None, 2]
    return _archive(config)


def _crafted(name: str) -> bytes:
    data = CRAFTED[name][0]()
    return _understated_tensor(data) if name == "a tensor that understates its shape" else data


@pytest.mark.parametrize("name", list(CRAFTED))
def test_a_crafted_archive_is_refused_in_one_line(name: str) -> None:
    with pytest.raises(ModelLoadError) as refused:
        check_archive(_crafted(name), label="crafted")
    message = str(refused.value)
    assert "\n" not in message and message.startswith(("crafted", "cannot load crafted "))
    assert CRAFTED[name][1] in message, message


def test_the_crafting_is_keras_format_a_small_control_loads() -> None:
    """The crafted configs are what Keras reads: the same helpers at a small size build (and
    without build_configs Keras builds the same model from the graph)."""
    normalized = _functional([
        _input(2), _ours("Normalize", "n", "operands", 2, scheme="none", transform="identity",
                         offset=[0.0, 0.0], scale=[1.0, 1.0]),
        _ours("Monomials", "m", "n", 2, exponents=[[1.0, 0.0], [0.5, -1.0]], scale=[1.0, 4.0]),
        _dense("d", 1, "m", 2),
    ])
    for config in (_chain(2, [8, 4, 1]), _chain(2, [8, 4, 1], build=None), normalized,
                   _sequential_chain(2, [8, 4, 1]), _sequential_chain(2, [8, 4, 1], build=None)):
        size = check_archive(_archive(config))
        model = keras.models.model_from_json(json.dumps(config))
        assert size.parameters == model.count_params() in (65, 3)
        loaded = load_model_bytes(serialize_model(model))
        assert check_archive(serialize_model(loaded)).parameters == size.parameters
        assert predict(loaded, np.ones((3, 2))).shape == (3,)


# --- every genuine model still loads, its size computed exactly --------------------------------


def _power(degree: int, negative: bool, half: bool, precision: str = "float64") -> keras.Model:
    spec = ModelSpec((), "linear", "none", "none", 0.0, 1, "mse", 0, "constant", True,
                     family="power", degree=degree, negative_powers=negative,
                     half_powers=half, snap_output=True, precision=precision)
    scale = power_of_four_scale(np.array([[499.0, -500.0]]))
    return build(spec, 2, IDENTITY, IDENTITY_1, monomial_scale=scale).exported


def _float32_mlp() -> keras.Model:
    spec = ModelSpec((64, 64, 64), "tanh", "none", "none", 1e-3, 32, "mse", 1, "constant",
                     False, precision="float32")
    return build(spec, 2, IDENTITY, IDENTITY_1).exported


def _sequential() -> keras.Model:
    """As benchmarks/export.py builds one."""
    return keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(1)])


GENUINE: dict[str, Callable[[], keras.Model]] = {
    "exact add": exact_add,
    "exact multiply": exact_multiply,
    "standard add": standard_add,
    **{f"mlp {activation}": functools.partial(mlp, activation) for activation in ACTIVATIONS},
    "mlp without hidden layers": lambda: mlp("relu", layers=()),
    "mlp 16 layers of 64": lambda: mlp("relu", layers=(64,) * 16),
    "mlp float32": _float32_mlp,
    "power 2": lambda: _power(2, False, False),
    "power 3 negative": lambda: _power(3, True, False),
    "power 8 negative halves": lambda: _power(8, True, True),
    "power 4 float32": lambda: _power(4, True, True, "float32"),
    "sequential": _sequential,
}


@pytest.mark.parametrize("name", list(GENUINE))
def test_every_genuine_model_loads_and_is_counted_exactly(name: str) -> None:
    model = GENUINE[name]()
    data = serialize_model(model)
    size = check_archive(data, label=name)
    assert size.parameters == model.count_params()
    assert size.weight_bytes == sum(int(np.prod(w.shape)) * w.dtype.itemsize
                                    for w in model.get_weights())
    loaded = load_model_bytes(data, label=name)
    assert loaded.count_params() == model.count_params()
    probe = np.array([[3.0, 4.0], [-7.0, 250.0]])
    np.testing.assert_array_equal(predict(loaded, probe), predict(model, probe))


def test_a_model_from_another_major_keras_is_refused_without_keras() -> None:
    check_keras_version(keras.__version__, label="add version 1")
    with pytest.raises(ModelLoadError, match=rf"^add version 1 was saved by Keras 2.15.0; this "
                       rf"is Keras {keras.__version__} \(major versions must match\)$"):
        check_keras_version("2.15.0", label="add version 1")


def test_the_bounds_agree_with_the_layers_and_the_space() -> None:
    assert MAX_MONOMIALS == LAYERS_MAX_MONOMIALS
    from sweep.search.space import DEFAULT_MAX_PARAMETERS

    assert DEFAULT_MAX_PARAMETERS < MAX_PARAMETERS and MAX_WIDTH >= 4096  # the space's widest


# --- in a fresh process: one line, bounded memory, and (the check alone) no TensorFlow --------

_RUNNER = """
import json, sys, time
from pathlib import Path
keras_free = sys.argv[1] == "check"
if keras_free:
    from sweep.nets.archive import check_archive as load
else:
    from sweep.nets.saving import load_model_bytes as load
from sweep.errors import ModelLoadError

def peak():
    return int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1])

out = {"start": peak() // 1024}
for path in sys.argv[2:]:
    try:
        # Start each case's high-water mark afresh ("5" resets VmHWM).
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    started = time.monotonic()
    try:
        load(Path(path).read_bytes(), label="crafted")
        message = None
    except ModelLoadError as e:
        message = str(e)
    out[Path(path).stem] = [message, peak() // 1024, time.monotonic() - started]
out["tensorflow"] = "tensorflow" in sys.modules or "keras" in sys.modules
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def crafted_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("crafted")
    paths = []
    for index, name in enumerate(CRAFTED):
        path = folder / f"{index}.keras"
        path.write_bytes(_crafted(name))
        paths.append(path)
    return paths


def _run(mode: str, paths: list[Path]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    done = subprocess.run([sys.executable, "-c", _RUNNER, mode, *map(str, paths)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_crafted_archives_are_refused_without_tensorflow_in_bounded_memory(
    crafted_files: list[Path],
) -> None:
    """The check alone (what pull, predict and serve run first): no TensorFlow, a few tens of
    MiB, milliseconds per case."""
    result = _run("check", crafted_files)
    assert result["tensorflow"] is False
    for index, name in enumerate(CRAFTED):
        message, peak, seconds = result[str(index)]
        assert message is not None and "\n" not in message, name
        assert CRAFTED[name][1] in message, (name, message)
        assert peak < result["start"] + 64, (name, peak)
        assert seconds < 1, (name, seconds)


@pytest.mark.slow  # a real process (or several): the slow tier
def test_crafted_archives_are_refused_by_the_keras_loader_in_bounded_memory(
    crafted_files: list[Path],
) -> None:
    """`load_model_bytes` (TensorFlow started, ~550 MiB): no case adds more than a little."""
    result = _run("load", crafted_files)
    for index, name in enumerate(CRAFTED):
        message, peak, seconds = result[str(index)]
        assert message is not None and "\n" not in message, name
        assert CRAFTED[name][1] in message, (name, message)
        assert peak < result["start"] + 64, (name, peak)
        assert seconds < 1, (name, seconds)
