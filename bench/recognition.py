"""Documents per second recognised, by format, against a bare parse of the same files.

    .venv/bin/python bench/recognition.py [--corpus DIR] [--seconds 2]

The baseline is what any reader must pay at least: `lxml.etree.fromstring` for XML formats,
pypdf opening the PDF and listing its attachments for PDFs, splitting lines for CODA. Plain
PDFs (no invoice XML) are their own row: their text is extracted, which costs far more. The
gap between the two columns is our own cost (safe parsing, fact reading, the split).
Seconds are this process's CPU time, not wall time: on a machine busy with other work the
figures and their ratio stay what the code costs.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lxml import etree
from pypdf import PdfReader

from gateway.rules.columns import expected_columns
from gateway.rules.recognize import DossierFacts, recognize

DOSSIER = DossierFacts("BE0123456749", "", ("BE68539007547034",))
Baseline = Callable[[bytes], object]


def _pdf_baseline(data: bytes) -> object:
    return PdfReader(io.BytesIO(data)).attachments.keys()


def _xml_baseline(data: bytes) -> object:
    return etree.fromstring(data)


def _plain_pdfs(corpus: Path) -> set[str]:
    """The corpus PDFs that embed no invoice XML, so recognition reads their text."""
    with (corpus / "expected_facturx.csv").open(newline="", encoding="utf-8") as handle:
        return {row["path"] for row in csv.DictReader(handle) if row["kind"] != "invoice"}


def formats(corpus: Path) -> dict[str, tuple[list[Path], Baseline]]:
    def files(*folders: str) -> list[Path]:
        return sorted(p for f in folders for p in (corpus / f).glob("*") if p.is_file())

    plain = _plain_pdfs(corpus)
    pdfs = files("facturx")
    return {
        "ubl": (files("peppol-bis3", "en16931-ubl", "efff"), _xml_baseline),
        "cii": (files("en16931-cii"), _xml_baseline),
        "factur-x pdf": ([p for p in pdfs if _relative(p, corpus) not in plain], _pdf_baseline),
        "plain pdf": ([p for p in pdfs if _relative(p, corpus) in plain], _pdf_baseline),
        "coda": (files("coda"), lambda data: data.splitlines()),
        "camt.053": (files("camt"), _xml_baseline),
    }


def _relative(path: Path, corpus: Path) -> str:
    return str(path.relative_to(corpus))


def rate(files: list[bytes], work: Baseline, seconds: float) -> float:
    """Documents per CPU second over whole passes of `files`, at least one pass."""
    done, start = 0, time.process_time()
    while True:
        for data in files:
            work(data)
        done += len(files)
        elapsed = time.process_time() - start
        if elapsed >= seconds:
            return done / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    default = Path(__file__).resolve().parents[2] / "shared" / "corpus"
    parser.add_argument(
        "--corpus", type=Path, default=Path(os.environ.get("GATEWAY_CORPUS", default))
    )
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    print(f"{'format':<14}{'files':>6}{'docs/s':>10}{'baseline/s':>12}{'ms/doc':>9}{'ratio':>8}")
    for name, (paths, baseline) in formats(args.corpus).items():
        files = [p.read_bytes() for p in paths]
        if not files:
            print(f"{name:<14}{0:>6}  (no files)")
            continue
        ours = rate(files, lambda data: recognize("", "", data, DOSSIER), args.seconds)
        base = rate(files, baseline, args.seconds)
        ratio = f"{base / ours:.1f}x"
        print(f"{name:<14}{len(files):>6}{ours:>10.0f}{base:>12.0f}{1000 / ours:>9.2f}{ratio:>8}")
    print(accuracy(args.corpus))
    return 0


def accuracy(corpus: Path) -> str:
    """Rows of expected.csv / expected_facturx.csv whose facts all match, as the gate checks."""
    matched = total = 0
    for name, rename in (("expected.csv", {}), ("expected_facturx.csv", HYBRID_COLUMNS)):
        path = corpus / name
        if not path.is_file():
            continue
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row["kind"] not in ("invoice", "credit-note"):
                    continue
                data = (corpus / row["path"]).read_bytes()
                found = expected_columns(recognize("", "", data, DOSSIER).facts)
                wanted = {rename.get(key, key): value for key, value in row.items()}
                total += 1
                matched += all(found[key] == wanted[key] for key in found if key in wanted)
    return f"accuracy: {matched}/{total} expected rows match in every column"


HYBRID_COLUMNS = {
    "guideline_id": "customization_id",
    "seller_vat": "supplier_vat",
    "buyer_vat": "customer_vat",
}


if __name__ == "__main__":
    sys.exit(main())
