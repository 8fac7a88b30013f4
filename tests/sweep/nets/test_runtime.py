"""TensorFlow's start: Keras without its import-time matplotlib, and nobody else refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_KERAS_WITHOUT_MATPLOTLIB = """
import sys
import sweep.nets.layers  # TensorFlow and Keras, as a worker starts them
import keras.src.visualization.plot_image_gallery as gallery
print("matplotlib" in sys.modules, gallery.plt is None)
import matplotlib.pyplot  # still there for everyone else, after the import
from sweep.publishing.plots import prediction_png
import numpy as np
y = np.arange(10.0)
png = prediction_png(y, y, title="add", subtitle="test", integer_valued=True)
print(png[:8] == b"\\x89PNG\\r\\n\\x1a\\n")
"""

_ONLY_KERAS_IS_REFUSED = """
from sweep.nets._runtime import keras_import_without_matplotlib
with keras_import_without_matplotlib():
    try:
        exec("import matplotlib", {"__name__": "keras.src.fake"})
    except ModuleNotFoundError:
        print("keras refused")
    import matplotlib.ticker  # another importer meanwhile (another thread, a report)
    print("others served", matplotlib.ticker.__name__)
"""


def _run(code: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", code], env=os.environ.copy(), capture_output=True, text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.slow  # a real process (or several): the slow tier
def test_keras_starts_without_matplotlib_and_plots_still_draw() -> None:
    """`import keras` imported matplotlib.pyplot for an image gallery the sweep never draws
    (~15% of a worker's start)."""
    assert _run(_KERAS_WITHOUT_MATPLOTLIB) == ["False", "True", "True"]


def test_only_keras_own_import_of_matplotlib_is_refused() -> None:
    assert _run(_ONLY_KERAS_IS_REFUSED) == ["keras", "refused", "others", "served",
                                            "matplotlib.ticker"]
