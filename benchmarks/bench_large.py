#!/usr/bin/env python
"""Large-data benchmark: labelling a uint16 zarr volume bigger than memory should be, with dask.

Writes a synthetic 16-bit volume (cells on an uneven background, with noise) to a zarr store on
disk, then, each in a fresh subprocess so that nothing else counts towards its memory:

- **lazy, large**: ``segment_lazy`` on the on-disk volume (``--size`` GB, default 4) and the
  labels written to another zarr store, block by block;
- **lazy, small** and **in memory, small**: the same on a smaller volume (``--small`` GB), the
  in-memory run loading it into RAM first and calling ``segment``; their labels are compared;
- **CLI, OME-Zarr**: the large volume made an OME-Zarr 0.5 image (the same array moved into a
  group with ``multiscales`` metadata, 0.5 x 0.2 x 0.2 µm voxels) and segmented by
  ``napari-kmeans segment``, which writes NGFF labels and a recoloured image, each with a
  pyramid: the memory bound of the lazy run should hold, and the labels equal its labels.

It reports wall time, throughput (input MB/s) and the process's peak resident memory (VmHWM)
for each, with a PASS/FAIL line for the target (peak < 1.5 GB for the large run).

    python benchmarks/bench_large.py                  # 4 GB volume, ~10 min on 2 cores
    python benchmarks/bench_large.py --size 0.5       # a quick run
    python benchmarks/bench_large.py --write          # also update docs/large-data.md

``--write`` replaces the table between the ``bench_large`` markers in ``docs/large-data.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "large-data.md"
MB = 1 << 20
GB = 1 << 30
PLANE = (1024, 1024)
CHUNKS = (32, 512, 512)  # 16 MB of uint16 per chunk
TARGET_GB = 1.5
K = 4


def make_volume(path: Path, size_gb: float, seed: int = 0) -> tuple[int, ...]:
    """Write a ``(planes, 1024, 1024)`` uint16 zarr volume of about ``size_gb`` GB, chunk by chunk."""
    import zarr

    planes = max(CHUNKS[0], round(size_gb * GB / (2 * PLANE[0] * PLANE[1]) / CHUNKS[0]) * CHUNKS[0])
    shape = (planes, *PLANE)
    z = zarr.create_array(path, shape=shape, chunks=CHUNKS, dtype="u2", overwrite=True)
    yy, xx = np.mgrid[0 : PLANE[0], 0 : PLANE[1]].astype(np.float32) / PLANE[0]
    background = 800 + 400 * (xx + yy)  # uneven illumination
    cells = (np.sin(yy * 37) * np.sin(xx * 41) > 0.6).astype(np.float32)  # bright cell bodies
    nuclei = (np.sin(yy * 37) * np.sin(xx * 41) > 0.9).astype(np.float32)
    for z0 in range(0, planes, CHUNKS[0]):
        rng = np.random.default_rng([seed, z0])
        n = min(CHUNKS[0], planes - z0)
        shift = (np.arange(z0, z0 + n) % 64)[:, None, None]  # cells move from plane to plane
        signal = background + 1500 * cells + 2500 * nuclei
        block = np.broadcast_to(signal, (n, *PLANE)) + 3 * shift
        block = block + rng.normal(0, 60, block.shape).astype(np.float32)
        z[z0 : z0 + n] = np.clip(block, 0, 65535).astype(np.uint16)
    return shape


def _peak_rss_mb() -> float:
    """The process's resident-memory high-water mark (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, src: str, out: str) -> dict:
    """One measured run (in its own process); returns times, memory and a labels checksum."""
    import dask.array as da
    import zarr

    from napari_kmeans import segment
    from napari_kmeans.lazy import segment_lazy

    base = _peak_rss_mb()
    t0 = time.perf_counter()
    if mode == "ngff":  # the command line on an OME-Zarr image: NGFF outputs, pyramids
        from napari_kmeans import KMeansModel
        from napari_kmeans.cli import main as cli_main

        code = cli_main(["segment", src, "-k", str(K), "--out", out, "-q"])
        total = time.perf_counter() - t0
        stem = Path(src).name.split(".")[0]
        labels = zarr.open_group(str(Path(out) / f"{stem}_labels.zarr"), mode="r")["0"]
        model = KMeansModel.load(Path(out) / f"{stem}_model.json")
        checksum = int(np.bincount(np.asarray(labels[::7, ::5, ::3]).ravel()).dot(np.arange(K + 1)))
        return {
            "mode": mode, "exit": code, "seconds": total, "fit_seconds": float("nan"),
            "peak_mb": _peak_rss_mb(), "base_mb": base, "counts": [],
            "centers": [float(c) for c in model.centers.ravel()], "checksum": checksum,
        }  # fmt: skip
    if mode == "lazy":
        result = segment_lazy(da.from_zarr(src), K)
        t_fit = time.perf_counter() - t0
        result.labels.to_zarr(out, overwrite=True)
        labels = zarr.open_array(out, mode="r")
    else:
        image = zarr.open_array(src, mode="r")[:]
        t_load = time.perf_counter() - t0
        result = segment(image, K)
        t_fit = time.perf_counter() - t0 - t_load
        labels = result.labels
        zarr.save_array(out, labels)
    total = time.perf_counter() - t0
    checksum = int(np.bincount(np.asarray(labels[::7, ::5, ::3]).ravel()).dot(np.arange(K + 1)))
    return {
        "mode": mode,
        "seconds": total,
        "fit_seconds": t_fit,
        "peak_mb": _peak_rss_mb(),
        "base_mb": base,
        "counts": [int(c) for c in result.counts],
        "centers": [float(c) for c in result.centers.ravel()],
        "checksum": checksum,
    }


