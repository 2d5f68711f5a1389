"""Command groups of the `gateway` CLI that grew past a few lines, one module each."""
