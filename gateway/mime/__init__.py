"""MIME: a raw message taken apart into the files that are documents, and its headers.

`extract`/`extract_to_blobs` stream a message into its leaves (`walk`, over `lines`, bodies
decoded into `body`), and say which are documents (`classify`); `message` and
`plain_headers` read the headers a message row records.
"""

from gateway.mime.extract import (
    Extraction,
    Part,
    Quarantine,
    Skipped,
    StoredPart,
    extract,
    extract_to_blobs,
)
from gateway.mime.message import Headers, header_block_size, header_values, headers, parse

__all__ = [
    "Extraction",
    "Headers",
    "Part",
    "Quarantine",
    "Skipped",
    "StoredPart",
    "extract",
    "extract_to_blobs",
    "header_block_size",
    "header_values",
    "headers",
    "parse",
]
