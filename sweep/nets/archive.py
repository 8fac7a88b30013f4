"""What loading a `.keras` archive would make Keras allocate, bounded before Keras sees it.

Plain zipfile, json and h5py, no Keras: importing this module starts no TensorFlow, so a
refused archive (or one saved by another Keras) is answered at once, before TensorFlow starts.

The configuration is read the way Keras 3 reads it (`functional_from_config`,
`Sequential.from_config`, `deserialize_keras_object`): each layer's class is resolved as Keras
resolves it (a registered name first), and its weights' shapes are computed from its own
configuration and the shapes that reach it through the graph, starting at the input layers.
Nothing the file's author claims about sizes is believed: a `build_config` that differs from the
shape the graph gives its layer is refused (Keras would build the layer from it before the call).
Anything not understood (a layer class the sweep never builds, a key, a shape that cannot be
inferred) is refused too. Every failure is one `ModelLoadError` line.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any, TypeGuard

from sweep.errors import ModelLoadError
from sweep.nets.formula import Formula
from sweep.nets.keras_version import check_keras_version
from sweep.nets.spec import ACTIVATIONS

__all__ = [
    "ARCHIVE_MEMBERS", "KNOWN_LAYERS", "MAX_ARCHIVE_BYTES", "MAX_CONFIG_BYTES", "MAX_LAYERS",
    "MAX_MONOMIALS", "MAX_PARAMETERS", "MAX_UNPACKED_BYTES", "MAX_WEIGHT_BYTES", "MAX_WIDTH",
    "ModelSize", "check_archive", "check_keras_version",
]

# Bounds on what reaches Keras. The sweep's models are a few kB to a few MB: at most 16 hidden
# layers of width 4096, 4096 product units, 250,000 parameters by default (sweep.search.space);
# an archive beyond these was not written by a sweep.
MAX_ARCHIVE_BYTES = 64 << 20
MAX_UNPACKED_BYTES = 64 << 20
MAX_CONFIG_BYTES = 1 << 20
MAX_PARAMETERS = 5_000_000
MAX_WIDTH = 16_384  # any tensor's features: a row of the widest is 128 KiB in float64
MAX_LAYERS = 256
MAX_WEIGHT_BYTES = MAX_UNPACKED_BYTES  # what the weights file may declare (not store)
MAX_MONOMIALS = 4096  # as sweep.nets.layers.MAX_MONOMIALS (which loads Keras; a test checks)
ARCHIVE_MEMBERS = frozenset({"config.json", "metadata.json", "model.weights.h5"})

# The classes a sweep model is built from, as Keras resolves them: ours by registered name
# (looked up before anything else), Keras' own by module and class name.
_REGISTERED = {f"sweep>{n}": n for n in ("Normalize", "Denormalize", "Monomials", "FormulaLayer")}
_BUILTIN = frozenset({"Dense", "InputLayer"})
KNOWN_LAYERS = tuple(sorted([*_REGISTERED.values(), *_BUILTIN]))
_MODELS = {
    "Functional": ({"keras.src.models.functional", "keras.models", "keras"},
                   {"name", "trainable", "layers", "input_layers", "output_layers"}),
    "Sequential": ({"keras.src.models.sequential", "keras.models", "keras"},
                   {"name", "trainable", "dtype", "layers", "build_input_shape"}),
}
_LAYER_KEYS = {"module", "class_name", "config", "registered_name", "build_config", "name",
               "inbound_nodes"}
_AFFINE = {"name", "trainable", "dtype", "scheme", "transform", "offset", "scale"}
_CONFIG_KEYS = {
    "InputLayer": {"name", "dtype", "batch_shape", "batch_input_shape", "shape", "input_shape",
                   "batch_size", "sparse", "ragged", "optional", "input_tensor"},
    "Dense": {"name", "trainable", "dtype", "units", "activation", "use_bias",
              "kernel_initializer", "bias_initializer", "kernel_regularizer", "bias_regularizer",
              "activity_regularizer", "kernel_constraint", "bias_constraint",
              "quantization_config", "lora_rank", "lora_alpha"},
    "Normalize": _AFFINE,
    "Denormalize": _AFFINE,
    "Monomials": {"name", "trainable", "dtype", "exponents", "scale"},
    "FormulaLayer": {"name", "trainable", "dtype", "formula"},
}
# Options that change what is allocated (LoRA factors, quantised kernels, a given tensor) or
# run code a sweep model never has: each must be absent or null.
_ABSENT = ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
           "bias_constraint", "quantization_config", "lora_rank", "lora_alpha", "input_tensor")
_FLOAT_DTYPES = {"float16", "bfloat16", "float32", "float64", "mixed_float16", "mixed_bfloat16"}
_ACTIVATIONS = {*ACTIVATIONS, "sigmoid", "softplus", "softsign", "silu", "leaky_relu", "relu6",
                "hard_sigmoid", "exponential", "mish"}
_INITIALIZERS = {"GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform",
                 "LecunNormal", "RandomUniform", "RandomNormal", "TruncatedNormal",
                 "VarianceScaling", "Zeros", "Ones", "Constant", "Orthogonal", "Identity"}


@dataclass(frozen=True)
class ModelSize:
    """What Keras would allocate for an archive's model, from the graph."""

    parameters: int
    widest: int  # the widest tensor's features
    layers: int
    weight_bytes: int  # what the weights file declares


