"""The dask engine (napari_kmeans.lazy) against the in-memory engine, on one machine and a cluster."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from napari_kmeans import blocks, lazy, segment  # noqa: E402
from napari_kmeans.lazy import predict_lazy, recolor_lazy, segment_lazy  # noqa: E402
from napari_kmeans.sampling import SAMPLE_SIZE  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _heavy_float(rng, shape):
    """Two-channel float data with a frequent value, NaNs and more pixels than the sample."""
    x = rng.normal(size=shape)
    x[: shape[0] // 3] = 0.25
    x[shape[0] // 2, :7] = np.nan
    return x


def _frequent_2ch(rng, side):
    """16-bit two-channel data: a background of ~1600 frequent values (the sample's second pass
    counts them through its table in memory, by sorting in the smaller dask blocks)."""
    image = rng.integers(300, 340, (side, side, 2)).astype(np.uint16)
    image[: side // 5] = rng.integers(1000, 30000, (side // 5, side, 2))
    return image


def _cases():
    rng = np.random.default_rng(7)
    side = int(np.sqrt(SAMPLE_SIZE)) + 40  # more pixels than the sample: the sampled path
    rgba = rng.integers(0, 256, (60, 70, 4), dtype=np.uint8)
    rgba[:10, :, 3] = 0
    half = rng.normal(size=(40, 50)).astype(np.float16)
    half[:3] = -0.0
    half[3, :4] = np.nan
    return {
        "float16 gray, -0 and NaN": (half, (15, 20), {}),
        "uint8 gray": (rng.integers(0, 256, (90, 70), dtype=np.uint8), (40, 30), {}),
        "uint16 gray": (rng.integers(0, 5000, (80, 90), dtype=np.uint16), (33, 50), {}),
        "int16 gray": (rng.integers(-900, 900, (50, 60), dtype=np.int16), (20, 25), {}),
        "uint8 rgb": (rng.integers(0, 256, (60, 70, 3), dtype=np.uint8), (25, 30, 3), {}),
        "uint8 rgba": (rgba, (25, 30, 2), {}),
        "uint8 lab": (
            rng.integers(0, 256, (50, 40, 3), dtype=np.uint8),
            (20, 20, 3),
            {"color_space": "lab"},
        ),
        "uint32 gray": (rng.integers(0, 1 << 30, (60, 50), dtype=np.uint32), (25, 25), {}),
        "bool": (rng.random((40, 30)) > 0.5, (15, 20), {"n_clusters": 2}),
        "uint16 3ch sampled": (
            rng.integers(0, 4000, (side, side, 3), dtype=np.uint16),
            (200, 150, 3),
            {"channel_axis": -1, "rgb": False},
        ),
        "float32 gray": (rng.normal(size=(70, 60)).astype(np.float32), (30, 30), {}),
        "float 2ch heavy": (
            _heavy_float(rng, (side, side, 2)),
            (150, 200, 1),
            {"channel_axis": -1},
        ),
        "uint16 2ch frequent": (_frequent_2ch(rng, side), (200, 150, 2), {"channel_axis": -1}),
        "uint16 channels first": (
            rng.integers(0, 3000, (2, 40, 50), dtype=np.uint16),
            (1, 20, 20),
            {"channel_axis": 0},
        ),
    }


CASES = _cases()


def assert_same(lazy_result, ref):
    labels, recolored = dask.compute(lazy_result.labels, lazy_result.recolored)
    np.testing.assert_array_equal(labels, ref.labels)
    assert labels.dtype == ref.labels.dtype
    np.testing.assert_array_equal(recolored, ref.recolored)
    assert recolored.dtype == ref.recolored.dtype
    np.testing.assert_array_equal(lazy_result.centers, ref.centers)
    np.testing.assert_array_equal(lazy_result.counts, ref.counts)
    assert lazy_result.inertia == pytest.approx(ref.inertia, rel=1e-9)
    assert lazy_result.exact == ref.exact
    assert lazy_result.n_iter == ref.n_iter
    assert lazy_result.model.to_dict() == ref.model.to_dict()


@pytest.mark.parametrize("name", list(CASES))
def test_segment_lazy_equals_in_memory(name):
    image, chunks, kwargs = CASES[name]
    kwargs = {"n_clusters": 3, **kwargs}
    before = image.copy()
    result = segment_lazy(da.from_array(image, chunks=chunks), **kwargs)
    assert lazy.is_dask(result.labels) and lazy.is_dask(result.recolored)
    assert_same(result, segment(image, **kwargs))
    np.testing.assert_array_equal(image, before)


def test_labels_are_chunked_like_the_image():
    image = CASES["uint8 rgb"][0]
    result = segment_lazy(da.from_array(image, chunks=(25, 30, 3)), 3)
    assert result.labels.chunks == ((25, 25, 10), (30, 30, 10))
    assert result.recolored.chunks == ((25, 25, 10), (30, 30, 10), (3,))


@pytest.mark.parametrize(
    "name", ["uint16 3ch sampled", "float 2ch heavy", "uint16 2ch frequent", "uint8 rgb"]
)
def test_result_does_not_depend_on_chunking(name):
    image, _, kwargs = CASES[name]
    a = segment_lazy(da.from_array(image, chunks=(97, 61, -1)), 4, **kwargs)
    b = segment_lazy(da.from_array(image, chunks=(400, 23, -1)), 4, **kwargs)
    np.testing.assert_array_equal(a.labels.compute(), b.labels.compute())
    assert a.model.to_dict() == b.model.to_dict()
    assert a.inertia == pytest.approx(b.inertia, rel=1e-12)


def test_values_repeated_near_the_exact_count_threshold_same_in_memory_and_dask():
    """Values repeated on either side of 4 / p and 16 / p copies (the exact-count threshold
    ``heavy_min`` was 4 / p, is 16 / p): the sample, so the result, is the same in memory and
    on dask for any chunking."""
    from napari_kmeans.sampling import heavy_min

    rng = np.random.default_rng(3)
    side = 400
    pixels = rng.random((side * side, 2)).astype(np.float32)
    p = SAMPLE_SIZE / pixels.shape[0]
    start = 0
    for copies in (
        int(4 / p) - 1,
        int(4 / p) + 2,
        heavy_min(p) - 1,
        heavy_min(p),
        3 * heavy_min(p),
    ):
        values = rng.random((400, 2)).astype(np.float32)
        pixels[start : start + 400 * copies] = np.repeat(values, copies, axis=0)
        start += 400 * copies
    rng.shuffle(pixels)
    image = pixels.reshape(side, side, 2)
    ref = segment(image, 4, channel_axis=-1)
    for chunks in ((97, 61, -1), (400, 13, -1)):
        assert_same(segment_lazy(da.from_array(image, chunks=chunks), 4, channel_axis=-1), ref)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    rows=st.integers(1, 30),
    cols=st.integers(1, 30),
    chunk_r=st.integers(1, 30),
    chunk_c=st.integers(1, 30),
    k=st.integers(1, 4),
)
def test_integer_data_equal_in_memory_for_any_chunking(seed, rows, cols, chunk_r, chunk_c, k):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 40, (rows, cols), dtype=np.uint16)
    with pytest.warns(UserWarning) if np.unique(image).size < k else _nothing():
        ref = segment(image, k)
    with pytest.warns(UserWarning) if np.unique(image).size < k else _nothing():
        result = segment_lazy(da.from_array(image, chunks=(chunk_r, chunk_c)), k)
    assert_same(result, ref)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_masks_numpy_and_dask_and_fully_masked_blocks():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    mask = rng.random((60, 80)) > 0.4
    mask[:30, :40] = False  # a whole block masked
    ref = segment(image, 3, mask=mask)
    dimage = da.from_array(image, chunks=(30, 40, 3))
    assert_same(segment_lazy(dimage, 3, mask=mask), ref)
    assert_same(segment_lazy(dimage, 3, mask=da.from_array(mask, chunks=(7, 9))), ref)
    assert (ref.labels[:30, :40] == 0).all()


def test_predict_and_recolor_lazy_equal_the_model():
    rng = np.random.default_rng(4)
    model = segment(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), 4).model
    other = rng.integers(0, 256, (70, 30, 4), dtype=np.uint8)
    other[:5, :, 3] = 0
    mask = rng.random((70, 30)) > 0.2
    dother = da.from_array(other, chunks=(20, 20, 4))
    labels = predict_lazy(model, dother, mask=mask)
    assert lazy.is_dask(labels) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels.compute(), model.predict(other, mask=mask))
    recolored = recolor_lazy(model, dother, labels)
    np.testing.assert_array_equal(
        recolored.compute(), model.recolor(other, model.predict(other, mask=mask))
    )


def test_predict_lazy_gives_zero_for_blocks_without_valid_pixels():
    model = segment(np.array([0.0, 1.0, 10.0, 11.0]), 2).model
    image = np.array([[np.nan, np.nan, 0.5, 10.5]])
    labels = predict_lazy(model, da.from_array(image, chunks=(1, 2))).compute()
    np.testing.assert_array_equal(labels, [[0, 0, 1, 2]])


def test_float_gray_with_many_values_falls_back_to_a_deterministic_sample():
    rng = np.random.default_rng(5)
    image = da.from_array(rng.normal(size=(500, 400)).astype(np.float32), chunks=(100, 150))
    spec = lazy.ft.make_spec(image)
    found = blocks.support_of_blocks(blocks.lay_out_blocks(image, spec), seed=2, distinct_cap=1000)
    assert not found.covers_all
    assert found.n_valid == 200_000
    assert found.weights.sum() == pytest.approx(200_000, rel=0.02)
    assert found.values.shape[0] == pytest.approx(SAMPLE_SIZE, rel=0.05)
    rechunked = image.rechunk((77, 400))
    again = blocks.support_of_blocks(
        blocks.lay_out_blocks(rechunked, spec), seed=2, distinct_cap=1000
    )
    np.testing.assert_array_equal(again.values, found.values)
    np.testing.assert_array_equal(again.weights, found.weights)
    exact = blocks.support_of_blocks(blocks.lay_out_blocks(image, spec), seed=2)
    assert exact.covers_all and exact.weights.sum() == 200_000


def test_compressible_data_are_read_once_and_labels_stay_lazy():
    reads = []
    lock = threading.Lock()
    rng = np.random.default_rng(6)
    data = rng.integers(0, 4000, (4, 30, 40), dtype=np.uint16)

    def load(block, block_info=None):
        with lock:
            reads.append(block_info[None]["chunk-location"])
        return block

    image = da.from_array(data, chunks=(1, 30, 40)).map_blocks(load, dtype=data.dtype)
    result = segment_lazy(image, 3)
    assert sorted(reads) == [(i, 0, 0) for i in range(4)]  # the fit: one pass, one read a block
    np.testing.assert_array_equal(result.labels.compute(), segment(data, 3).labels)
    assert len(reads) == 8


def test_zarr_round_trip(tmp_path):
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(8)
    data = rng.integers(0, 60000, (6, 50, 40), dtype=np.uint16)
    z = zarr.create_array(tmp_path / "in.zarr", shape=data.shape, chunks=(2, 25, 40), dtype="u2")
    z[:] = data
    result = segment_lazy(da.from_zarr(tmp_path / "in.zarr"), 4)
    result.labels.to_zarr(tmp_path / "labels.zarr")
    stored = zarr.open_array(tmp_path / "labels.zarr", mode="r")[:]
    np.testing.assert_array_equal(stored, segment(data, 4).labels)


def test_errors_are_clear():
    image = da.from_array(np.arange(12, dtype=np.uint8).reshape(3, 4), chunks=2)
    with pytest.raises(ValueError, match="mask has shape"):
        segment_lazy(image, 2, mask=np.ones((4, 3), bool))
    with pytest.raises(TypeError, match="mask must be boolean or integer"):
        segment_lazy(image, 2, mask=np.ones((3, 4), float))
    with pytest.raises(ValueError, match="no pixel is left"):
        segment_lazy(image, 2, mask=np.zeros((3, 4), bool))
    with pytest.raises(TypeError, match="complex"):
        segment_lazy(da.zeros((3, 3), dtype=complex), 2)
    with pytest.raises(ValueError, match="n_clusters must be at least 1"):
        segment_lazy(image, 0)
    unknown = image[image > 3]
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        segment_lazy(unknown, 2)
    model = segment(np.zeros((4, 4, 3), np.uint8) + np.arange(3, dtype=np.uint8), 1).model
    with pytest.raises(ValueError, match=r"expects 3 \(RGB\) or 4 \(RGBA\) channels"):
        predict_lazy(model, da.zeros((4, 4, 2), dtype=np.uint8))


def test_numpy_input_is_accepted():
    image = CASES["uint16 gray"][0]
    assert_same(segment_lazy(image, 3), segment(image, 3))


def test_importing_the_package_does_not_import_dask():
    code = "import sys, napari_kmeans; print('dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert not lazy.is_dask(np.zeros(3))


def test_distributed_cluster_gives_the_in_memory_result():
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(9)
    rgb = rng.integers(0, 256, (80, 60, 3), dtype=np.uint8)
    side = int(np.sqrt(SAMPLE_SIZE)) + 20
    floats = _heavy_float(rng, (side, side, 2))
    cluster = distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
        dashboard_address=None,
    )  # fmt: skip
    try:
        with distributed.Client(cluster) as client, distributed.get_task_stream(client) as ts:
            result = segment_lazy(da.from_array(rgb, chunks=(40, 30, 3)), 4)
            assert_same(result, segment(rgb, 4))
            result = segment_lazy(da.from_array(floats, chunks=(200, 200, 2)), 3, channel_axis=-1)
            assert_same(result, segment(floats, 3, channel_axis=-1))
        workers = {task["worker"] for task in ts.data}
        assert len(workers) == 2  # the work ran on the cluster's two worker processes
    finally:
        cluster.close()


def test_large_data_doc_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
    result = doctest.testfile(str(DOCS / "large-data.md"), module_relative=False, optionflags=flags)
    assert result.attempted > 5
    assert result.failed == 0


def test_large_data_doc_cluster_block_runs(tmp_path, monkeypatch):
    """The script block of docs/large-data.md, on a volume.zarr written here."""
    zarr = pytest.importorskip("zarr")
    pytest.importorskip("distributed")
    text = (DOCS / "large-data.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if ">>>" not in b]
    monkeypatch.chdir(tmp_path)
    volume = np.random.default_rng(10).integers(0, 3000, (4, 40, 30), dtype=np.uint16)
    zarr.create_array("volume.zarr", shape=volume.shape, chunks=(2, 20, 30), dtype="u2")[:] = volume
    exec(compile(block, "docs/large-data.md", "exec"), {"__name__": "__main__"})
    labels = zarr.open_array("labels.zarr", mode="r")[:]
    np.testing.assert_array_equal(labels, segment(volume, 3).labels)


def test_lazy_predict_and_recolor_check_the_declared_layout():
    """The dask path refuses a single-channel model on an image declared RGB, as predict does."""
    model = segment(np.array([0, 10, 200, 210], np.uint8), 2).model
    photo = da.zeros((4, 5, 3), dtype=np.uint8, chunks=2)
    with pytest.raises(ValueError, match=r"image is RGB\(A\).*fitted on single-channel"):
        predict_lazy(model, photo, rgb=True)
    with pytest.raises(ValueError, match=r"image is RGB\(A\).*fitted on single-channel"):
        model.predict(photo, rgb=True)
    with pytest.raises(ValueError, match=r"image is RGB\(A\).*fitted on single-channel"):
        recolor_lazy(model, photo, da.zeros((4, 5, 3), dtype=np.uint8, chunks=2), rgb=True)
    assert predict_lazy(model, photo, rgb=False).compute().shape == (4, 5, 3)


@pytest.mark.parametrize(
    ("chunk_size", "error"), [(-1, ValueError), (0, ValueError), (2.5, TypeError)]
)
def test_predict_lazy_validates_chunk_size(chunk_size, error):
    image = np.random.default_rng(3).random((8, 9))
    model = segment(image, 3).model
    with pytest.raises(error, match=r"chunk_size must be"):
        predict_lazy(model, da.from_array(image, chunks=4), chunk_size=chunk_size)
    labels = predict_lazy(model, da.from_array(image, chunks=4), chunk_size=5).compute()
    np.testing.assert_array_equal(labels, model.predict(image))


@pytest.mark.parametrize("dtype", ["datetime64[ns]", "timedelta64[s]", "complex64", "V8"])
def test_lazy_refuses_non_real_dtypes(dtype):
    image = da.from_array(np.zeros((3, 4), dtype), chunks=2)
    with pytest.raises(TypeError, match=r"image has .*dtype.*needs real numbers"):
        segment_lazy(image, 2)


def test_lazy_refuses_values_whose_squares_overflow():
    image = da.from_array(np.random.default_rng(0).random((20, 20)) * 1e200, chunks=8)
    with pytest.raises(ValueError, match=r"squared distances overflow"):
        segment_lazy(image, 3)


def test_segment_lazy_reports_progress_and_can_be_cancelled():
    image = da.from_array(np.random.default_rng(0).random((60, 70, 2)), chunks=(30, 35, 2))
    calls = []
    res = segment_lazy(image, 3, channel_axis=-1, progress=lambda f, s: calls.append((f, s)))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(calls) > 3
    np.testing.assert_array_equal(
        res.labels.compute(), segment_lazy(image, 3, channel_axis=-1).labels.compute()
    )

    class Stop(Exception):
        pass

    def stop(fraction, step):
        if fraction >= 0.5:
            raise Stop(step)

    with pytest.raises(Stop):
        segment(image, 3, channel_axis=-1, progress=stop)


def test_lazy_negative_mask_values_are_outside():
    image = np.array([[0, 10, 200], [210, 0, 10]], np.uint8)
    mask = np.array([[1, -1, 3], [-2, 1, 1]], np.int16)
    expected = segment(image, 2, mask=mask).labels
    assert expected.tolist() == [[1, 0, 2], [0, 1, 1]]
    res = segment_lazy(da.from_array(image, chunks=2), 2, mask=da.from_array(mask, chunks=2))
    np.testing.assert_array_equal(res.labels.compute(), expected)
    model = segment(image, 2).model
    np.testing.assert_array_equal(model.predict(image, mask=mask), expected)
    np.testing.assert_array_equal(
        predict_lazy(model, da.from_array(image, chunks=2), mask=mask).compute(), expected
    )


def _many_distinct_int32(rows, cols, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(-(2**31), 2**31 - 1, (rows, cols), dtype=np.int64).astype(np.int32)


def _assert_same(lazy_res, eager):
    np.testing.assert_array_equal(lazy_res.labels.compute(), eager.labels)
    np.testing.assert_array_equal(lazy_res.centers, eager.centers)
    np.testing.assert_array_equal(lazy_res.counts, eager.counts)
    assert lazy_res.exact == eager.exact
    assert lazy_res.inertia == pytest.approx(eager.inertia, rel=1e-12)


def test_integer_gray_beyond_the_distinct_cap_equals_in_memory(monkeypatch):
    """Beyond DISTINCT_CAP distinct values both paths fit on the same seeded sample."""
    from napari_kmeans import sampling

    monkeypatch.setattr(sampling, "DISTINCT_CAP", 50_000)
    image = _many_distinct_int32(400, 420)
    eager = segment(image, 5)
    assert not eager.exact
    _assert_same(segment_lazy(da.from_array(image, chunks=(150, 200)), 5), eager)


def test_int32_gray_with_more_than_4194304_distinct_values_equals_in_memory():
    """The reported case: 4,750 pixels were labelled differently (lazy sampled, eager exact)."""
    image = _many_distinct_int32(2100, 2100, seed=1)
    assert np.unique(image).size > 4_194_304
    eager = segment(image, 4)
    _assert_same(segment_lazy(da.from_array(image, chunks=(1050, 1050)), 4), eager)


def test_float_gray_on_the_grid_equals_in_memory():
    """Issue 11: the same grid (global min/max, then per-block histograms) on both paths."""
    from napari_kmeans.sampling import GRID_MIN_PIXELS

    rng = np.random.default_rng(31)
    level = rng.choice([100.0, 700.0, 3000.0], 2200 * 500, p=[0.7, 0.2, 0.1])
    assert level.size > GRID_MIN_PIXELS
    image = (level + np.sqrt(level) * rng.standard_normal(level.size)).astype(np.float32)
    image = image.reshape(-1, 500)
    image[3, 7] = np.nan
    eager = segment(image, 4)
    assert not eager.exact
    for chunks in ((700, 500), (333, 250)):
        _assert_same(segment_lazy(da.from_array(image, chunks=chunks), 4), eager)