def make_ome_zarr(volume: Path, image: Path) -> None:
    """Make the zarr array ``volume`` the full-resolution level of an OME-Zarr 0.5 image at
    ``image`` (moved, not copied: no second copy on disk)."""
    import zarr

    image.mkdir()
    volume.rename(image / "0")
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    scale = {"type": "scale", "scale": [0.5, 0.2, 0.2]}
    multiscale = {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": [scale]}]}
    group = zarr.open_group(str(image), mode="a", zarr_format=3)
    group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}


def run_child(mode: str, src: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(src), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(name, size_bytes, res) -> str:
    mbps = size_bytes / MB / res["seconds"]
    fit = res["fit_seconds"]
    fit = "-" if fit != fit else f"{fit:.1f} s"  # NaN: the CLI's run is not split
    return (
        f"| {name} | {size_bytes / GB:.2f} GB | {res['seconds']:.1f} s | {fit} "
        f"| {mbps:.0f} MB/s | {res['peak_mb']:.0f} MB |"
    )


def report(size_gb, small_gb, large, small_lazy, small_mem, shapes, cli=None) -> str:
    nbytes = [int(np.prod(s)) * 2 for s in shapes]
    lines = [
        f"Volume {shapes[0]} uint16 ({nbytes[0] / GB:.2f} GB) and {shapes[1]} "
        f"({nbytes[1] / GB:.2f} GB) in zarr chunks {CHUNKS}, k = {K}; "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.",
        "",
        "| run | input | total | segment call | throughput | peak memory (VmHWM) |",
        "|---|---|---|---|---|---|",
        _row("lazy (dask), on disk", nbytes[0], large),
        _row("lazy (dask), on disk", nbytes[1], small_lazy),
        _row("in memory (`segment`)", nbytes[1], small_mem),
        *(
            [_row("CLI, OME-Zarr 0.5 -> NGFF labels + recoloured, pyramids", nbytes[0], cli)]
            if cli
            else []
        ),
        "",
        "Total: read the volume, fit, label and write the labels to zarr (throughput = input "
        "size / total). Segment call: `segment_lazy` only fits (labels stay lazy); the in-memory "
        "`segment` fits, labels and recolours the loaded volume. Peak memory is the whole "
        f"process's, with the interpreter and libraries ({large['base_mb']:.0f} MB after "
        "imports); the in-memory run holds the volume, its labels and its recoloured copy. "
        "CLI: `napari-kmeans segment` on the large volume as an OME-Zarr image (fit, then "
        "labels, recoloured image and their nearest-neighbour pyramids written as NGFF).",
    ]
    return "\n".join(lines)


def write_doc(table: str):
    text = DOC.read_text()
    start, end = "<!-- bench_large:start -->", "<!-- bench_large:end -->"
    a, b = text.index(start) + len(start), text.index(end)
    DOC.write_text(text[:a] + "\n" + table + "\n" + text[b:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=float, default=4.0, help="large volume, GB (default 4)")
    parser.add_argument("--small", type=float, default=0.5, help="small volume, GB (default 0.5)")
    parser.add_argument("--dir", type=Path, help="where to write the zarr stores (default: temp)")
    parser.add_argument("--write", action="store_true", help="update docs/large-data.md")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench_large_", dir=args.dir))
    try:
        t0 = time.perf_counter()
        shapes = [
            make_volume(work / "large.zarr", args.size),
            make_volume(work / "small.zarr", args.small),
        ]
        print(f"wrote volumes {shapes} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        large = run_child("lazy", work / "large.zarr", work / "large_labels.zarr")
        small_lazy = run_child("lazy", work / "small.zarr", work / "small_lazy.zarr")
        small_mem = run_child("memory", work / "small.zarr", work / "small_mem.zarr")
        shutil.rmtree(work / "large_labels.zarr")
        make_ome_zarr(work / "large.zarr", work / "large.ome.zarr")
        cli = run_child("ngff", work / "large.ome.zarr", work / "cli_out")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    same = (
        small_lazy["checksum"] == small_mem["checksum"]
        and small_lazy["counts"] == small_mem["counts"]
    )
    table = report(args.size, args.small, large, small_lazy, small_mem, shapes, cli)
    print(table)
    ok = large["peak_mb"] < TARGET_GB * 1024
    cli_ok = cli["exit"] == 0 and cli["peak_mb"] < TARGET_GB * 1024
    same_cli = cli["checksum"] == large["checksum"]
    print(f"\nlazy labels equal in-memory labels (small volume): {'yes' if same else 'NO'}")
    print(f"CLI (OME-Zarr) labels equal lazy labels (large volume): {'yes' if same_cli else 'NO'}")
    print(f"{'PASS' if ok else 'FAIL'}: peak memory {large['peak_mb']:.0f} MB < {TARGET_GB} GB")
    print(f"{'PASS' if cli_ok else 'FAIL'}: CLI on OME-Zarr, exit {cli['exit']}, peak memory "
          f"{cli['peak_mb']:.0f} MB < {TARGET_GB} GB")  # fmt: skip
    if args.write:
        write_doc(table)
        print(f"updated {DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0 if ok and same and cli_ok and same_cli else 1


if __name__ == "__main__":
    sys.exit(main())