def check_archive(data: bytes, *, label: str = "model") -> ModelSize:
    """Refuse an archive Keras should not even open: too big, unexpected members, a model not
    built from the sweep's layers, or one that would build more than the bounds (Keras
    allocates the weights before safe mode looks at anything else).

    Returns:
        The model's size, computed from the graph.

    Raises:
        ModelLoadError: one line naming what is refused.
    """
    if len(data) > MAX_ARCHIVE_BYTES:
        raise ModelLoadError(
            f"{label} is {len(data):,} bytes; a model archive may be at most {MAX_ARCHIVE_BYTES:,}"
        )
    text, weights = _read_members(data, label)
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        raise ModelLoadError(f"{label}'s config.json is not JSON") from None
    try:
        parameters, widest, layers = _Reader(label).read(parsed)
    except (TypeError, KeyError, IndexError, AttributeError, RecursionError):
        # Fail closed: whatever this reading did not foresee is not a sweep model.
        raise ModelLoadError(
            f"cannot load {label} in safe mode: its config.json is not a model config this "
            "sweep understands"
        ) from None
    return ModelSize(parameters, widest, layers, _weight_bytes(weights, label))


def _read_members(data: bytes, label: str) -> tuple[bytes, bytes]:
    """config.json's text and the weights file's bytes (empty if none), read under bounds."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            names = [m.filename for m in members]
            unexpected = sorted(set(names) - ARCHIVE_MEMBERS)
            if unexpected or len(names) != len(set(names)):
                shown = ", ".join(repr(n[:60]) for n in unexpected[:3]) or "a duplicate name"
                raise ModelLoadError(
                    f"{label} holds unexpected members ({shown}); a sweep model has only "
                    f"{', '.join(sorted(ARCHIVE_MEMBERS))}"
                )
            unpacked = sum(m.file_size for m in members)
            if unpacked > MAX_UNPACKED_BYTES:
                raise ModelLoadError(
                    f"{label} unpacks to {unpacked:,} bytes; the limit is {MAX_UNPACKED_BYTES:,}"
                )
            by_name = {m.filename: m for m in members}
            config = by_name.get("config.json")
            if config is None:
                raise ModelLoadError(f"{label} has no config.json")
            if config.file_size > MAX_CONFIG_BYTES:
                raise ModelLoadError(
                    f"{label}'s config.json is {config.file_size:,} bytes; the limit is "
                    f"{MAX_CONFIG_BYTES:,}"
                )
            text = archive.read(config)[: MAX_CONFIG_BYTES + 1]
            h5 = by_name.get("model.weights.h5")
            weights = b"" if h5 is None else archive.read(h5)[: MAX_UNPACKED_BYTES + 1]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise ModelLoadError(f"{label} is not a readable .keras archive ({e})") from None
    return text, weights


def _weight_bytes(data: bytes, label: str) -> int:
    """What Keras would read from the weights file: every dataset's declared size (a
    compressed HDF5 dataset stores next to nothing and may declare gigabytes)."""
    if not data:
        return 0
    import h5py  # here, not at the top: only an archive with weights pays for it

    total = 0
    try:
        with h5py.File(io.BytesIO(data), "r") as weights:
            datasets: list[Any] = []
            weights.visititems(
                lambda _, item: datasets.append(item) if isinstance(item, h5py.Dataset) else None
            )
            for dataset in datasets:
                total += math.prod(dataset.shape or ()) * dataset.dtype.itemsize
                if total > MAX_WEIGHT_BYTES:
                    raise ModelLoadError(
                        f"{label}'s weights file declares more than the limit of "
                        f"{MAX_WEIGHT_BYTES:,} bytes (at dataset {dataset.name[:60]!r})"
                    )
    except ModelLoadError:
        raise
    except Exception as e:  # h5py raises OSError, KeyError, ValueError... for a bad file
        raise ModelLoadError(f"{label}'s weights are not a readable HDF5 file ({e})") from None
    return total


@dataclass
class _Layer:
    name: str
    kind: str
    data: dict[str, Any]
    config: dict[str, Any]
    inputs: int = 0  # the features it is called on, once inferred
    width: int = 0  # its output's features, once inferred

    @property
    def what(self) -> str:
        kind = "input" if self.kind == "InputLayer" else f"{self.kind} layer"
        return f"{kind} {_short(self.name)!r}"


class _Reader:
    """One config.json, read as Keras will read it."""

    def __init__(self, label: str) -> None:
        self.label = label

    def refuse(self, why: str) -> ModelLoadError:
        return ModelLoadError(f"cannot load {self.label} in safe mode: {why}")

    def limit(self, what: str, value: str, limit: str) -> ModelLoadError:
        return ModelLoadError(f"{self.label}'s {what} has {value}; the limit is {limit}")

    def only(self, extra: set[str], what: str) -> None:
        if extra:
            raise self.refuse(f"{what} has a key a sweep model never uses "
                              f"({_short(str(min(extra)))!r})")

    def read(self, config: object) -> tuple[int, int, int]:
        """(parameters, widest tensor, layers) of the model."""
        top = _mapping(config)
        class_name = top.get("class_name") if top else None
        inner = _mapping(top.get("config")) if top else None
        modules, keys = _MODELS.get(str(class_name), (set(), set()))
        if top is None or inner is None or not _among(class_name, _MODELS) or (
            not _among(top.get("module"), modules)
            or top.get("registered_name", class_name) not in (None, class_name)
            or "shared_object_id" in top
        ):
            shown = _short(str(class_name)) if top else type(config).__name__
            raise self.refuse(f"the model is a {shown!r}, not a Functional or Sequential model")
        self.only(set(inner) - keys, "the model's config")
        entries = inner.get("layers")
        if not isinstance(entries, list) or not entries:
            raise self.refuse("the model's config has no list of layers")
        if len(entries) > MAX_LAYERS:
            raise self.limit("model", f"{len(entries):,} layers", f"{MAX_LAYERS:,}")
        # Every layer's own config first (Keras builds each as it reads it), then the graph.
        layers = [self.layer(entry, index) for index, entry in enumerate(entries)]
        if class_name == "Sequential":
            self.sequential(layers, inner)
        else:
            self.functional(layers, inner)
        parameters = sum(
            layer.inputs * layer.width + (layer.width if layer.config.get("use_bias", True) else 0)
            for layer in layers if layer.kind == "Dense"
        )
        if parameters > MAX_PARAMETERS:
            raise ModelLoadError(
                f"{self.label} would build {parameters:,} parameters; the limit is "
                f"{MAX_PARAMETERS:,}"
            )
        return parameters, max(layer.width for layer in layers), len(layers)

    def layer(self, entry: object, index: int) -> _Layer:
        """One layer's class and configuration, checked; an input layer's width."""
        data = _mapping(entry)
        if data is None:
            raise self.refuse(f"layer {index} is not a layer config")
        inner = _mapping(data.get("config"))
        raw_name = data.get("name", inner.get("name") if inner else None)
        name = _short(raw_name if isinstance(raw_name, str) else f"#{index}")
        class_name = data.get("class_name")
        registered = data.get("registered_name", class_name)
        shown = _short(str(registered if isinstance(registered, str) else class_name))
        if "module" not in data:
            raise self.refuse(f"layer {name!r} has a legacy config (no module), which Keras "
                              "reads another way; a sweep model is saved by Keras 3")
        if isinstance(registered, str) and registered in _REGISTERED:
            kind = _REGISTERED[registered]
            known = class_name == kind
        else:
            kind = shown
            known = _among(class_name, _BUILTIN) and data.get("module") == "keras.layers" and (
                registered in (None, class_name)
            )
        if not known:
            raise self.refuse(f"layer {name!r} is a {shown!r}, not one of the layers a sweep "
                              f"model is built from ({', '.join(KNOWN_LAYERS)})")
        if inner is None or not isinstance(raw_name, str):
            raise self.refuse(f"{kind} layer {name!r} has no config or no name")
        layer = _Layer(raw_name, kind, data, inner)
        self.only((set(data) - _LAYER_KEYS) | (set(inner) - _CONFIG_KEYS[kind]), layer.what)
        for key in _ABSENT:
            if inner.get(key) is not None:
                raise self.refuse(f"{layer.what} sets {key}, which a sweep model never uses")
        if not _float_policy(inner.get("dtype")):
            raise self.refuse(f"{layer.what} has a dtype policy a sweep model never uses")
        if kind == "InputLayer":
            layer.width = self.input_width(layer)
        elif kind == "Dense":
            units = inner.get("units")
            if not _integer(units) or not 1 <= units <= MAX_WIDTH:
                raise self.limit(layer.what, f"units = {_short(repr(units))}",
                                 f"1 to {MAX_WIDTH:,}")
            activation = inner.get("activation", "linear")
            usual = [
                activation is None or _among(activation, _ACTIVATIONS),
                isinstance(inner.get("use_bias", True), bool),
                _initializer(inner.get("kernel_initializer")),
                _initializer(inner.get("bias_initializer")),
            ]
            if not all(usual):
                raise self.refuse(f"{layer.what} has an activation, bias or initializer a "
                                  "sweep model never uses")
        elif kind == "Monomials":
            rows = inner.get("exponents")
            count = len(rows) if isinstance(rows, list) else 0
            if not 0 < count <= MAX_MONOMIALS:
                raise self.limit(layer.what, f"{count:,} product units", f"1 to {MAX_MONOMIALS:,}")
        elif kind == "FormulaLayer":  # bounded terms, exponents and functions (sweep.nets.formula)
            try:
                Formula.from_dict(inner.get("formula"))  # type: ignore[arg-type]
            except (TypeError, ValueError) as e:
                raise self.refuse(f"{layer.what} has a formula a sweep never finds: {e}") from None
        return layer

    def input_width(self, layer: _Layer) -> int:
        config = layer.config
        if config.get("sparse") or config.get("ragged") or config.get("optional"):
            raise self.refuse(f"{layer.what} is sparse, ragged or optional")
        batch_shape = config.get("batch_shape", config.get("batch_input_shape"))
        if batch_shape is None:
            shape = config.get("shape", config.get("input_shape"))
            if config.get("batch_size") is not None or not isinstance(shape, list):
                raise self.refuse(f"{layer.what} has no shape a sweep model has")
            batch_shape = [None, *shape]
        if not (isinstance(batch_shape, list) and len(batch_shape) == 2 and batch_shape[0] is None):
            raise self.refuse(f"{layer.what} has the shape {_short(repr(batch_shape))}, not "
                              "(any batch, features)")
        features = batch_shape[1]
        if not _integer(features) or not 1 <= features <= MAX_WIDTH:
            raise self.limit(layer.what, f"{_short(repr(features))} features",
                             f"1 to {MAX_WIDTH:,}")
        return int(features)

    def functional(self, layers: list[_Layer], inner: dict[str, Any]) -> None:
        """Infer every layer's input as `functional_from_config` wires the graph."""
        by_name = {layer.name: layer for layer in layers}
        if len(by_name) != len(layers):
            raise self.refuse("two of the model's layers share a name")
        sources = {
            layer.name: self.source(layer, by_name) for layer in layers
            if layer.kind != "InputLayer" or layer.data.get("inbound_nodes") not in (None, [])
        }
        pending = [layer for layer in layers if layer.name in sources]
        while pending:  # in dependency order: a layer whose source never resolves is on a cycle
            ready = [la for la in pending if by_name[sources[la.name]].width]
            if not ready:
                raise self.refuse(f"the input of {pending[0].what} cannot be inferred (a cycle "
                                  "in the graph)")
            for layer in ready:
                self.call(layer, by_name[sources[layer.name]].width)
            pending = [la for la in pending if not la.width]
        for key in ("input_layers", "output_layers"):
            for reference in _references(inner.get(key)):
                target = by_name.get(reference[0]) if _history(reference) else None
                if target is None or (key == "input_layers" and target.kind != "InputLayer"):
                    raise self.refuse(f"the model's {key} name {_short(repr(reference))}, not "
                                      "a layer of the right kind")

    def source(self, layer: _Layer, by_name: dict[str, _Layer]) -> str:
        """The one layer whose output `layer` is called on."""
        nodes = layer.data.get("inbound_nodes")
        if layer.kind == "InputLayer" or not isinstance(nodes, list) or len(nodes) != 1:
            raise self.refuse(f"{layer.what} is not called exactly once in the graph")
        node = _mapping(nodes[0]) or {}
        args = node.get("args")
        if set(node) != {"args", "kwargs"} or node["kwargs"] != {} or (
            not isinstance(args, list) or len(args) != 1
        ):
            raise self.refuse(f"{layer.what} is called on something other than one tensor")
        tensor = _mapping(args[0]) or {}
        history = (_mapping(tensor.get("config")) or {}).get("keras_history")
        # Without a history Keras would call the layer on a free tensor of the declared shape.
        if tensor.get("class_name") != "__keras_tensor__" or not _history(history):
            raise self.refuse(f"{layer.what} is called on a tensor no layer of the model produces")
        if history[0] not in by_name or history[1:] != [0, 0]:
            raise self.refuse(f"{layer.what} is called on {_short(repr(history))}, not a layer's "
                              "one output")
        return str(history[0])

    def sequential(self, layers: list[_Layer], inner: dict[str, Any]) -> None:
        """Infer every layer's input as `Sequential.from_config` chains them."""
        first, *rest = layers
        width = first.width  # 0 unless it is an input layer
        if not width or inner.get("build_input_shape") not in (None, [None, width]):
            raise self.refuse("the Sequential model does not start with an input layer of the "
                              "input shape it declares")
        for layer in rest:
            if layer.kind == "InputLayer" or layer.data.get("inbound_nodes") not in (None, []):
                raise self.refuse(f"{layer.what} is not one link of the chain")
            self.call(layer, width)
            width = layer.width

    def call(self, layer: _Layer, width: int) -> None:
        """Keras calls `layer` on (batch, width): check what it is built from, infer its output."""
        layer.inputs = width
        build = layer.data.get("build_config")
        # Keras builds a layer from its build_config before the call: it must be the graph's.
        if build is not None and build != {"input_shape": [None, width]}:
            raise self.refuse(f"{layer.what} declares the build input "
                              f"{_short(json.dumps(build))}, but the graph gives it "
                              f"[null, {width}]")
        config = layer.config
        if layer.kind == "Dense":
            layer.width = int(config["units"])
        elif layer.kind == "Monomials":  # (batch, arity) -> (batch, product units)
            rows, scale = config["exponents"], config.get("scale")
            arities = {len(row) if isinstance(row, list) else -1 for row in rows}
            if arities != {width} or (scale is not None and not (
                isinstance(scale, list) and len(scale) == width
            )):
                raise self.refuse(f"{layer.what} has exponents or scales that are not {width} "
                                  "per unit")
            layer.width = len(rows)
        elif layer.kind == "FormulaLayer":  # (batch, its inputs) -> (batch, 1)
            if config["formula"]["arity"] != width:
                raise self.refuse(f"{layer.what} takes {config['formula']['arity']} inputs, "
                                  f"but the graph gives it {width}")
            layer.width = 1
        else:  # Normalize, Denormalize: the constants broadcast against the input
            for key in ("offset", "scale"):
                values = config.get(key)
                count = len(values) if isinstance(values, list) else 0
                if count not in (1, width):  # a longer list would widen the output unseen
                    raise self.refuse(f"{layer.what} has {count:,} {key} values for {width} "
                                      "features")
            layer.width = width


