"""The ``napari-kmeans segment`` command: outputs, batch modes, refusal to overwrite, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

iio = pytest.importorskip("imageio.v3")
tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")
pytest.importorskip("tqdm")

from napari_kmeans import KMeansModel, segment  # noqa: E402
from napari_kmeans.cli import main  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
SCRIPT = Path(sys.executable).with_name("napari-kmeans")


def run(*args, cwd, script=False):
    """Run the command in a subprocess; returns the CompletedProcess."""
    cmd = [str(SCRIPT)] if script else [sys.executable, "-m", "napari_kmeans.cli"]
    return subprocess.run(
        [*cmd, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def images(tmp_path):
    """Small TIFF, PNG, JPEG and zarr inputs in tmp_path, and the arrays they hold."""
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 4000, (3, 30, 40), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", gray)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "colour.png", rgb)
    iio.imwrite(tmp_path / "photo.jpg", rgb)
    vol = rng.integers(0, 60000, (4, 30, 20), dtype=np.uint16)
    z = zarr.create_array(tmp_path / "volume.zarr", shape=vol.shape, chunks=(2, 15, 20), dtype="u2")
    z[:] = vol
    (tmp_path / "out").mkdir()
    return {
        "stack.tif": gray,
        "colour.png": rgb,
        "photo.jpg": iio.imread(tmp_path / "photo.jpg"),  # as decoded (lossy)
        "volume.zarr": vol,
    }


def read_labels(out: Path, stem: str):
    zpath = out / f"{stem}_labels.zarr"
    if zpath.exists():
        return zarr.open_array(zpath, mode="r")[:]
    return tifffile.imread(out / f"{stem}_labels.tif")


def read_recolored(out: Path, stem: str):
    for name, reader in (
        (f"{stem}_recolored.zarr", lambda p: zarr.open_array(p, mode="r")[:]),
        (f"{stem}_recolored.tif", tifffile.imread),
        (f"{stem}_recolored.png", iio.imread),
    ):
        if (out / name).exists():
            return reader(out / name)
    raise AssertionError(f"no recoloured output for {stem}")


def read_model(out: Path, stem: str) -> KMeansModel:
    return KMeansModel.from_json((out / f"{stem}_model.json").read_text())


def test_help_reads_well_and_lists_exit_codes(tmp_path):
    done = run("segment", "--help", cwd=tmp_path)
    assert done.returncode == 0
    for code in range(7):
        assert re.search(rf"^  {code}  \w", done.stdout, re.M), f"exit code {code} not documented"
    for option in ("--out", "-k", "--fit-on", "--model", "--channel-axis", "--color-space",
                   "--seed", "--overwrite", "--rgb"):  # fmt: skip
        assert option in done.stdout
    top = run("--help", cwd=tmp_path)
    assert top.returncode == 0 and "segment" in top.stdout


def test_each_input_gets_the_result_of_segment(images, tmp_path):
    done = run("segment", *images, "-k", "3", "--out", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "segmented 4 of 4 image(s)" in done.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            f"{s}_{kind}"
            for s in ("stack", "colour", "photo")
            for kind in ("labels.tif", "model.json")
        ]
        + ["stack_recolored.tif", "colour_recolored.png", "photo_recolored.png"]
        + ["volume_labels.zarr", "volume_recolored.zarr", "volume_model.json"]
    )
    for name, data in images.items():
        stem = name.split(".")[0]
        ref = segment(data, 3)
        labels = read_labels(out, stem)
        assert labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, ref.labels)
        np.testing.assert_array_equal(read_recolored(out, stem), ref.recolored)
        assert read_model(out, stem).to_dict() == ref.model.to_dict()


def test_installed_script_runs(images, tmp_path):
    if not SCRIPT.exists():
        pytest.skip("the napari-kmeans script is not installed next to this Python")
    assert run("--version", cwd=tmp_path, script=True).returncode == 0
    done = run(
        "segment",
        "colour.png",
        "-k",
        "2",
        "--seed",
        "3",
        "-o",
        "out",
        "-q",
        cwd=tmp_path,
        script=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # --quiet: no progress bar, no summary
    ref = segment(images["colour.png"], 2, seed=3)
    np.testing.assert_array_equal(read_labels(tmp_path / "out", "colour"), ref.labels)


def test_existing_outputs_are_never_overwritten_without_the_flag(images, tmp_path):
    out = tmp_path / "out"
    assert (
        run("segment", "colour.png", "stack.tif", "-k", "3", "--out", out, cwd=tmp_path).returncode
        == 0
    )
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    (tmp_path / "new.png").write_bytes((tmp_path / "colour.png").read_bytes())
    done = run("segment", "new.png", "stack.tif", "-k", "2", "--out", out, cwd=tmp_path)
    assert done.returncode == 5
    assert "already exist" in done.stderr and "--overwrite" in done.stderr
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    assert after == before  # byte-identical, untouched, and new.png's outputs were not written
    done = run("segment", "stack.tif", "-k", "2", "--out", out, "--overwrite", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(read_labels(out, "stack"), segment(images["stack.tif"], 2).labels)
    assert not list(out.glob(".partial-*"))


def test_fit_on_first_applies_the_first_model_to_all(images, tmp_path):
    other = np.random.default_rng(1).integers(0, 4000, (20, 25), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "other.tif", other)
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "stack.tif"), str(tmp_path / "other.tif"),
                 "-k", "4", "--fit-on", "first", "--out", str(out), "-q"]) == 0  # fmt: skip
    model = segment(images["stack.tif"], 4).model
    np.testing.assert_array_equal(read_labels(out, "other"), model.predict(other))
    np.testing.assert_array_equal(read_recolored(out, "other"),
                                  model.recolor(other, model.predict(other)))  # fmt: skip
    assert read_model(out, "other").to_dict() == model.to_dict()
    assert read_model(out, "stack").to_dict() == model.to_dict()


def test_fit_on_all_fits_the_pixels_of_every_input_together(tmp_path):
    rng = np.random.default_rng(2)
    a = rng.integers(0, 80, (20, 30), dtype=np.uint8)
    b = rng.integers(120, 256, (15, 10), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", a)
    tifffile.imwrite(tmp_path / "b.tif", b)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["segment", str(tmp_path / "a.png"), str(tmp_path / "b.tif"), "-k", "3",
                 "--fit-on", "all", "--out", str(out), "-q"]) == 0  # fmt: skip
    ref = segment(np.concatenate([a.ravel(), b.ravel()]), 3)
    np.testing.assert_array_equal(read_labels(out, "a"), ref.labels[: a.size].reshape(a.shape))
    np.testing.assert_array_equal(read_labels(out, "b"), ref.labels[a.size :].reshape(b.shape))
    assert read_model(out, "a").to_dict() == ref.model.to_dict()


def test_fit_on_all_of_one_image_is_segment(images, tmp_path):
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "colour.png"), "-k", "3", "--fit-on", "all",
                 "--out", str(out), "-q"]) == 0  # fmt: skip
    np.testing.assert_array_equal(
        read_labels(out, "colour"), segment(images["colour.png"], 3).labels
    )


def test_a_saved_model_is_applied(images, tmp_path):
    model = segment(images["colour.png"], 3, color_space="lab").model
    path = tmp_path / "m.json"
    path.write_text(model.to_json())
    out = tmp_path / "out"
    argv = ["segment", str(tmp_path / "photo.jpg"), "--model", str(path), "--out", str(out), "-q"]
    assert main(argv) == 0
    photo = images["photo.jpg"]
    np.testing.assert_array_equal(read_labels(out, "photo"), model.predict(photo))
    assert read_model(out, "photo").to_dict() == model.to_dict()


def test_fewer_distinct_values_than_k_is_a_warning(tmp_path, capsys):
    iio.imwrite(tmp_path / "two.png", np.array([[0, 0, 9, 9]], np.uint8))
    (tmp_path / "out").mkdir()
    argv = ["segment", str(tmp_path / "two.png"), "-k", "3", "--out", str(tmp_path / "out"), "-q"]
    assert main(argv) == 0
    assert "warning: " in capsys.readouterr().err
    np.testing.assert_array_equal(read_labels(tmp_path / "out", "two"), [[1, 1, 2, 2]])


def test_zarr_group_with_a_multiscale_image(tmp_path):
    data = np.random.default_rng(3).integers(0, 256, (20, 30), dtype=np.uint8)
    group = zarr.open_group(tmp_path / "scan.zarr", mode="w")
    group.create_array("s0", shape=data.shape, chunks=(10, 10), dtype="u1")[:] = data
    group.create_array("s1", shape=(10, 15), chunks=(10, 10), dtype="u1")
    group.attrs["multiscales"] = [{"datasets": [{"path": "s0"}, {"path": "s1"}]}]
    (tmp_path / "out").mkdir()
    argv = ["segment", str(tmp_path / "scan.zarr"), "-k", "3", "--out", str(tmp_path / "out")]
    assert main([*argv, "-q"]) == 0
    np.testing.assert_array_equal(read_labels(tmp_path / "out", "scan"), segment(data, 3).labels)


def _write_bad_zarr_group(tmp_path):
    zarr.open_group(tmp_path / "group.zarr", mode="w").create_array("x", shape=(2,), dtype="u1")
    return "group.zarr"


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("missing out", 3, "does not exist; create it first"),
        ("out is a file", 3, "is not a folder"),
        ("missing input", 4, "no such file"),
        ("unknown kind", 4, "unknown kind of file"),
        ("corrupt input", 4, "cannot read"),
        ("zarr group without image", 4, "no multiscale image"),
        ("bad model file", 4, "cannot use --model"),
        ("model does not fit", 6, "cannot segment"),
        ("fit-on all mixed", 6, "one dtype and channel layout"),
        ("same outputs", 2, "would write the same outputs"),
    ],
)
def test_exit_codes(images, tmp_path, capsys, case, code, message):
    out = tmp_path / "out"
    inputs = [tmp_path / "stack.tif"]
    extra = ["-k", "2"]
    if case == "missing out":
        out = tmp_path / "nowhere"
    elif case == "out is a file":
        out = tmp_path / "stack.tif"
    elif case == "missing input":
        inputs.append(tmp_path / "nope.tif")
    elif case == "unknown kind":
        (tmp_path / "notes.txt").write_text("x")
        inputs.append(tmp_path / "notes.txt")
    elif case == "corrupt input":
        (tmp_path / "broken.png").write_bytes(b"not a png")
        inputs.append(tmp_path / "broken.png")
    elif case == "zarr group without image":
        inputs.append(tmp_path / _write_bad_zarr_group(tmp_path))
    elif case == "bad model file":
        (tmp_path / "m.json").write_text('{"format": "something else"}')
        extra = ["--model", str(tmp_path / "m.json")]
    elif case == "model does not fit":
        (tmp_path / "m.json").write_text(segment(images["colour.png"], 2).model.to_json())
        extra = ["--model", str(tmp_path / "m.json")]
    elif case == "fit-on all mixed":
        inputs.append(tmp_path / "colour.png")
        extra += ["--fit-on", "all"]
    elif case == "same outputs":
        (tmp_path / "sub").mkdir()
        tifffile.imwrite(tmp_path / "sub" / "stack.tif", images["stack.tif"])
        inputs.append(tmp_path / "sub" / "stack.tif")
    assert main(["segment", *map(str, inputs), "--out", str(out), "-q", *extra]) == code
    assert message in capsys.readouterr().err
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    if case in ("corrupt input", "zarr group without image"):  # the readable input is still done
        assert written == ["stack_labels.tif", "stack_model.json", "stack_recolored.tif"]
    else:
        assert written == []


@pytest.mark.parametrize(
    "argv",
    [
        ["-k", "0"],
        ["--seed", "-1"],
        ["--model", "m.json", "-k", "3"],
        ["--model", "m.json", "--fit-on", "all"],
        ["--fit-on", "some"],
        ["--color-space", "hsv"],
        ["-k", "three"],
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(["segment", "a.png", "--out", str(tmp_path), *argv])
    assert exc.value.code == 2
    assert "usage: napari-kmeans segment" in capsys.readouterr().err


def test_no_input_exits_2(tmp_path):
    done = run("segment", "--out", tmp_path, cwd=tmp_path)
    assert done.returncode == 2
    assert "INPUT" in done.stderr


def _console_blocks(text):
    """``(command, expected output)`` pairs of the ```console blocks of a markdown page."""
    pairs = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, output = chunk.partition("\n")
            pairs.append((command, output))
    return pairs


def test_cli_doc_batch_example_runs_as_written(tmp_path, monkeypatch):
    """docs/cli.md: the first python block, then every console command, then the other blocks."""
    text = (DOCS / "cli.md").read_text()
    first, *after = re.findall(r"```python\n(.*?)```", text, re.S)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(first, "docs/cli.md", "exec"), namespace)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    pairs = _console_blocks(text)
    assert len(pairs) >= 6
    for command, expected in pairs:
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.stdout + done.stderr == expected, command
    for block in after:
        exec(compile(block, "docs/cli.md", "exec"), namespace)
    model = json.loads((tmp_path / "results" / "coffee_model.json").read_text())
    assert model["n_clusters"] == 4
