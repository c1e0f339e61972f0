"""Engine bugs an earlier hostile-input campaign reported and left: each test failed before its fix."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kmeans import KMeansModel, segment

BANDS = np.repeat(np.array([[0, 10, 100, 110, 200, 210]], np.uint8), 4, axis=0)


# -- 1. KMeansModel.save never replaces a file unless asked ------------------------------------


def test_save_refuses_to_replace_an_existing_file(tmp_path):
    path = tmp_path / "m_model.json"
    path.write_text("my notes\n", encoding="utf-8")
    model = segment(BANDS, 3).model
    with pytest.raises(FileExistsError, match=r"m_model\.json.*overwrite=True"):
        model.save(path)
    assert path.read_text(encoding="utf-8") == "my notes\n"  # untouched
    model.save(path, overwrite=True)  # asked: replaced
    assert KMeansModel.load(path).to_dict() == model.to_dict()


def test_save_writes_a_new_file_without_being_asked(tmp_path):
    model = segment(BANDS, 3).model
    model.save(tmp_path / "new.json")
    assert KMeansModel.load(tmp_path / "new.json").colors.ravel().tolist() == [5.0, 105.0, 205.0]
