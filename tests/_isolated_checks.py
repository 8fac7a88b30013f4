"""The scripts that load exported files in the isolated venvs (`_isolated.run_isolated`).

Each reads ``NAME.x.npy`` (inputs) next to each export in a folder and writes ``NAME.FORMAT.npy``
(answers, one batch call) there, for the test to compare with the registry model's answers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _isolated import run_isolated

SAVEDMODEL_SCRIPT = """
import sys
sys.modules["keras"] = None      # the SavedModel must need no Keras at load or call time
sys.modules["tf_keras"] = None
from pathlib import Path
import numpy as np
import tensorflow as tf
folder = Path(sys.argv[1])
for name in sys.argv[2:]:
    base = folder / name
    (version,) = [p for p in base.iterdir() if p.name.isdigit()]  # TF Serving's layout
    function = tf.saved_model.load(str(version)).signatures["serving_default"]
    spec = function.structured_input_signature[1]["operands"]
    assert spec.dtype == tf.float64 and spec.shape.as_list()[0] is None, spec
    assert function.structured_outputs["result"].dtype == tf.float64
    x = np.load(folder / f"{name}.x.npy")
    y = function(operands=tf.constant(x))["result"].numpy()
    np.save(folder / f"{name}.savedmodel.npy", y)
print("ok")
"""

ONNX_SCRIPT = """
import importlib.util, sys
for _name in ("tensorflow", "keras", "tf2onnx", "onnx"):
    if importlib.util.find_spec(_name) is not None:
        raise SystemExit(f"{_name} is importable in the onnxruntime venv")
from pathlib import Path
import numpy as np
import onnxruntime as ort
folder = Path(sys.argv[1])
for name in sys.argv[2:]:
    session = ort.InferenceSession(str(folder / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type) == ("operands", "tensor(double)"), (inp.name, inp.type)
    (out,) = session.get_outputs()
    assert (out.name, out.type) == ("result", "tensor(double)"), (out.name, out.type)
    x = np.load(folder / f"{name}.x.npy")
    np.save(folder / f"{name}.onnx.npy", session.run(None, {"operands": x})[0])
print("ok")
"""


def answers_in_isolation(folder: Path, names: list[str], format: str) -> dict[str, np.ndarray]:
    """Run every export of `format` in `folder` in its isolated venv; their answers by name."""
    kind, script = ("tf", SAVEDMODEL_SCRIPT) if format == "savedmodel" else ("ort", ONNX_SCRIPT)
    out = run_isolated(kind, script, str(folder), *names)
    assert out.strip().splitlines()[-1] == "ok"
    return {name: np.load(folder / f"{name}.{format}.npy").reshape(-1) for name in names}
