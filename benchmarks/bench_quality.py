#!/usr/bin/env python
"""Quality benchmark: accuracy against known truth of pixel values, the feature presets and the
pipeline a user would write by hand (scikit-image ``multiscale_basic_features`` + scikit-learn
``KMeans``), with times, in one run; writes ``docs/quality.md``.

    python benchmarks/bench_quality.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_quality.py --quick    # small sizes, prints only

Accuracy is the share of pixels right under the best matching of clusters to the true classes
(``scipy.optimize.linear_sum_assignment``). scikit-learn is imported here only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_kmeans import segment  # noqa: E402

MD_PATH = ROOT / "docs" / "quality.md"


def accuracy(truth: np.ndarray, labels: np.ndarray) -> float:
    k = int(max(truth.max(), labels.max())) + 1
    table = np.zeros((k, k))
    np.add.at(table, (truth.ravel(), labels.ravel()), 1)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / truth.size)


# -- cases with known truth ---------------------------------------------------------------------


def blobs(shape, snr, seed=0, anisotropy=None):
    """Bright blobs (class 1) on a background (class 0) plus Gaussian noise of std 1."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    if anisotropy is not None:
        grid *= np.asarray(anisotropy, np.float32).reshape(-1, *([1] * len(shape)))
    truth = np.zeros(shape, np.int64)
    extent = np.array(shape) * (np.ones(len(shape)) if anisotropy is None else anisotropy)
    for _ in range(max(6, int(np.prod(shape) / 4000))):
        centre = rng.uniform(0.1, 0.9, len(shape)) * extent
        radius = rng.uniform(0.04, 0.09) * extent.min() * (3 if len(shape) == 3 else 1)
        d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        truth[d2 < radius**2] = 1
    image = truth * snr + rng.normal(0, 1, shape)
    return truth, image.astype(np.float32)


