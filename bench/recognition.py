"""Documents per second recognised, by format, against a bare parse of the same files.

    .venv/bin/python bench/recognition.py [--corpus DIR] [--seconds 2]

The baseline is what any reader must pay at least: `lxml.etree.fromstring` for XML formats,
pypdf opening the PDF and listing its attachments for hybrids, splitting lines for CODA. The
gap between the two columns is our own cost (safe parsing, fact reading, the split).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lxml import etree
from pypdf import PdfReader

from gateway.rules.recognize import DossierFacts, recognize

DOSSIER = DossierFacts("BE0123456749", "", ("BE68539007547034",))
FORMATS: dict[str, tuple[str, Callable[[bytes], object]]] = {
    "ubl": ("peppol-bis3 en16931-ubl efff", lambda data: etree.fromstring(data)),
    "cii": ("en16931-cii", lambda data: etree.fromstring(data)),
    "factur-x pdf": ("facturx", lambda data: PdfReader(io.BytesIO(data)).attachments.keys()),
    "coda": ("coda", lambda data: data.splitlines()),
    "camt.053": ("camt", lambda data: etree.fromstring(data)),
}


def rate(files: list[bytes], work: Callable[[bytes], object], seconds: float) -> float:
    """Documents per second over whole passes of `files`, at least one pass."""
    done, start = 0, time.perf_counter()
    while True:
        for data in files:
            work(data)
        done += len(files)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    default = (
        os.environ.get("GATEWAY_CORPUS") or Path(__file__).resolve().parents[2] / "shared/corpus"
    )
    parser.add_argument("--corpus", type=Path, default=Path(default))
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    print(f"{'format':<14}{'files':>6}{'docs/s':>10}{'baseline/s':>12}{'ms/doc':>9}{'ratio':>8}")
    for name, (folders, baseline) in FORMATS.items():
        paths = sorted(
            p for folder in folders.split() for p in (args.corpus / folder).glob("*") if p.is_file()
        )
        files = [
            p.read_bytes() for p in paths if name != "cii" or b"testSet" not in p.read_bytes()[:600]
        ]
        if not files:
            print(f"{name:<14}{0:>6}  (no files)")
            continue
        ours = rate(files, lambda data: recognize("", "", data, DOSSIER), args.seconds)
        base = rate(files, baseline, args.seconds)
        ratio = f"{base / ours:.1f}x"
        print(f"{name:<14}{len(files):>6}{ours:>10.0f}{base:>12.0f}{1000 / ours:>9.2f}{ratio:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
