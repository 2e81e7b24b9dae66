"""One multi-frame CT instance into a volume: the plugin's loader (``load_volume``, which dispatches to
``modeling.multiframe``) against highdicom's ``Image.from_dataset(ds).get_volume()``, on the chest-CT phantom
(100 x 512 x 512 by default) as a Legacy Converted Enhanced CT (highdicom's converter: frames in order, rescale
shared) and as an Enhanced CT (frames shuffled, rescale and orientation per frame).

Each figure is the median of --repeat runs, the two loaders interleaved; each run parses the instance afresh
(parsing not timed), so no decoded pixels are reused. Both answers are checked to hold the same voxels.

    .venv/bin/python bench/multiframe.py [--slices 100] [--rows 512] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_DIR), str(REPO_DIR / "plugin")]

from ai_orchestrator.modeling.imaging import load_volume  # noqa: E402
from ai_orchestrator.phantom import make_chest_phantom  # noqa: E402
from tests.enhanced_ct import enhanced_ct, legacy_converted  # noqa: E402


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _timed(blob: bytes, load) -> tuple[float, np.ndarray]:
    ds = pydicom.dcmread(BytesIO(blob))
    start = time.perf_counter()
    voxels = load(ds)
    return time.perf_counter() - start, voxels


def ours(ds: pydicom.Dataset) -> np.ndarray:
    return load_volume([ds]).hu


def highdicom(ds: pydicom.Dataset) -> np.ndarray:
    volume = hd.Image.from_dataset(ds, copy=False).get_volume(dtype=np.float32)
    # highdicom stacks in its own direction (head first for these): ours ascends along the slice normal
    return volume.array[::-1] if volume.affine[2, 0] < 0 else volume.array


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    phantom = make_chest_phantom(slices=args.slices, rows=args.rows)
    print(f"{args.slices} x {args.rows} x {args.rows}, median of {args.repeat} runs")
    print(f"{'form':<36}{'load_volume':>12}{'highdicom':>12}{'ratio':>8}")
    for name, make in (("Legacy Converted Enhanced CT", legacy_converted), ("Enhanced CT (shuffled, per-frame)",
                                                                            enhanced_ct)):
        blob = _bytes(make(phantom.datasets))
        times: dict[str, list[float]] = {"ours": [], "highdicom": []}
        for _ in range(args.repeat):
            seconds, mine = _timed(blob, ours)
            times["ours"].append(seconds)
            seconds, theirs = _timed(blob, highdicom)
            times["highdicom"].append(seconds)
            if not np.array_equal(mine, theirs):
                raise SystemExit(f"{name}: the two loaders disagree")
        a, b = statistics.median(times["ours"]), statistics.median(times["highdicom"])
        print(f"{name:<36}{a:>11.3f}s{b:>11.3f}s{b / a:>7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