def _float_policy(value: object) -> bool:
    """A dtype (or dtype policy) of plain floats: a quantised one allocates other weights."""
    mapping = _mapping(value)
    if mapping is not None:
        config = _mapping(mapping.get("config")) or {}
        if not _among(mapping.get("class_name"), {"DTypePolicy", "FloatDTypePolicy"}) or set(
            config
        ) != {"name"} or mapping.get("registered_name") is not None:
            return False
        value = config["name"]
    return value is None or _among(value, _FLOAT_DTYPES)


def _initializer(value: object) -> bool:
    if value is None or isinstance(value, str):
        return value in (None, "glorot_uniform", "zeros", "ones", "he_normal", "he_uniform")
    mapping = _mapping(value) or {}
    config = _mapping(mapping.get("config"))
    return (
        mapping.get("module") == "keras.initializers"
        and _among(mapping.get("class_name"), _INITIALIZERS)
        and mapping.get("registered_name") is None and config is not None
        and all(v is None or isinstance(v, str | int | float) for v in config.values())
    )


def _among(value: object, options: Collection[str]) -> TypeGuard[str]:
    return isinstance(value, str) and value in options


def _mapping(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _integer(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _history(value: object) -> TypeGuard[list[Any]]:
    """A [layer name, node index, tensor index] reference."""
    return isinstance(value, list) and len(value) == 3 and isinstance(value[0], str) and (
        _integer(value[1]) and _integer(value[2])
    )


def _references(value: object) -> Iterator[object]:
    """The references in input_layers / output_layers; any other leaf as is (then refused)."""
    if not _history(value) and isinstance(value, list | dict) and value:
        for item in value if isinstance(value, list) else value.values():
            yield from _references(item)
    else:
        yield value


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
