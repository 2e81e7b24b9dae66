"""A series re-encoded in each transfer syntax that Orthanc decodes, for the tests and bench/decode.py.

pydicom encodes what it can (its own writers, pyjpegls, pylibjpeg-openjpeg, its RLE encoder); dcmtk's command-line
tools encode the rest (the JPEG processes, Big Endian). A missing tool fails the calling test, naming the tool.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from tests.tools import require_tool

Encoder = Callable[[Sequence[Dataset], Path], list[Dataset]]


def to_bytes(ds: Dataset) -> bytes:
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _reread(ds: Dataset) -> Dataset:
    """The dataset as a receiver parses it from its encoded bytes."""
    return pydicom.dcmread(BytesIO(to_bytes(ds)))


def _written_as(uid: UID) -> Encoder:
    def encode(datasets: Sequence[Dataset], _work: Path) -> list[Dataset]:
        out = []
        for ds in datasets:
            ds = copy.deepcopy(ds)
            ds.file_meta.TransferSyntaxUID = uid
            out.append(_reread(ds))
        return out
    return encode


def _compressed(uid: UID, **options: object) -> Encoder:
    def encode(datasets: Sequence[Dataset], _work: Path) -> list[Dataset]:
        out = []
        for ds in datasets:
            ds = copy.deepcopy(ds)
            ds.compress(uid, **options)  # type: ignore[arg-type]
            out.append(_reread(ds))
        return out
    return encode


def _dcmtk(tool: str, *options: str) -> Encoder:
    def encode(datasets: Sequence[Dataset], work: Path) -> list[Dataset]:
        program = require_tool(tool)
        work.mkdir(parents=True, exist_ok=True)
        out = []
        for number, ds in enumerate(datasets):
            source, target = work / f"in{number}.dcm", work / f"out{number}.dcm"
            source.write_bytes(to_bytes(ds))
            done = subprocess.run([program, *options, str(source), str(target)], capture_output=True, text=True,
                                  timeout=60)
            if done.returncode != 0:
                raise RuntimeError(f"{tool} {' '.join(options)} failed: {done.stderr.strip()}")
            out.append(pydicom.dcmread(target))
            source.unlink()
            target.unlink()
        return out
    return encode


@dataclass(frozen=True)
class Syntax:
    uid: UID
    label: str  # short name for test ids and tables
    lossy: bool
    encode: Encoder = field(repr=False)
    how: str  # the encoder and, for lossy ones, the quality asked for


SYNTAXES: tuple[Syntax, ...] = (
    Syntax(ExplicitVRLittleEndian, "explicit-le", False, lambda datasets, _work: [_reread(ds) for ds in datasets],
           "as made"),
    Syntax(ImplicitVRLittleEndian, "implicit-le", False, _written_as(ImplicitVRLittleEndian), "pydicom"),
    Syntax(ExplicitVRBigEndian, "explicit-be", False, _dcmtk("dcmconv", "+tb"), "dcmconv +tb"),
    Syntax(DeflatedExplicitVRLittleEndian, "deflated", False, _written_as(DeflatedExplicitVRLittleEndian),
           "pydicom"),
    Syntax(RLELossless, "rle", False, _compressed(RLELossless), "pydicom"),
    Syntax(JPEGBaseline8Bit, "jpeg-baseline", True, _dcmtk("dcmcjpeg", "+eb", "+q", "95"),
           "dcmcjpeg +eb +q 95: 8 bits, rescaled per slice"),
    Syntax(JPEGExtended12Bit, "jpeg-extended", True, _dcmtk("dcmcjpeg", "+ee", "+q", "95"),
           "dcmcjpeg +ee +q 95: 12 bits"),
    Syntax(JPEGLossless, "jpeg-lossless", False, _dcmtk("dcmcjpeg", "+el", "+sv", "6"),
           "dcmcjpeg +el +sv 6"),
    Syntax(JPEGLosslessSV1, "jpeg-lossless-sv1", False, _dcmtk("dcmcjpeg", "+e1"), "dcmcjpeg +e1"),
    Syntax(JPEGLSLossless, "jpeg-ls", False, _compressed(JPEGLSLossless), "pydicom + pyjpegls"),
    Syntax(JPEGLSNearLossless, "jpeg-ls-near", True, _compressed(JPEGLSNearLossless, jls_error=2),
           "pydicom + pyjpegls, NEAR 2"),
    Syntax(JPEG2000Lossless, "j2k-lossless", False, _compressed(JPEG2000Lossless), "pydicom + pylibjpeg-openjpeg"),
    Syntax(JPEG2000, "j2k", True, _compressed(JPEG2000, j2k_psnr=[80]), "pydicom + pylibjpeg-openjpeg, PSNR 80 dB"),
)


def encode_series(datasets: Sequence[Dataset], syntax: Syntax, work: Path) -> list[Dataset]:
    """The series in ``syntax``, each instance as parsed back from its encoded bytes (new copies)."""
    encoded = syntax.encode(datasets, work)
    for ds in encoded:
        if ds.file_meta.TransferSyntaxUID != syntax.uid:
            raise AssertionError(f"{syntax.label}: encoded as {ds.file_meta.TransferSyntaxUID}, not {syntax.uid}")
    return encoded
