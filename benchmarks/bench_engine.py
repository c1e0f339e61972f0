#!/usr/bin/env python
"""Engine benchmark: napari-kmeans ``segment`` against scikit-learn, OpenCV and scikit-image.

Runs the cases of the performance targets (issues 2 and 11) in one process on the current machine, prints
median times, speed-ups, inertia ratios and peak memory with a PASS/FAIL line per target, and
(for a full run of every case) writes ``docs/performance.md`` and ``docs/images/performance.png``.

    python benchmarks/bench_engine.py              # full run, about 6 minutes on 2 cores
    python benchmarks/bench_engine.py --quick      # small sizes, one repeat, prints only
    python benchmarks/bench_engine.py --cases 1,3  # a selection (prints only unless --write)

scikit-learn and OpenCV are imported here only, never by the package.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MD_PATH = ROOT / "docs" / "performance.md"
PNG_PATH = ROOT / "docs" / "images" / "performance.png"
MB = 1 << 20
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"]


@dataclass(frozen=True)
class Config:
    """Sizes and repeats of one run."""

    quick: bool
    photo_shape: tuple  # case 1 and 2 (rows, columns)
    volume_shape: tuple  # case 3 (planes, rows, columns)
    multi_shape: tuple  # case 4 (rows, columns); 4 channels
    photos: tuple  # case 5
    repeats: int  # runs of our segment (median reported)
    slow_repeats: int  # runs of each method that takes seconds (scikit-learn, OpenCV)
    float_16: tuple = (16, 1024, 1024)  # case 6 (planes, rows, columns)
    float_67: tuple = (64, 1024, 1024)  # case 7
    mp4: tuple = (2048, 2048)  # cases 8-10 (rows, columns)
    vol2: tuple = (16, 512, 512)  # case 11 (planes, rows, columns); 2 channels


FULL = Config(False, (3000, 4000), (64, 1024, 1024), (2048, 2048), tuple(PHOTOS), 5, 3)
QUICK = Config(
    True, (600, 800), (8, 256, 256), (512, 512), ("chelsea",), 1, 1,
    (4, 512, 512), (8, 512, 512), (512, 512), (4, 256, 256),
)  # fmt: skip


# --------------------------------------------------------------------------- test data


def make_photo(shape, gray=False, seed=0):
    """A camera-like 8-bit photo: the 512 x 512 astronaut stretched to ``shape`` (order 1) + noise.

    Linear upscaling alone leaves few distinct colours; the seeded noise brings a 12-megapixel RGB
    version to about one million distinct colours, like a real camera photo.
    """
    from skimage import color, data, transform

    src = data.astronaut().astype(np.float32)
    if gray:
        src = (color.rgb2gray(src / 255) * 255).astype(np.float32)
    big = transform.resize(src, shape, order=1, preserve_range=True, anti_aliasing=False)
    big = big.astype(np.float32, copy=False)
    big += 2 * np.random.default_rng(seed).standard_normal(big.shape, dtype=np.float32)
    np.rint(big, out=big)
    np.clip(big, 0, 255, out=big)
    return big.astype(np.uint8)


def _add_blob(vol, center, sigma, amp):
    """Add a separable Gaussian blob, evaluated in its +-3 sigma box only."""
    slices, profiles = [], []
    for c, s, n in zip(center, sigma, vol.shape, strict=True):
        lo, hi = max(0, int(c - 3 * s)), min(n, int(c + 3 * s) + 1)
        if lo >= hi:
            return
        x = np.arange(lo, hi, dtype=np.float32)
        slices.append(slice(lo, hi))
        profiles.append(np.exp(-0.5 * ((x - c) / s) ** 2))
    gz, gy, gx = profiles
    vol[tuple(slices)] += (
        np.float32(amp) * gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
    )


def make_volume(shape, seed=0):
    """A 16-bit fluorescence-like stack: Gaussian cells (log-uniform brightness) on an uneven
    background, with shot noise (Gaussian approximation of Poisson, variance = signal) and read
    noise around a camera offset of 100."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    vol = np.empty(shape, np.float32)
    vol[...] = 200 + 100 * np.linspace(0, 1, nx, dtype=np.float32)
    n_blobs = max(8, round(1500 * nz * ny * nx / 2**26))
    for _ in range(n_blobs):
        sxy = rng.uniform(5, 20) * ny / 1024
        sz = rng.uniform(1.5, 4) * nz / 64
        amp = np.exp(rng.uniform(np.log(300), np.log(20000)))
        _add_blob(vol, rng.uniform(0, 1, 3) * shape, (max(sz, 0.7), sxy, sxy), amp)
    out = np.empty(shape, np.uint16)
    for z in range(nz):
        plane = vol[z]
        plane += np.sqrt(plane) * rng.standard_normal(plane.shape, dtype=np.float32)
        plane += 100 + 5 * rng.standard_normal(plane.shape, dtype=np.float32)
        out[z] = np.clip(np.rint(plane), 0, 65535)
    return out


