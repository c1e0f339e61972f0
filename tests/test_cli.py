"""The ``napari-kmeans segment`` command: outputs, batch modes, refusal to overwrite, exit codes."""

from __future__ import annotations

import errno
import hashlib
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
    tifffile.imwrite(tmp_path / "stack.tif", gray, photometric="minisblack")
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
        ("out cannot be created", 3, "cannot create the output folder"),
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
    if case == "out cannot be created":
        out = tmp_path / "stack.tif" / "results"  # its parent is a file
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
        tifffile.imwrite(
            tmp_path / "sub" / "stack.tif", images["stack.tif"], photometric="minisblack"
        )
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


def test_missing_out_is_created_with_its_parents(images, tmp_path):
    out = tmp_path / "new" / "deeper" / "results"
    assert main(["segment", str(tmp_path / "stack.tif"), "-k", "2", "--out", str(out), "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "stack_labels.tif", "stack_model.json", "stack_recolored.tif"
    ]  # fmt: skip


def test_missing_out_is_not_created_when_a_check_fails(tmp_path):
    out = tmp_path / "results"
    assert main(["segment", str(tmp_path / "nope.tif"), "--out", str(out), "-q"]) == 4
    assert not out.exists()


def test_every_help_example_works_as_written(tmp_path):
    """Each line under 'examples:' of ``segment --help``, run by a shell on small files."""
    help_text = run("segment", "--help", cwd=tmp_path).stdout
    examples = [
        line.strip() for line in help_text.split("examples:\n", 1)[1].splitlines() if line.strip()
    ]
    assert len(examples) >= 3 and all(e.startswith("napari-kmeans segment ") for e in examples)
    rng = np.random.default_rng(1)
    tifffile.imwrite(
        tmp_path / "cells.tif",
        rng.integers(0, 4000, (3, 20, 30), dtype=np.uint16),
        photometric="minisblack",
    )
    for folder, n in (("plates", 3), ("new", 2)):
        (tmp_path / folder).mkdir()
        for i in range(1, n + 1):
            rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
            iio.imwrite(tmp_path / folder / f"plate_{i:02d}.png", rgb)
    bindir = Path(sys.executable).parent
    if not (bindir / "napari-kmeans").exists():  # run the module the script would run
        (tmp_path / "bin").mkdir()
        shim = tmp_path / "bin" / "napari-kmeans"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m napari_kmeans.cli "$@"\n')
        shim.chmod(0o755)
        bindir = shim.parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    for example in examples:
        done = subprocess.run(["bash", "-c", f"{example} --quiet"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, f"{example}: {done.stderr}"
    results = tmp_path / "results"
    for stem in ("cells", "plate_01", "plate_02", "plate_03"):
        assert (results / f"{stem}_model.json").is_file()
    assert read_model(results, "plate_02").to_dict() == read_model(results, "plate_01").to_dict()
    assert sorted(p.name for p in (results / "new").glob("*_labels.tif")) == [
        "plate_01_labels.tif", "plate_02_labels.tif"
    ]  # fmt: skip


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


# -- issue 8: no data loss, no silent wrong result, no raw crash --------------------------------


def snapshot(root: Path) -> dict:
    """Every entry under ``root``: files by their bytes' hash, folders and links by kind."""
    entries = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            entries[rel] = f"link -> {os.readlink(p)}"
        elif p.is_dir():
            entries[rel] = "dir"
        else:
            entries[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return entries


def hidden(out: Path) -> list[str]:
    """Temporary entries the command may have left in ``out``."""
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize(
    "case",
    ["ground truth", "zarr input", "out inside zarr", "out links to inputs", "out links into zarr",
     "model file"],
)  # fmt: skip
def test_outputs_never_replace_or_enter_an_input(images, tmp_path, capsys, case):
    """Item 1: an output that is, contains or lies inside an input is refused, even with
    --overwrite, before anything is written."""
    tifffile.imwrite(tmp_path / "stack_labels.tif", np.ones((3, 30, 40), np.uint8))  # ground truth
    inputs, out, extra = (
        [tmp_path / "stack.tif", tmp_path / "stack_labels.tif"],
        tmp_path,
        ["-k", "2"],
    )
    if case == "zarr input":  # the user's own zarr carries the name of another input's output
        copy = zarr.create_array(tmp_path / "volume_labels.zarr", shape=(4, 30, 20), dtype="u1")
        copy[:] = 1
        inputs = [tmp_path / "volume.zarr", tmp_path / "volume_labels.zarr"]
    elif case == "out inside zarr":
        inputs, out = [tmp_path / "volume.zarr"], tmp_path / "volume.zarr"
    elif case == "out links to inputs":
        (tmp_path / "link").symlink_to(tmp_path)
        out = tmp_path / "link"
    elif case == "out links into zarr":
        (tmp_path / "zlink").symlink_to(tmp_path / "volume.zarr")
        inputs, out = [tmp_path / "volume.zarr"], tmp_path / "zlink"
    elif case == "model file":
        segment(images["stack.tif"], 2).model.save(tmp_path / "out" / "stack_model.json")
        inputs, out = [tmp_path / "stack.tif"], tmp_path / "out"
        extra = ["--model", str(out / "stack_model.json")]
    before = snapshot(tmp_path)
    argv = ["segment", *map(str, inputs), "--out", str(out), "--overwrite", "-q", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "input" in err and "nothing was written" in err and "--out" in err
    assert len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["plain folder", "zarr it did not write", "folder for a file"])
def test_overwrite_never_removes_a_folder_it_did_not_write(images, tmp_path, capsys, case):
    """Item 1: --overwrite replaces only outputs the command wrote; other folders are refused."""
    out = tmp_path / "out"
    name, source = "volume_labels.zarr", "volume.zarr"
    if case == "plain folder":
        (out / name).mkdir()
        (out / name / "notes.txt").write_text("my notes")
    elif case == "zarr it did not write":
        zarr.create_array(out / name, shape=(4, 30, 20), dtype="u1")[:] = 7
    else:
        name, source = "stack_labels.tif", "stack.tif"
        (out / name).mkdir()
        (out / name / "notes.txt").write_text("my notes")
    before = snapshot(tmp_path)
    argv = ["segment", str(tmp_path / source), "-k", "2", "--out", str(out), "--overwrite", "-q"]
    assert main(argv) == 5
    err = capsys.readouterr().err
    assert name in err and "did not write" in err and "nothing was written" in err
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_the_zarr_outputs_it_wrote(images, tmp_path):
    out = tmp_path / "out"
    argv = ["segment", str(tmp_path / "volume.zarr"), "--out", str(out), "-q"]
    assert main([*argv, "-k", "3"]) == 0
    assert main([*argv, "-k", "2", "--overwrite"]) == 0
    np.testing.assert_array_equal(
        read_labels(out, "volume"), segment(images["volume.zarr"], 2).labels
    )
    np.testing.assert_array_equal(
        read_recolored(out, "volume"), segment(images["volume.zarr"], 2).recolored
    )
    assert hidden(out) == []


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_single_channel_model_on_an_rgb_image_exits_6(images, tmp_path, capsys, suffix):
    """Item 5: a grayscale model is not applied to an RGB image as a 3-D gray volume."""
    rgb = images["colour.png"]
    path = tmp_path / f"rgb{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, rgb, photometric="rgb")
    else:
        iio.imwrite(path, rgb)
    segment(rgb[..., 0], 2).model.save(tmp_path / "gray_model.json")
    argv = ["segment", str(path), "--model", str(tmp_path / "gray_model.json"),
            "--out", str(tmp_path / "out"), "-q"]  # fmt: skip
    assert main(argv) == 6
    err = capsys.readouterr().err
    assert "RGB" in err and "single-channel" in err
    assert list((tmp_path / "out").iterdir()) == []


def test_gray_alpha_png_clusters_the_gray_plane_and_masks_transparent_pixels(tmp_path):
    """Item 10: grey + alpha is clustered like RGBA: alpha 0 masked, alpha kept in the output."""
    rng = np.random.default_rng(4)
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    alpha = np.full((20, 30), 255, np.uint8)
    alpha[:5] = 0
    alpha[5:8] = 100
    iio.imwrite(tmp_path / "ga.png", np.stack([gray, alpha], axis=-1))
    out = tmp_path / "out"
    out.mkdir()
    assert main(["segment", str(tmp_path / "ga.png"), "-k", "3", "--out", str(out), "-q"]) == 0
    ref = segment(gray, 3, mask=alpha > 0)
    labels = read_labels(out, "ga")
    assert labels.shape == gray.shape
    np.testing.assert_array_equal(labels, ref.labels)
    assert (labels[:5] == 0).all() and (labels[5:] > 0).all()
    recolored = read_recolored(out, "ga")
    assert recolored.shape == (20, 30, 2)
    np.testing.assert_array_equal(recolored[..., 0], ref.recolored)
    np.testing.assert_array_equal(recolored[..., 1], alpha)
    model = read_model(out, "ga")
    assert model.spec.channel_axis is None
    again = tmp_path / "again"
    again.mkdir()
    argv = ["segment", str(tmp_path / "ga.png"), "--model", str(out / "ga_model.json"),
            "--out", str(again), "-q"]  # fmt: skip
    assert main(argv) == 0
    np.testing.assert_array_equal(read_labels(again, "ga"), ref.labels)


def _fail_on_call(monkeypatch, module, name, n, exc):
    """Make ``module.name`` raise ``exc`` on its n-th call (1-based), work otherwise."""
    real, calls = getattr(module, name), []

    def fake(*args, **kwargs):
        calls.append(args)
        if len(calls) == n:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, fake)
    return calls


@pytest.mark.parametrize(
    ("failure", "code"), [(KeyboardInterrupt(), 130), (OSError(errno.EIO, "I/O error"), 7)]
)
def test_an_interrupted_overwrite_keeps_the_old_outputs_together(
    images, tmp_path, monkeypatch, failure, code
):
    """Item 11: outputs of one input appear together or not at all; temporaries are removed."""
    out = tmp_path / "out"
    argv = ["segment", str(tmp_path / "stack.tif"), "--out", str(out), "-q"]
    assert main([*argv, "-k", "3"]) == 0
    before = snapshot(out)
    _fail_on_call(monkeypatch, tifffile, "imwrite", 2, failure)  # the recoloured image
    assert main([*argv, "-k", "2", "--overwrite"]) == code
    assert snapshot(out) == before
    assert hidden(out) == []


def test_a_failure_while_moving_outputs_into_place_restores_the_old_ones(
    images, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    argv = ["segment", str(tmp_path / "stack.tif"), "--out", str(out), "-q"]
    assert main([*argv, "-k", "3"]) == 0
    before = snapshot(out)
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append((src, dst))
        if Path(dst) == out / "stack_recolored.tif" and len(calls) < 5:  # the new one, once
            raise OSError(errno.EIO, "I/O error")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert main([*argv, "-k", "2", "--overwrite"]) == 7
    assert "I/O error" in capsys.readouterr().err
    assert snapshot(out) == before
    assert hidden(out) == []


SIGNAL_SCRIPT = """\
import os, signal, sys
import tifffile
real = tifffile.imwrite
def imwrite(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
tifffile.imwrite = imwrite
from napari_kmeans.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(("sig", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_during_writing_cleans_up(images, tmp_path, sig, code):
    """Item 11: SIGTERM cleans up like SIGINT; no .partial or temporary files, no half outputs."""
    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_SCRIPT, sig, "segment", "stack.tif", "colour.png", "-k", "2",
         "--out", "out", "-q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == code, done.stderr
    assert "interrupted" in done.stderr and "Traceback" not in done.stderr
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("case", ["deep JSON", "huge", "/dev/zero", "folder", "not UTF-8"])
def test_bad_model_files_exit_4_with_one_line(images, tmp_path, capsys, case):
    """Item 14: --model is read with a bounded reader; never exit 1, never a hang."""
    path = tmp_path / "m.json"
    if case == "deep JSON":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif case == "huge":
        with open(path, "wb") as fh:
            fh.truncate(60 * 1024 * 1024)  # sparse: costs no disk
    elif case == "/dev/zero":
        path = Path("/dev/zero")
    elif case == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"\xff\xfe{}")
    argv = ["segment", str(tmp_path / "stack.tif"), "--model", str(path),
            "--out", str(tmp_path / "out"), "-q"]  # fmt: skip
    assert main(argv) == 4
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cannot use --model" in err
    assert list((tmp_path / "out").iterdir()) == []


def test_a_fifo_as_model_file_exits_4_without_hanging(images, tmp_path):
    os.mkfifo(tmp_path / "m.json")
    done = run("segment", "stack.tif", "--model", "m.json", "--out", "out", "-q", cwd=tmp_path)
    assert done.returncode == 4
    assert "cannot use --model" in done.stderr and "Traceback" not in done.stderr


def test_a_full_disk_is_one_line_and_the_batch_goes_on(images, tmp_path, monkeypatch, capsys):
    """Item 15: OSError while writing: exit 7, one line, other inputs still written."""
    real = tifffile.imwrite

    def imwrite(path, *args, **kwargs):
        if Path(path).name.startswith("stack"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", imwrite)
    out = tmp_path / "out"
    argv = ["segment", str(tmp_path / "stack.tif"), str(tmp_path / "colour.png"), "-k", "2",
            "--out", str(out), "-q"]  # fmt: skip
    assert main(argv) == 7
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "stack.tif" in lines[0] and "No space left on device" in lines[0]
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [
        "colour_labels.tif", "colour_model.json", "colour_recolored.png"
    ]  # fmt: skip


def test_one_dimensional_images_are_written(tmp_path):
    """Item 15: 1-D images give 1-D outputs (tifffile cannot write them as they are)."""
    line = np.random.default_rng(5).integers(0, 1000, 50, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "line.tif", line)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["segment", str(tmp_path / "line.tif"), "-k", "3", "--out", str(out), "-q"]) == 0
    ref = segment(line, 3)
    np.testing.assert_array_equal(read_labels(out, "line"), ref.labels)
    np.testing.assert_array_equal(read_recolored(out, "line"), ref.recolored)


def test_works_without_tqdm_and_dask(images, tmp_path, monkeypatch, capsys):
    """Item 24: tqdm is optional: plain progress lines without it; TIFF and PNG need no dask."""
    for name in ("tqdm", "dask", "dask.array", "zarr"):
        monkeypatch.setitem(sys.modules, name, None)
    argv = ["segment", str(tmp_path / "stack.tif"), str(tmp_path / "colour.png"), "-k", "2",
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "stack.tif" in err and "segmented 2 of 2 image(s)" in err
    assert len(list((tmp_path / "out").iterdir())) == 6


@pytest.mark.parametrize(
    ("module", "source", "extra"),
    [("tifffile", "stack.tif", "cli"), ("imageio", "colour.png", "cli"),
     ("zarr", "volume.zarr", "dask")],
)  # fmt: skip
def test_a_missing_reader_names_the_extra_to_install(
    images, tmp_path, monkeypatch, capsys, module, source, extra
):
    """Item 24: a missing optional module is exit 8 with the pip command, not a traceback."""
    monkeypatch.setitem(sys.modules, module, None)
    argv = ["segment", str(tmp_path / source), "-k", "2", "--out", str(tmp_path / "out"), "-q"]
    assert main(argv) == 8
    err = capsys.readouterr().err
    assert module in err and f'pip install "napari-kmeans[{extra}]"' in err
    assert list((tmp_path / "out").iterdir()) == []


def test_the_zarr_group_message_suggests_a_path_that_works(images, tmp_path, capsys):
    (tmp_path / "out").mkdir(exist_ok=True)
    argv = ["segment", str(tmp_path / _write_bad_zarr_group(tmp_path)), "-k", "1", "-q"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 4
    err = capsys.readouterr().err
    suggested = re.search(r"e\.g\. (\S+?)[;.]?$", err.strip()).group(1)
    assert suggested == str(tmp_path / "group.zarr" / "x")
    assert main(["segment", suggested, "-k", "1", "-q", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "group_x_labels.zarr").is_dir()


@pytest.mark.parametrize("multiscales", ["junk", [{"datasets": []}], [{"datasets": [{}]}], [3]])
def test_malformed_multiscale_metadata_exits_4(tmp_path, capsys, multiscales):
    group = zarr.open_group(tmp_path / "scan.zarr", mode="w")
    group.create_array("0", shape=(4, 4), dtype="u1")
    group.attrs["multiscales"] = multiscales
    (tmp_path / "out").mkdir()
    argv = ["segment", str(tmp_path / "scan.zarr"), "-k", "2", "--out", str(tmp_path / "out")]
    assert main([*argv, "-q"]) == 4
    err = capsys.readouterr().err
    assert "malformed multiscale metadata" in err and len(err.strip().splitlines()) == 1


def test_a_zero_byte_png_gives_a_clean_message(images, tmp_path, capsys):
    (tmp_path / "empty.png").write_bytes(b"")
    argv = ["segment", str(tmp_path / "empty.png"), "-k", "2", "--out", str(tmp_path / "out")]
    assert main([*argv, "-q"]) == 4
    err = capsys.readouterr().err
    assert "empty.png" in err and "empty (0 bytes)" in err and "`" not in err
    assert len(err.strip().splitlines()) == 1


def test_an_unexpected_error_is_one_line_with_the_bug_tracker(images, tmp_path, monkeypatch,
                                                             capsys):  # fmt: skip
    from napari_kmeans import cli

    real = cli.segment_image

    def segment_image(image, *args, **kwargs):
        if image.dtype == np.uint16:
            raise RuntimeError("boom")
        return real(image, *args, **kwargs)

    monkeypatch.setattr(cli, "segment_image", segment_image)
    out = tmp_path / "out"
    argv = ["segment", str(tmp_path / "stack.tif"), str(tmp_path / "colour.png"), "-k", "2",
            "--out", str(out), "-q"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "stack.tif" in err and "unexpected error RuntimeError: boom" in err
    assert cli.BUG_TRACKER in err
    assert len(list(out.iterdir())) == 3  # colour.png is still done


def test_the_bug_tracker_is_the_one_in_pyproject():
    from napari_kmeans import cli

    pyproject = (DOCS.parent / "pyproject.toml").read_text()
    assert f'"Bug Tracker" = "{cli.BUG_TRACKER}"' in pyproject


def test_every_exit_code_is_documented_in_help_and_docs(tmp_path):
    from napari_kmeans import cli

    codes = sorted({v for k, v in vars(cli).items() if k.startswith("EXIT_")})
    assert {7, 8, 130, 143} <= set(codes)
    done = run("segment", "--help", cwd=tmp_path)
    table = (DOCS / "cli.md").read_text()
    for code in codes:
        assert re.search(rf"^  {code}  \w", done.stdout, re.M), f"{code} not in --help"
        assert re.search(rf"^\| {code} \| \w", table, re.M), f"{code} not in docs/cli.md"


def test_feature_and_clean_up_options(tmp_path):
    """Issue 12: --smoothing, --features, --spatial-weight, --majority, --min-size; the model
    file carries the recipe and reproduces the labels."""
    import tifffile

    from napari_kmeans import KMeansModel, segment

    rng = np.random.default_rng(0)
    image = (np.indices((40, 48))[1] // 16 * 50 + rng.normal(0, 20, (40, 48))).astype(np.float32)
    tifffile.imwrite(tmp_path / "noisy.tif", image)
    out = tmp_path / "out"
    code = main(["segment", str(tmp_path / "noisy.tif"), "-k", "3", "--out", str(out),
                 "--smoothing", "1.5,2", "--majority", "1", "--min-size", "10", "-q"])  # fmt: skip
    assert code == 0
    labels = tifffile.imread(out / "noisy_labels.tif")
    want = segment(image, 3, smoothing=(1.5, 2.0), majority=1, min_size=10)
    np.testing.assert_array_equal(labels, want.labels)
    model = KMeansModel.load(out / "noisy_model.json")
    assert model.recipe.smoothing == (1.5, 2.0) and model.recipe.min_size == 10
    np.testing.assert_array_equal(model.predict(image), labels)
    with pytest.raises(SystemExit) as stop:  # an unknown filter is a usage error
        main(["segment", str(tmp_path / "noisy.tif"), "-k", "3", "--out", str(out),
              "--features", "gaussian:1,sobel:2", "--overwrite", "-q"])  # fmt: skip
    assert stop.value.code == 2
