"""Pure document recognition: bytes and dossier facts in, a document type or a reason out."""