def make_multichannel(shape, n_regions=6, seed=0):
    """A float32 (rows, columns, 4) image: six soft regions (softmax of smooth random fields)
    mixing six random 4-channel signatures, plus Gaussian noise sigma 0.04."""
    from scipy import ndimage as ndi
    from skimage import transform

    rng = np.random.default_rng(seed)
    h, w = shape
    low = rng.standard_normal((h // 32, w // 32, n_regions)).astype(np.float32)
    low = ndi.gaussian_filter(low, sigma=(1, 1, 0))
    fields = transform.resize(low, (h, w, n_regions), order=1).astype(np.float32)
    fields *= np.float32(8 / fields.std())
    fields -= fields.max(axis=-1, keepdims=True)
    np.exp(fields, out=fields)
    fields /= fields.sum(axis=-1, keepdims=True)
    signatures = rng.uniform(0.05, 1.0, (n_regions, 4)).astype(np.float32)
    img = fields @ signatures
    img += np.float32(0.04) * rng.standard_normal(img.shape, dtype=np.float32)
    return img


def make_float_volume(shape, seed=0):
    """A float32 fluorescence-like stack (deconvolved or background-subtracted): the cells and
    background of :func:`make_volume` with shot and read noise, not rounded, offset removed."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    vol = np.empty(shape, np.float32)
    vol[...] = 200 + 100 * np.linspace(0, 1, nx, dtype=np.float32)
    for _ in range(max(8, round(1500 * nz * ny * nx / 2**26))):
        sxy = rng.uniform(5, 20) * ny / 1024
        sz = rng.uniform(1.5, 4) * nz / 64
        amp = np.exp(rng.uniform(np.log(300), np.log(20000)))
        _add_blob(vol, rng.uniform(0, 1, 3) * shape, (max(sz, 0.7), sxy, sxy), amp)
    for z in range(nz):
        plane = vol[z]
        plane += np.sqrt(plane) * rng.standard_normal(plane.shape, dtype=np.float32)
        plane += 5 * rng.standard_normal(plane.shape, dtype=np.float32)
    return vol


def load_photo(name):
    from skimage import data

    return getattr(data, name)()


# --------------------------------------------------------------------------- measuring


def partition_inertia(pixels, labels, chunk=1 << 22):
    """The k-means objective of a partition, the one inertia used for every method.

    Sum over pixels of the squared distance (float64, input units) to the mean of the pixels
    sharing its label. For converged k-means this is the method's inertia; for thresholds
    (multi-Otsu) it is the within-class sum of squares.
    """
    n, c = pixels.shape
    labels = labels.reshape(-1)
    m = int(labels.max()) + 1
    sums, counts = np.zeros((m, c)), np.zeros(m)
    for s in range(0, n, chunk):
        lab = labels[s : s + chunk].astype(np.intp)
        counts += np.bincount(lab, minlength=m)
        for j in range(c):
            sums[:, j] += np.bincount(lab, weights=pixels[s : s + chunk, j], minlength=m)
    means = sums / np.maximum(counts, 1)[:, None]
    total = 0.0
    for s in range(0, n, chunk):
        d = pixels[s : s + chunk].astype(np.float64) - means[labels[s : s + chunk].astype(np.intp)]
        total += float(np.einsum("ij,ij->", d, d))
    return total


def timed(fn, repeats):
    """``(last result, wall times)`` of ``repeats`` calls; the previous result is freed first."""
    times, out = [], None
    for _ in range(repeats):
        out = None
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def tracemalloc_peak(fn):
    """Peak bytes of Python/numpy allocations made by ``fn()`` (results included).

    tracemalloc sees every numpy buffer and Python object, not memory that compiled code
    allocates with plain malloc (scipy's vq internals are numpy arrays, so they are seen).
    """
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del out
    return peak


def _proc_status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def rss_peak_child(case_id, quick):
    """Peak resident memory above the input of one ``segment`` call, in a fresh subprocess.

    The child builds the input, warms up, resets the kernel's high-water mark
    (``/proc/self/clear_refs``), calls ``segment`` and reports ``VmHWM - VmRSS`` (bytes).
    Returns None where this is not available (not Linux).
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", str(case_id)]
    if quick:
        cmd.append("--quick")
    res = None
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        return json.loads(res.stdout.strip().splitlines()[-1])["rss_peak"]
    except (subprocess.SubprocessError, ValueError, IndexError, KeyError) as err:
        tail = res.stderr[-500:] if res is not None else ""
        print(f"  (RSS measurement failed: {err!r} {tail})", flush=True)
        return None


def rss_child_main(case_id, cfg):
    from napari_kmeans import segment

    image, k, kwargs = CASE_INPUTS[case_id](cfg)
    segment(image[:64, :64], k, **kwargs)  # imports and first-call costs
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _proc_status_kb("VmRSS")
    except OSError:
        print(json.dumps({"rss_peak": None}))
        return
    seg = segment(image, k, **kwargs)
    peak = _proc_status_kb("VmHWM")
    del seg
    print(json.dumps({"rss_peak": (peak - before) * 1024}))


def memory(case_id, cfg, fn):
    """``(tracemalloc peak, RSS peak)`` in bytes above the input for our ``segment``."""
    return tracemalloc_peak(fn), rss_peak_child(case_id, cfg.quick)


# --------------------------------------------------------------------------- the methods


def run_ours(image, k, repeats, **kwargs):
    from napari_kmeans import segment

    return timed(lambda: segment(image, k, **kwargs), repeats)


def sklearn_fit_predict(pixels, k, n_init, seed=0):
    """scikit-learn ``KMeans(k, n_init=n_init)`` fit + predict on float32 (its fastest dtype)."""
    from sklearn.cluster import KMeans

    x = pixels.astype(np.float32, copy=False)
    km = KMeans(k, n_init=n_init, random_state=seed).fit(x)
    return km.predict(x), km.cluster_centers_


def opencv_kmeans(pixels, k, attempts=1, seed=0):
    """``cv2.kmeans`` with k-means++ centres; stops after 300 iterations or when no centre moves
    more than sqrt(1e-4 x mean variance), the same tolerance as scikit-learn and ours."""
    import cv2

    x = pixels.astype(np.float32, copy=False)
    eps = float(np.sqrt(1e-4 * x[:: max(1, x.shape[0] // 100_000)].var(axis=0).mean()))
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 300, eps)
    cv2.setRNGSeed(seed)
    _, labels, centers = cv2.kmeans(x, k, None, crit, attempts, cv2.KMEANS_PP_CENTERS)
    return labels.ravel(), centers


def multiotsu_labels(image, classes):
    """scikit-image ``threshold_multiotsu`` then ``np.digitize``: a label image."""
    from skimage.filters import threshold_multiotsu

    thresholds = threshold_multiotsu(image, classes=classes)
    return np.digitize(image, bins=thresholds)


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One method's measurement in a case."""

    method: str
    times: list
    inertia: float | None = None
    note: str = ""
    time_override: float | None = None  # an estimate (scaled from a subsample)

    @property
    def median(self):
        return (
            self.time_override if self.time_override is not None else statistics.median(self.times)
        )


@dataclass
class Target:
    case: int
    text: str
    measured: str
    passed: bool


@dataclass
class CaseResult:
    case: int
    title: str
    data: str
    rows: list
    targets: list
    memory: tuple | None = None  # (tracemalloc bytes, rss bytes or None, input bytes)
    notes: list = field(default_factory=list)
    photos: list = field(default_factory=list)  # case 5 rows: dicts
    short: str = ""  # a two-line label for the plot
    others: float | None = None  # cores other processes kept busy meanwhile


def ratio_target(case, text, ours, other, minimum):
    speed = other.median / ours.median
    return Target(case, text, f"{speed:.1f}x", speed >= minimum)


def inertia_target(case, text, ours, other, factor=1.0):
    r = ours.inertia / other.inertia
    return Target(case, text, f"{r:.4f}", r <= factor * (1 + 1e-12))


def memory_target(case, text, mem, limit):
    traced, rss, _ = mem
    worst = max(traced, rss or 0)
    how = "RSS" if rss is not None and rss >= traced else "tracemalloc"
    return Target(case, text, f"{worst / MB:.0f} MB ({how})", worst <= limit)


def ours_row(seg, times, pixels, note=""):
    """Our row; notes the engine's own inertia when it differs from the shared function's."""
    extra = "exact" if seg.exact else f"{seg.n_iter} Lloyd iterations"
    inertia = partition_inertia(pixels, seg.labels)
    if abs(seg.inertia - inertia) > 1e-6 * inertia:
        extra += f"; engine reports inertia {seg.inertia:.6g}"
    return Row("napari-kmeans segment", times, inertia, f"{extra}{'; ' + note if note else ''}")


# --------------------------------------------------------------------------- the cases


def inputs_1(cfg):
    return make_photo(cfg.photo_shape), 8, {}


def inputs_2(cfg):
    return make_photo(cfg.photo_shape, gray=True, seed=1), 5, {}


def inputs_3(cfg):
    return make_volume(cfg.volume_shape), 4, {}


def inputs_4(cfg):
    return make_multichannel(cfg.multi_shape), 6, {"channel_axis": -1, "rgb": False}


def make_float_photo(shape, seed=0):
    """Float32 RGB in [0, 1]: the stretched astronaut of :func:`make_photo`, not rounded."""
    from skimage import data, transform

    src = data.astronaut().astype(np.float32) / 255
    big = transform.resize(src, shape, order=1, anti_aliasing=False).astype(np.float32)
    big += (2 / 255) * np.random.default_rng(seed).standard_normal(big.shape, dtype=np.float32)
    return big


def inputs_6(cfg):
    return make_float_volume(cfg.float_16), 4, {}


def inputs_7(cfg):
    return make_float_volume(cfg.float_67, seed=1), 4, {}


def inputs_8(cfg):
    return make_float_photo(cfg.mp4), 8, {}


def inputs_9(cfg):
    img = make_float_photo(cfg.mp4, seed=1) * 65535
    return np.clip(np.rint(img), 0, 65535).astype(np.uint16), 6, {}


def inputs_10(cfg):
    img = np.clip(np.rint(make_multichannel(cfg.mp4, seed=2) * 200), 0, 255)
    return img.astype(np.uint8), 5, {"channel_axis": -1, "rgb": False}


def inputs_11(cfg):
    vol = np.stack([make_volume(cfg.vol2, seed=2), make_volume(cfg.vol2, seed=3)], axis=-1)
    return vol, 4, {"channel_axis": -1, "rgb": False}


CASE_INPUTS = {
    1: inputs_1, 2: inputs_2, 3: inputs_3, 4: inputs_4, 6: inputs_6, 7: inputs_7, 8: inputs_8,
    9: inputs_9, 10: inputs_10, 11: inputs_11,
}  # fmt: skip


def _mp(shape):
    return int(np.prod(shape)) / 1e6


def case_1(cfg):
    image, k, kw = inputs_1(cfg)
    pixels = image.reshape(-1, 3)
    codes = (
        pixels[:, 0] | pixels[:, 1].astype(np.uint32) << 8 | pixels[:, 2].astype(np.uint32) << 16
    )
    n_colors = np.count_nonzero(np.bincount(codes, minlength=1 << 24))
    del codes
    seg, times = run_ours(image, k, cfg.repeats, **kw)
    ours = ours_row(seg, times, pixels, "labels + recolored")
    (lab, _), t = timed(lambda: sklearn_fit_predict(pixels, k, 1), cfg.slow_repeats)
    sk = Row("scikit-learn KMeans n_init=1", t, partition_inertia(pixels, lab), "fit + predict")
    (lab, _), t = timed(lambda: opencv_kmeans(pixels, k, 1), cfg.slow_repeats)
    cv = Row("OpenCV cv2.kmeans attempts=1", t, partition_inertia(pixels, lab), "k-means++")
    del lab
    mem = (*memory(1, cfg, lambda: run_ours(image, k, 1, **kw)), image.nbytes)
    targets = [
        ratio_target(1, ">= 20x faster than scikit-learn n_init=1", ours, sk, 20),
        Target(1, "median <= 0.5 s", f"{ours.median:.3f} s", ours.median <= 0.5),
        inertia_target(1, "inertia <= scikit-learn n_init=1", ours, sk),
        memory_target(1, "peak memory <= 0.5 GB above the input", mem, 512 * MB),
    ]
    data = (
        f"{image.shape[0]} x {image.shape[1]} RGB uint8 ({_mp(image.shape[:2]):.1f} MP, "
        f"{n_colors:,} distinct colours), k = {k}"
    )
    res = CaseResult(1, "12 MP 8-bit RGB photo", data, [ours, sk, cv], targets, mem)
    res.short = f"RGB uint8\n{_mp(image.shape[:2]):.1f} MP, k={k}"
    return res


def case_2(cfg):
    image, k, kw = inputs_2(cfg)
    pixels = image.reshape(-1, 1)
    seg, times = run_ours(image, k, cfg.repeats, **kw)
    ours = ours_row(seg, times, pixels, "labels + recolored")
    (lab, _), t = timed(lambda: sklearn_fit_predict(pixels, k, 1), cfg.slow_repeats)
    sk = Row("scikit-learn KMeans n_init=1", t, partition_inertia(pixels, lab), "fit + predict")
    (lab, _), t = timed(lambda: opencv_kmeans(pixels, k, 1), cfg.slow_repeats)
    cv = Row("OpenCV cv2.kmeans attempts=1", t, partition_inertia(pixels, lab), "k-means++")
    lab, t = timed(lambda: multiotsu_labels(image, k), max(3, cfg.repeats))
    mo = Row(
        "scikit-image threshold_multiotsu",
        t,
        partition_inertia(pixels, lab),
        f"classes={k}, + np.digitize",
    )
    del lab
    mem = (*memory(2, cfg, lambda: run_ours(image, k, 1, **kw)), image.nbytes)
    best_other = min(r.inertia for r in (sk, cv, mo))
    exact = seg.exact and ours.inertia <= best_other * (1 + 1e-12)
    targets = [
        Target(
            2,
            "exact optimum (exact=True, inertia <= every other method)",
            f"exact={seg.exact}, {ours.inertia / best_other:.6f}",
            exact,
        ),
        ratio_target(2, ">= 40x faster than scikit-learn n_init=1", ours, sk, 40),
        ratio_target(2, ">= 40x faster than multi-Otsu", ours, mo, 40),
        inertia_target(2, "inertia <= multi-Otsu's", ours, mo),
    ]
    data = (
        f"{image.shape[0]} x {image.shape[1]} grayscale uint8 ({_mp(image.shape):.1f} MP), k = {k}"
    )
    res = CaseResult(2, "12 MP 8-bit grayscale", data, [ours, sk, cv, mo], targets, mem)
    res.short = f"gray uint8\n{_mp(image.shape):.1f} MP, k={k}"
    return res


def case_3(cfg):
    image, k, kw = inputs_3(cfg)
    pixels = image.reshape(-1, 1)
    n_values = np.unique(image[:: max(1, image.shape[0] // 8)]).size
    seg, times = run_ours(image, k, cfg.repeats, **kw)
    ours = ours_row(seg, times, pixels, "labels + recolored")
    step = 8 if image.size >= 1 << 24 else 4
    sub = pixels[::step]  # every 8th voxel: a regular lattice, representative of the volume
    (_, centers), t = timed(lambda: sklearn_fit_predict(sub, k, 1), cfg.slow_repeats)
    centers = np.sort(centers[:, 0].astype(np.float64))
    lab = np.digitize(image, (centers[1:] + centers[:-1]) / 2)  # nearest centre, whole volume
    sk = Row(
        "scikit-learn KMeans n_init=1",
        t,
        partition_inertia(pixels, lab),
        f"fit + predict on every {step}th voxel, time x {step} (estimate); "
        "inertia of its centres applied to every voxel",
        time_override=statistics.median(t) * step,
    )
    del lab
    mem = (*memory(3, cfg, lambda: run_ours(image, k, 1, **kw)), image.nbytes)
    exact = seg.exact and ours.inertia <= sk.inertia * (1 + 1e-12)
    targets = [
        Target(
            3,
            "exact optimum (exact=True, inertia <= scikit-learn's)",
            f"exact={seg.exact}, {ours.inertia / sk.inertia:.6f}",
            exact,
        ),
        ratio_target(3, ">= 25x faster than scikit-learn n_init=1 (estimated)", ours, sk, 25),
        Target(3, "median <= 1 s", f"{ours.median:.3f} s", ours.median <= 1.0),
    ]
    data = (
        f"{' x '.join(map(str, image.shape))} uint16 ({image.size / 1e6:.0f} M voxels, "
        f"~{n_values:,} distinct values in every 8th plane), k = {k}"
    )
    notes = [
        f"scikit-learn was fitted (and predicted) on every {step}th voxel in memory order "
        f"({sub.shape[0] / 1e6:.1f} M voxels, a regular lattice over the whole volume) and its "
        f"time multiplied by {step}: Lloyd's cost is linear in the number of points, though the "
        "iteration count on all voxels may differ. Its inertia is that of its centres applied "
        "to every voxel by nearest centre."
    ]
    res = CaseResult(3, "16-bit fluorescence-like volume", data, [ours, sk], targets, mem, notes)
    res.short = f"uint16 volume\n{image.size / 1e6:.0f} M voxels, k={k}"
    return res


def case_4(cfg):
    image, k, kw = inputs_4(cfg)
    pixels = image.reshape(-1, 4)
    seg, times = run_ours(image, k, cfg.repeats, **kw)
    ours = ours_row(seg, times, pixels, "labels + recolored")
    (lab, _), t = timed(lambda: sklearn_fit_predict(pixels, k, 1), cfg.slow_repeats)
    sk1 = Row("scikit-learn KMeans n_init=1", t, partition_inertia(pixels, lab), "fit + predict")
    (lab, _), t = timed(lambda: sklearn_fit_predict(pixels, k, 3), 1)
    sk3 = Row("scikit-learn KMeans n_init=3", t, partition_inertia(pixels, lab), "best of 3")
    (lab, _), t = timed(lambda: opencv_kmeans(pixels, k, 1), cfg.slow_repeats)
    cv = Row("OpenCV cv2.kmeans attempts=1", t, partition_inertia(pixels, lab), "k-means++")
    del lab
    mem = (*memory(4, cfg, lambda: run_ours(image, k, 1, **kw)), image.nbytes)
    targets = [
        ratio_target(4, ">= 5x faster than scikit-learn n_init=1", ours, sk1, 5),
        inertia_target(4, "inertia <= 1.01 x scikit-learn best of 3", ours, sk3, 1.01),
    ]
    data = (
        f"{image.shape[0]} x {image.shape[1]} x 4 float32 ({_mp(image.shape[:2]):.1f} MP), k = {k}"
    )
    res = CaseResult(4, "4-channel float32", data, [ours, sk1, sk3, cv], targets, mem)
    res.short = f"4-ch float32\n{_mp(image.shape[:2]):.1f} MP, k={k}"
    return res


def case_5(cfg):
    from napari_kmeans import segment

    photos = []
    for name in cfg.photos:
        image = load_photo(name)
        pixels = image.reshape(-1, image.shape[-1])
        for k in (3, 8, 16):
            seg, t_ours = timed(lambda image=image, k=k: segment(image, k), 3)
            ours = partition_inertia(pixels, seg.labels)
            (lab, _), t_sk = timed(lambda pixels=pixels, k=k: sklearn_fit_predict(pixels, k, 10), 1)
            sk = partition_inertia(pixels, lab)
            photos.append(
                dict(
                    photo=name,
                    shape=image.shape,
                    k=k,
                    ours_time=statistics.median(t_ours),
                    sk_time=t_sk[0],
                    ours=ours,
                    sk=sk,
                    ratio=ours / sk,
                )
            )
            print(
                f"  {name:22s} k={k:2d}  ours {photos[-1]['ours_time']:.3f} s  sklearn best of 10 "
                f"{t_sk[0]:.2f} s  inertia ratio {ours / sk:.5f}",
                flush=True,
            )
    worst = max(photos, key=lambda p: p["ratio"])
    targets = [
        Target(
            5,
            "inertia <= 1.005 x scikit-learn best of 10, every photo and k",
            f"worst {worst['ratio']:.5f} ({worst['photo']}, k={worst['k']})",
            worst["ratio"] <= 1.005,
        )
    ]
    data = f"{len(cfg.photos)} RGB photos from skimage.data, k in {{3, 8, 16}}"
    return CaseResult(5, "Real photos", data, [], targets, photos=photos)


def _estimated(name, fn, pixels, step, repeats):
    """A method's row on all pixels, or fitted on every ``step``-th pixel with its time x step
    and its centres applied to every pixel by nearest centre."""
    from scipy.cluster.vq import vq

    if step == 1:
        (lab, _), t = timed(lambda: fn(pixels), repeats)
        return Row(name, t, partition_inertia(pixels, lab), "fit + predict")
    sub = pixels[::step]
    (_, centers), t = timed(lambda: fn(sub), repeats)
    lab = np.empty(pixels.shape[0], np.int32)
    x = pixels.astype(np.float32, copy=False)
    for s in range(0, x.shape[0], 1 << 22):
        lab[s : s + (1 << 22)] = vq(x[s : s + (1 << 22)], centers.astype(np.float32))[0]
    note = (
        f"fit + predict on every {step}th pixel, time x {step} (estimate); "
        "inertia of its centres applied to every pixel"
    )
    return Row(name, t, partition_inertia(pixels, lab), note, statistics.median(t) * step)


def exact_check(image, k):
    """``(ours / exact optimum, planes, distinct values)`` on the first planes of a float volume
    (at least 2**21 voxels, so that the grid is used): the exact 1-D optimum by dynamic
    programming over every distinct value."""
    from napari_kmeans import segment
    from napari_kmeans.kmeans1d import kmeans_1d_exact

    planes = max(1, -(-(1 << 21) // int(np.prod(image.shape[1:]))))
    part = image[:planes]
    values, counts = np.unique(part, return_counts=True)
    best = kmeans_1d_exact(values.astype(np.float64), counts.astype(np.float64), k)
    ours = partition_inertia(part.reshape(-1, 1), segment(part, k).labels)
    return ours / best.inertia, planes, values.size


def compare_case(case, cfg, title, short, repeats=None, step=1):
    """One case of issue 11: ours, scikit-learn n_init=1 and OpenCV, inertia and memory."""
    image, k, kw = CASE_INPUTS[case](cfg)
    n_ch = 1 if case in (6, 7) else image.shape[-1]  # the others: channels last
    pixels = image.reshape(-1, n_ch)
    seg, times = run_ours(image, k, repeats or cfg.repeats, **kw)
    ours = ours_row(seg, times, pixels, "labels + recolored")
    sk = _estimated(
        "scikit-learn KMeans n_init=1", lambda x: sklearn_fit_predict(x, k, 1), pixels, step,
        cfg.slow_repeats,
    )  # fmt: skip
    cv = _estimated(
        "OpenCV cv2.kmeans attempts=1", lambda x: opencv_kmeans(x, k, 1), pixels, step,
        cfg.slow_repeats,
    )  # fmt: skip
    mem = (*memory(case, cfg, lambda: run_ours(image, k, 1, **kw)), image.nbytes)
    targets = [
        ratio_target(case, ">= 10x faster than scikit-learn n_init=1", ours, sk, 10),
        inertia_target(case, "inertia <= scikit-learn n_init=1", ours, sk),
        memory_target(case, "peak memory above the input <= 3x the input", mem, 3 * image.nbytes),
    ]
    notes = []
    if n_ch == 1 and case == 6:
        ratio, planes, n_values = exact_check(image, k)
        targets.append(
            Target(case, "inertia <= 1.0001 x the exact optimum", f"{ratio:.8f}", ratio <= 1.0001)
        )
        notes.append(
            f"Exact optimum: on the first {planes} planes ({image[:planes].size:,} voxels, "
            f"{n_values:,} distinct values), segmented the same way, ours / the exact 1-D optimum "
            f"(dynamic programming over every distinct value) = {ratio:.8f}."
        )
    if step > 1:
        notes.append(
            f"scikit-learn and OpenCV were fitted on every {step}th voxel in memory order and "
            f"their times multiplied by {step} (a full run takes minutes and gigabytes); their "
            "inertia is that of their centres applied to every voxel."
        )
    dims = " x ".join(map(str, image.shape))
    data = (
        f"{dims} {image.dtype} ({pixels.shape[0] / 1e6:.1f} M pixels, {n_ch} channel(s)), k = {k}"
    )
    res = CaseResult(case, title, data, [ours, sk, cv], targets, mem, notes)
    res.short = short
    return res


def case_6(cfg):
    return compare_case(6, cfg, "Single-channel float32, 16 MP", "gray float32\n16 MP, k=4")


def case_7(cfg):
    return compare_case(
        7, cfg, "Single-channel float32, 67 MP", "gray float32\n67 MP, k=4", repeats=3, step=8
    )


def case_8(cfg):
    return compare_case(8, cfg, "Float RGB, 4 MP", "RGB float32\n4 MP, k=8")


def case_9(cfg):
    return compare_case(9, cfg, "16-bit RGB, 4 MP", "RGB uint16\n4 MP, k=6")


def case_10(cfg):
    return compare_case(10, cfg, "8-bit 4-channel, 4 MP", "4-ch uint8\n4 MP, k=5")


def case_11(cfg):
    return compare_case(11, cfg, "16-bit 2-channel volume", "2-ch uint16 vol.\n4 M voxels, k=4")


CASES = {
    1: case_1, 2: case_2, 3: case_3, 4: case_4, 5: case_5, 6: case_6, 7: case_7, 8: case_8,
    9: case_9, 10: case_10, 11: case_11,
}  # fmt: skip


# --------------------------------------------------------------------------- reporting


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def case_table(res):
    ours = res.rows[0]
    rows = []
    for r in res.rows:
        runs = "est." if r.time_override is not None else len(r.times)
        speed = "-" if r is ours else f"{r.median / ours.median:.1f}x"
        inertia = "" if r.inertia is None else f"{r.inertia:.6g}"
        ratio = "" if r.inertia is None else f"{ours.inertia / r.inertia:.4f}"
        rows.append([r.method, f"{r.median:.3f}", runs, speed, inertia, ratio, r.note])
    header = [
        "method",
        "median time (s)",
        "runs",
        "ours faster by",
        "inertia",
        "ours / its inertia",
        "notes",
    ]
    return md_table(header, rows)


def photo_table(res):
    rows = [
        [
            p["photo"],
            "x".join(map(str, p["shape"][:2])),
            p["k"],
            f"{p['ours_time']:.3f}",
            f"{p['sk_time']:.2f}",
            f"{p['ours']:.6g}",
            f"{p['sk']:.6g}",
            f"{p['ratio']:.5f}",
        ]
        for p in res.photos
    ]
    header = [
        "photo",
        "size",
        "k",
        "ours (s, median of 3)",
        "scikit-learn best of 10 (s)",
        "ours inertia",
        "scikit-learn inertia",
        "ratio",
    ]
    return md_table(header, rows)


def memory_table(results):
    rows = []
    for r in results:
        if r.memory is None:
            continue
        traced, rss, size = r.memory
        rss_txt = "n/a" if rss is None else f"{rss / MB:.0f}"
        rows.append([r.case, r.title, f"{size / MB:.0f}", f"{traced / MB:.0f}", rss_txt])
    header = ["case", "data", "input (MB)", "tracemalloc peak (MB)", "RSS high-water (MB)"]
    return md_table(header, rows)


def targets_table(results):
    rows = [
        [t.case, t.text, t.measured, "PASS" if t.passed else "**FAIL**"]
        for r in results
        for t in r.targets
    ]
    return md_table(["case", "target", "measured", "result"], rows)


def _git_commit():
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def engine_fingerprint():
    """A hash of the engine's source files, to tell whether they changed during the run."""
    import hashlib

    import napari_kmeans

    h = hashlib.sha256()
    for f in sorted(Path(napari_kmeans.__file__).parent.glob("*.py")):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:12]


def machine(commit):
    """A description of the machine and the libraries, as ``(label, value)`` pairs."""
    import cv2
    import matplotlib
    import scipy
    import skimage
    import sklearn

    import napari_kmeans

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        with open("/proc/meminfo") as f:
            ram = int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) / 2**20
    except (OSError, StopIteration):
        ram = float("nan")
    return [
        ("date", dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        ("CPU", f"{cpu}, {os.cpu_count()} cores (shared)"),
        ("RAM", f"{ram:.0f} GB"),
        ("OS", platform.platform()),
        ("Python", platform.python_version()),
        ("napari-kmeans", f"{napari_kmeans.__version__} (git {commit} at the start)"),
        ("numpy / scipy", f"{np.__version__} / {scipy.__version__}"),
        ("scikit-image", skimage.__version__),
        ("scikit-learn", sklearn.__version__),
        ("OpenCV", cv2.__version__),
        ("matplotlib", matplotlib.__version__),
    ]


HEADER = """\
# Performance

*Generated by `benchmarks/bench_engine.py` (`make bench`); edit the script's template, not this
page, and rerun it.*

The engine is compared, in one run on one machine, with scikit-learn `KMeans`, OpenCV
`cv2.kmeans` and scikit-image `threshold_multiotsu` on the five cases of the performance targets
(issue 2) and the six cases of data that do not compress (issue 11: cases 6-11).

How to read the tables:

- **Times** are wall-clock medians over the number of runs shown. Ours is the full `segment` call
  (labels *and* the recoloured image); scikit-learn is `fit` + `predict` on the pixels cast to
  float32 (its fastest dtype, cast included); OpenCV is `cv2.kmeans` on float32 with k-means++
  centres; multi-Otsu is `threshold_multiotsu` + `np.digitize`. scikit-learn (OpenMP) and OpenCV
  use both cores; our engine is numpy and runs its passes over pixels of 8 bytes or more
  (sampling, labelling, recolouring) in two threads, the fit on one.
- **Inertia** is computed by one function for every method: the k-means objective of the
  partition the method returns, i.e. the sum over all pixels of the squared distance (float64,
  input units, our feature space) to the mean of the pixels sharing its label.
  "ours / its inertia" <= 1 means ours is at least as good.
- **Memory** is measured for our `segment` only, above the input (results included), two ways:
  the tracemalloc peak (every numpy buffer and Python object; not raw C allocations) and the
  resident-set high-water mark of a fresh subprocess (kernel `VmHWM` after a reset through
  `/proc/self/clear_refs`, minus the resident size before the call). The target uses the larger.
- **Repeats**: ours 5 runs (3 for the 67 MP case 7), scikit-learn and OpenCV 1 run each (they
  take seconds); in case 7 they are fitted on every 8th voxel and their time multiplied by 8.
- Other processes may share the cores: the average number of cores they kept busy during the
  run (from `/proc/stat`, minus this benchmark's own CPU time) is given with the machine.
"""


def cpu_counters():
    """``(machine busy CPU seconds, this process's CPU seconds incl. children, wall time)``.

    The machine's busy time comes from ``/proc/stat`` (None elsewhere); the difference between
    two snapshots, minus our own share, is what other processes used meanwhile.
    """
    busy = None
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        busy = (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
    except (OSError, ValueError):
        pass
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    return busy, own, time.perf_counter()


def others_cores(start, end):
    """Average number of cores that other processes kept busy between two snapshots."""
    if start[0] is None or end[0] is None or end[2] <= start[2]:
        return None
    return max(0.0, (end[0] - start[0]) - (end[1] - start[1])) / (end[2] - start[2])


def load_warning(others):
    """A sentence when other processes competed for the cores during the run, else ''."""
    cores = os.cpu_count() or 1
    if others is None or others < 0.2:
        return ""
    return (
        f"**Load:** other processes kept on average {others:.1f} of the {cores} cores busy during "
        "this run, so times are slower than on an idle machine, and not necessarily by the same "
        "factor for every method."
    )


def write_markdown(results, info, path, warning=""):
    parts = [HEADER, "## Targets\n", targets_table(results), ""]
    if warning:
        parts += [warning, ""]
    for r in results:
        parts += [f"## Case {r.case}: {r.title}\n", f"Data: {r.data}.\n"]
        parts.append(photo_table(r) if r.photos else case_table(r))
        parts += [""] + [f"*{n}*\n" for n in r.notes]
    if any(r.memory for r in results):
        parts += ["## Peak memory of `segment` above the input\n", memory_table(results), ""]
    parts += ["## Machine\n", md_table(["", ""], info), ""]
    parts += ["![Timings and inertia ratios](images/performance.png)", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed_cases = [r for r in results if r.rows]
    photos = [p for r in results for p in r.photos]
    n = 1 + bool(photos) if timed_cases else 1
    fig, axes = plt.subplots(1, n, figsize=(7 * n, 5.6), squeeze=False)
    if timed_cases:
        _plot_times(axes[0, 0], timed_cases)
    if photos:
        _plot_photos(axes[0, -1], photos)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


METHOD_ORDER = [
    "napari-kmeans",
    "scikit-learn KMeans n_init=1",
    "scikit-learn KMeans n_init=3",
    "OpenCV",
    "scikit-image",
]


def _method_rank(name):
    return next((i for i, m in enumerate(METHOD_ORDER) if name.startswith(m)), len(METHOD_ORDER))


def _plot_times(ax, cases):
    methods = sorted(dict.fromkeys(r.method for c in cases for r in c.rows), key=_method_rank)
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        xs, ys, est = [], [], []
        for j, c in enumerate(cases):
            row = next((r for r in c.rows if r.method == m), None)
            if row is not None:
                xs.append(j + (i - (len(methods) - 1) / 2) * width)
                ys.append(row.median)
                est.append(row.time_override is not None)
        bars = ax.bar(xs, ys, width, label=m, color=f"C{i}")
        for bar, e in zip(bars, est, strict=True):
            bar.set_hatch("//" if e else None)
        labels = [f"{y:.2g}" + (" est." if e else "") for y, e in zip(ys, est, strict=True)]
        ax.bar_label(bars, labels, fontsize=6)
    ticks = [f"case {c.case}\n{c.short or c.title}" for c in cases]
    ax.set_xticks(range(len(cases)), ticks, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("median wall time (s, log scale)")
    ax.set_title("Time per segmentation (hatched: estimated)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)


def _plot_photos(ax, photos):
    names = list(dict.fromkeys(p["photo"] for p in photos))
    for i, k in enumerate((3, 8, 16)):
        sel = [p for p in photos if p["k"] == k]
        xs = [names.index(p["photo"]) + (i - 1) * 0.2 for p in sel]
        ax.plot(xs, [p["ratio"] for p in sel], "o", color=f"C{i}", label=f"k = {k}")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(1.005, color="r", ls="--", lw=0.8, label="target: 1.005")
    ratios = [p["ratio"] for p in photos]
    ax.set_ylim(min(0.995, min(ratios) - 0.002), max(1.01, max(ratios) + 0.002))
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("our inertia / scikit-learn best of 10")
    ax.set_title("Case 5: quality on real photos (lower is better)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4)


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat (development)")
    p.add_argument("--cases", default=",".join(map(str, CASES)), help="comma-separated cases")
    p.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write docs/performance.md and the plot (default: full run of all cases)",
    )
    p.add_argument("--json", type=Path, help="also save the raw results as JSON here")
    p.add_argument("--strict", action="store_true", help="exit with status 1 if a target fails")
    p.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.cases = sorted({int(c) for c in args.cases.split(",") if c.strip()})
    except ValueError:
        p.error(f"--cases takes numbers such as 1,3; got {args.cases!r}")
    if not args.cases or not set(args.cases) <= set(CASES):
        p.error(f"--cases must be among {sorted(CASES)}, got {args.cases}")
    if args.write is None:
        args.write = not args.quick and args.cases == sorted(CASES)
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.rss_child is not None:
        rss_child_main(args.rss_child, cfg)
        return 0
    from napari_kmeans import segment

    segment(np.arange(12, dtype=np.uint8).reshape(2, 2, 3), 2)  # imports (scipy etc.) once
    commit, fingerprint = _git_commit(), engine_fingerprint()
    load, start = os.getloadavg(), cpu_counters()
    results = []
    for c in args.cases:
        print(f"\n== case {c} ==", flush=True)
        before = cpu_counters()
        res = CASES[c](cfg)
        res.others = others_cores(before, cpu_counters())
        print(f"{res.data}\n" + (photo_table(res) if res.photos else case_table(res)), flush=True)
        if res.others is not None:
            print(f"(other processes used {res.others:.2f} cores on average meanwhile)")
        results.append(res)
    end = cpu_counters()
    total, others = end[2] - start[2], others_cores(start, end)
    load_end = os.getloadavg()
    warning = load_warning(others)
    if engine_fingerprint() != fingerprint:
        warning += (
            "\n\n**The engine's source changed during this run**: the RSS subprocesses may have "
            "run newer code than the rest. Rerun for consistent numbers."
        )
        warning = warning.strip()
    info = [
        *machine(commit),
        ("load average (1, 5, 15 min)", f"start {_load(load)}; end {_load(load_end)}"),
        ("cores used by other processes", _others_text(others, results)),
        ("benchmark wall time", f"{total:.0f} s" + (" (--quick sizes)" if args.quick else "")),
    ]
    if any(r.memory for r in results):
        print("\n" + memory_table(results))
    print("\n" + targets_table(results))
    print("\n" + md_table(["", ""], info))
    if warning:
        print("\n" + warning)
    if args.quick:
        print("\n(--quick: small sizes, so the PASS/FAIL lines are indicative only)")
    if args.json:
        args.json.write_text(json.dumps(_jsonable(results, info), indent=1))
    if args.write:
        write_markdown(results, info, MD_PATH, warning)
        plot(results, PNG_PATH)
        print(f"\nwrote {MD_PATH.relative_to(ROOT)} and {PNG_PATH.relative_to(ROOT)}")
    failed = not all(t.passed for r in results for t in r.targets)
    return 1 if args.strict and failed else 0


def _others_text(others, results):
    if others is None:
        return "n/a (no /proc/stat)"
    per_case = ", ".join(f"case {r.case}: {r.others:.2f}" for r in results if r.others is not None)
    return f"{others:.2f} on average ({per_case})"


def _load(values):
    return ", ".join(f"{v:.2f}" for v in values)


def _jsonable(results, info):
    out = {"machine": dict(info), "cases": []}
    for r in results:
        out["cases"].append(
            {
                "case": r.case,
                "title": r.title,
                "data": r.data,
                "memory": r.memory,
                "rows": [
                    {
                        "method": x.method,
                        "median": x.median,
                        "times": x.times,
                        "inertia": x.inertia,
                        "note": x.note,
                    }
                    for x in r.rows
                ],
                "targets": [t.__dict__ for t in r.targets],
                "photos": [{**p, "shape": list(p["shape"])} for p in r.photos],
            }
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
