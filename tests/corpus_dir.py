"""Where the shared test corpus lives: `../shared/corpus` by the checkout, or $GATEWAY_CORPUS."""

from __future__ import annotations

import os
from pathlib import Path

CORPUS = Path(
    os.environ.get("GATEWAY_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus"
)
