"""The LoRA library: SQLite index, stable IDs, scans, search and invariant checks."""
