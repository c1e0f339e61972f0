"""``import napari_kmeans`` stays light: the engine never loads napari, Qt or test-only libraries.

Each check runs in a fresh interpreter, since this test session has imported napari already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

GUI = ("napari", "magicgui", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy")
TEST_ONLY = ("sklearn", "cv2", "hypothesis", "pytest")


def loaded_after(code: str) -> set[str]:
    """Top-level packages in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_loads_no_gui():
    loaded = loaded_after("import napari_kmeans")
    assert "napari_kmeans" in loaded and "numpy" in loaded
    assert not loaded & set(GUI), sorted(loaded & set(GUI))
    assert not loaded & set(TEST_ONLY), sorted(loaded & set(TEST_ONLY))


def test_segment_and_model_load_no_gui_nor_dask():
    code = (
        "import numpy as np\n"
        "from napari_kmeans import KMeansModel, segment\n"
        "res = segment(np.arange(30, dtype=np.uint8).reshape(5, 6), 3)\n"
        "res2 = segment(np.random.default_rng(0).random((8, 8, 3)), 3, color_space='lab')\n"
        "KMeansModel.from_json(res.model.to_json()).predict(np.arange(5, dtype=np.uint8))\n"
    )
    loaded = loaded_after(code)
    assert not loaded & {*GUI, *TEST_ONLY, "dask", "distributed", "zarr"}, sorted(loaded)


def test_engine_works_without_napari_installed():
    """Block the GUI packages from being imported at all: the engine must not need them."""
    block = "".join(f"sys.modules[{name!r}] = None\n" for name in GUI)
    code = (
        f"import sys\n{block}"
        "import numpy as np\n"
        "import napari_kmeans\n"
        "res = napari_kmeans.segment(np.array([[0, 9], [200, 210]], np.uint8), 2)\n"
        "assert res.labels.tolist() == [[1, 1], [2, 2]], res.labels\n"
    )
    loaded_after(code)  # fails with the subprocess's traceback


@pytest.mark.parametrize(
    "name", ["KMeansModel", "Segmentation", "segment", "segment_frames", "__version__"]
)
def test_public_api(name):
    import napari_kmeans

    assert name in napari_kmeans.__all__ and hasattr(napari_kmeans, name)


def test_version_is_a_string():
    import napari_kmeans

    parts = napari_kmeans.__version__.split(".")
    assert len(parts) >= 2 and all(p.isdigit() for p in parts[:2])
