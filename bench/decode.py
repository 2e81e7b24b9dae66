"""Decode time of the chest-CT phantom (100 x 512 x 512 by default) in each transfer syntax that Orthanc decodes.

For each syntax the phantom is encoded once (not timed); then, best of --repeat runs:
- "performer": what the in-process performer does with the instances Orthanc hands it: parse them (pydicom) and
  build the volume (``model_inputs``: sort, check the geometry, decode, rescale), with the plugin pydicom picks;
- one column per pydicom decoding plugin installed: the pixel data alone, that plugin forced ("-": not one of the
  plugins for that syntax, or it failed; "fail" is printed under the table);
- with --orthanc, Orthanc's own decoder called in-process, as a plugin would: a bare Orthanc loads
  bench/orthanc_decode_probe.py, which times ``orthanc.DecodeDicomImage`` + ``GetImageBuffer`` of each instance
  inside Orthanc (parse, decode, copy to Python; no HTTP in the figure, no rescale).

    .venv/bin/python bench/decode.py [--slices 100] [--rows 512] [--repeat 3] [--orthanc]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.pixels import get_decoder

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_DIR), str(REPO_DIR / "plugin")]

from ai_orchestrator.launch_config import DEBIAN_PLUGINS  # noqa: E402
from ai_orchestrator.modeling.imaging import load_volume  # noqa: E402
from ai_orchestrator.phantom import make_chest_phantom  # noqa: E402
from tests.orthanc_server import free_port  # noqa: E402
from tests.transfer_syntaxes import SYNTAXES, to_bytes  # noqa: E402

PLUGINS = ("pylibjpeg", "gdcm", "pyjpegls", "pillow", "pydicom")


def best_of(repeat: int, run: Callable[..., object], *args: object) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def performer(blobs: list[bytes]) -> None:
    load_volume([pydicom.dcmread(BytesIO(blob)) for blob in blobs])


def first_working_plugin(ds) -> str:
    """The plugin pydicom ends up decoding ``ds`` with: the first in its order that succeeds ("native": none needed)."""
    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    if not ds.file_meta.TransferSyntaxUID.is_compressed:
        return "native"
    for plugin in decoder._available:  # pydicom's order (available_plugins is sorted by name)
        try:
            decoder.as_array(ds, decoding_plugin=plugin)
            return plugin
        except Exception:  # noqa: S112 (the next plugin is tried, as pydicom does)
            continue
    return "none"


def plugin_decode(datasets: list, plugin: str) -> None:
    decoder = get_decoder(datasets[0].file_meta.TransferSyntaxUID)
    for ds in datasets:
        decoder.as_array(ds, decoding_plugin=plugin)


class OrthancProbe:
    """A bare Orthanc (Python plugin only) running bench/orthanc_decode_probe.py."""

    def __init__(self, work: Path):
        import httpx
        work.mkdir(parents=True, exist_ok=True)
        port = free_port()
        config = {"Name": "decode-probe", "HttpPort": port, "DicomPort": free_port(), "RemoteAccessAllowed": False,
                  "StorageDirectory": str(work / "storage"), "IndexDirectory": str(work / "storage"),
                  "Plugins": [f"{DEBIAN_PLUGINS}/libOrthancPython.so"],
                  "PythonScript": str(Path(__file__).with_name("orthanc_decode_probe.py"))}
        (work / "orthanc.json").write_text(json.dumps(config))
        self.log_path = work / "orthanc.log"
        self.log = open(self.log_path, "wb")  # closed in stop()
        self.process = subprocess.Popen(["/usr/sbin/Orthanc", str(work / "orthanc.json")], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                self.client.get("/system")
                return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the probe Orthanc did not start; see {work / 'orthanc.log'}")

    def decode(self, blobs: list[bytes]) -> float:
        """Seconds Orthanc took, inside, to decode the series; RuntimeError with its message when it cannot."""
        total = 0.0
        for blob in blobs:
            answer = self.client.post("/bench/decode", content=blob).json()
            if "error" in answer:
                said = [line for line in self.log_path.read_text(errors="replace").splitlines()
                        if "cannot decode" in line or "decoder" in line.lower()]
                raise RuntimeError(said[-1].split("] ", 1)[-1] if said else answer["error"])
            total += answer["seconds"]
        return total

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.client.close()
        self.log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--orthanc", action="store_true", help="also time Orthanc's own decoder (starts an Orthanc)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-decode-"))
    phantom = make_chest_phantom(None, slices=args.slices, rows=args.rows)
    installed = [name for name in PLUGINS if any(name in get_decoder(s.uid).available_plugins for s in SYNTAXES)
                 or name == "pydicom"]
    print(f"phantom {args.slices} x {args.rows} x {args.rows}, pydicom {pydicom.__version__}, "
          f"best of {args.repeat}; seconds for the whole series")

    probe = OrthancProbe(work / "orthanc") if args.orthanc else None
    failures: list[str] = []
    rows = []
    try:
        for syntax in SYNTAXES:
            encoded = syntax.encode(phantom.datasets, work / syntax.label)
            blobs = [to_bytes(ds) for ds in encoded]
            row = {"syntax": syntax.label, "uid": str(syntax.uid), "MB": sum(map(len, blobs)) / 1e6,
                   "performer": best_of(args.repeat, performer, blobs), "by": first_working_plugin(encoded[0])}
            decoder = get_decoder(syntax.uid)
            for name in installed:
                native = not syntax.uid.is_compressed and name == "pydicom"
                if not native and name not in decoder.available_plugins:
                    continue
                try:
                    row[name] = best_of(args.repeat, plugin_decode, encoded, "" if native else name)
                except Exception as error:  # a plugin that cannot decode this data: reported, not fatal
                    failures.append(f"{syntax.label} with {name}: {str(error).splitlines()[-1]}")
            if probe is not None:
                try:
                    row["orthanc"] = min(probe.decode(blobs) for _ in range(args.repeat))
                except RuntimeError as error:
                    failures.append(f"{syntax.label} with orthanc: {error}")
            rows.append(row)
            print(f"  {syntax.label} done", file=sys.stderr)
    finally:
        if probe is not None:
            probe.stop()

    columns = ["performer", *installed, *(["orthanc"] if probe else [])]
    print(f"\n| syntax | UID | MB | performer decodes with | {' | '.join(columns)} |")
    print(f"|---|---|--:|---|{'--:|' * len(columns)}")
    for row in rows:
        cells = [f"{row[c]:.2f}" if c in row else "-" for c in columns]
        print(f"| {row['syntax']} | {row['uid']} | {row['MB']:.1f} | {row['by']} | {' | '.join(cells)} |")
    for failure in failures:
        print(f"fail: {failure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