def mosaic(size):
    """Brick, grass and gravel (scikit-image's bundled textures) in three vertical bands."""
    from skimage import data

    tiles = [data.brick(), data.grass(), data.gravel()]
    reps = -(-size // 512)
    image = np.zeros((size, size), np.float32)
    truth = np.zeros((size, size), np.int64)
    bounds = np.linspace(0, size, 4).astype(int)
    for i, tile in enumerate(tiles):
        big = np.tile(tile, (reps, reps))[:size, :size]
        part = np.s_[:, bounds[i] : bounds[i + 1]]
        image[part], truth[part] = big[part], i
    return truth, image


def rgb_cells(size, seed=0):
    """Three colour classes (background, cytoplasm-like, nucleus-like) with noise, RGB uint8."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size), np.int64)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(size // 25):
        cy, cx = rng.uniform(0.1, 0.9, 2) * size
        r = rng.uniform(0.04, 0.07) * size
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        truth[d2 < (2 * r) ** 2] = np.maximum(truth[d2 < (2 * r) ** 2], 1)
        truth[d2 < r**2] = 2
    colours = np.array([[235, 225, 230], [200, 120, 170], [90, 60, 150]], np.float32)
    image = colours[truth] + rng.normal(0, 45, (size, size, 3))
    return truth, np.clip(image, 0, 255).astype(np.uint8)


# -- methods ------------------------------------------------------------------------------------


def by_hand(image, k, rgb=False):
    """What a user writes today: scikit-image's feature stack, then scikit-learn's KMeans."""
    from skimage.feature import multiscale_basic_features
    from sklearn.cluster import KMeans

    feats = multiscale_basic_features(image, channel_axis=-1 if rgb else None)
    flat = feats.reshape(-1, feats.shape[-1])
    labels = KMeans(k, n_init=1, random_state=0).fit_predict(flat)
    return labels.reshape(image.shape[:-1] if rgb else image.shape)


def timed(func, repeats=1):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = func()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def peak_mb(func) -> float:
    tracemalloc.start()
    func()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def run(quick: bool):
    size = 192 if quick else 384
    vol = (16, 96, 96) if quick else (32, 160, 160)
    tex = 256 if quick else 512
    cases = [
        ("blobs 2-D, signal/noise 1", *blobs((size, size), 1.0), 2, {"smoothing": 2}, False),
        ("blobs 2-D, signal/noise 0.7", *blobs((size, size), 0.7, 1), 2, {"smoothing": 3}, False),
        (
            "blobs 3-D, z 3x coarser",
            *blobs(vol, 1.0, 2, (3, 1, 1)),
            2,
            {"smoothing": (0.7, 2, 2)},
            False,
        ),
        (
            "texture mosaic (brick, grass, gravel)",
            *mosaic(tex),
            3,
            {"features": "texture"},
            False,
        ),
        ("RGB cells with noise", *rgb_cells(size), 3, {"smoothing": 2}, True),
    ]
    rows = []
    for name, truth, image, k, preset, rgb in cases:
        layout = {"rgb": True} if rgb else {}
        raw, t_raw = timed(lambda image=image, k=k, layout=layout: segment(image, k, **layout))
        best, t_best = timed(
            lambda image=image, k=k, preset=preset, layout=layout: segment(
                image, k, **layout, **preset
            )
        )
        clean, t_clean = timed(
            lambda image=image, k=k, preset=preset, layout=layout: segment(
                image, k, **layout, **preset, majority=1, min_size=20
            )
        )
        hand, t_hand = (None, None)
        if image.ndim == 2 or rgb:
            hand, t_hand = timed(lambda image=image, k=k, rgb=rgb: by_hand(image, k, rgb))
        rows.append({
            "case": name, "preset": ", ".join(f"{a}={b}" for a, b in preset.items()),
            "values": accuracy(truth, raw.labels - 1), "t_values": t_raw,
            "preset_acc": accuracy(truth, best.labels - 1), "t_preset": t_best,
            "clean": accuracy(truth, clean.labels - 1), "t_clean": t_clean,
            "hand": None if hand is None else accuracy(truth, hand), "t_hand": t_hand,
        })  # fmt: skip
        print(rows[-1])
    return rows


def speed(quick: bool):
    """The issue's speed targets, as ratios measured in this run."""
    rng = np.random.default_rng(0)
    side = 1024 if quick else 3464  # 12 MP when not quick
    gray = ndi.gaussian_filter(rng.random((side, side), dtype=np.float32), 3)
    gray = (gray * 255).astype(np.uint8)
    _, t_smooth = timed(lambda: segment(gray, 4, smoothing=2), 3)
    _, t_gauss = timed(lambda: ndi.gaussian_filter(gray.astype(np.float32), 2), 3)
    _, t_plain = timed(lambda: segment(gray, 4), 3)
    truth, tex = mosaic(512 if quick else 2048)
    runs = 1 if quick else 3  # medians: single runs of seconds swing by 30% on shared cores
    (ours, t_tex) = timed(lambda: segment(tex, 3, features="texture"), runs)
    hand, t_hand = timed(lambda: by_hand(tex, 3), runs)
    n_features = 17
    peak = peak_mb(lambda: segment(tex, 3, features="texture"))
    bound = (n_features + 2) * tex.size * 4 / 2**20
    return {
        "smoothing_ratio": t_smooth / (t_gauss + t_plain), "t_smooth": t_smooth,
        "t_gauss": t_gauss, "t_plain": t_plain, "side": side,
        "texture_speedup": t_hand / t_tex, "t_texture": t_tex, "t_hand": t_hand,
        "texture_acc": accuracy(truth, ours.labels - 1), "hand_acc": accuracy(truth, hand),
        "texture_side": tex.shape[0], "peak_mb": peak, "bound_mb": bound,
    }  # fmt: skip


def write(rows, sp):
    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}%"

    def sec(v):
        return "–" if v is None else f"{v:.2f} s"

    lines = [
        "# Quality against known truth",
        "",
        "Produced by `benchmarks/bench_quality.py` (part of `make bench`) on "
        f"{dt.date.today()}, {platform.machine()}, Python {platform.python_version()}; "
        "accuracy is the share of pixels right under the best matching of clusters to classes.",
        "",
        "| case | pixel values | preset | with the preset | + clean-up (majority 1, min size 20) | "
        "by hand: multiscale_basic_features + KMeans |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {pct(r['values'])} ({sec(r['t_values'])}) | `{r['preset']}` | "
            f"{pct(r['preset_acc'])} ({sec(r['t_preset'])}) | {pct(r['clean'])} "
            f"({sec(r['t_clean'])}) | {pct(r['hand'])} ({sec(r['t_hand'])}) |"
        )
    lines += [
        "",
        "## Speed targets (ratios in this run)",
        "",
        "Times are medians of 3 runs.",
        "",
        f"- Smoothing a {sp['side']}² grey image (sigma 2) and segmenting it: "
        f"{sp['t_smooth']:.2f} s = **{sp['smoothing_ratio']:.2f}x** scipy's Gaussian filter "
        f"({sp['t_gauss']:.2f} s) plus plain `segment` ({sp['t_plain']:.2f} s); target <= 2x.",
        f"- Texture preset on a {sp['texture_side']}² mosaic: {sp['t_texture']:.1f} s, accuracy "
        f"{pct(sp['texture_acc'])}; by hand {sp['t_hand']:.1f} s, accuracy {pct(sp['hand_acc'])}:"
        f" **{sp['texture_speedup']:.1f}x** faster; target >= 3x at equal or better accuracy.",
        f"- Peak memory of the texture preset (tracemalloc): {sp['peak_mb']:.0f} MB; the bound "
        f"(features + 2) x the image's float32 size is {sp['bound_mb']:.0f} MB.",
        "",
    ]
    MD_PATH.write_text("\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, prints only")
    args = parser.parse_args(argv)
    rows = run(args.quick)
    sp = speed(args.quick)
    print(sp)
    if not args.quick:
        write(rows, sp)
        print(f"wrote {MD_PATH.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
