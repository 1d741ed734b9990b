"""The base layer: errors, the on-disk layout and formats (catalog, passages, schemas), path safety, manifests, progress display."""
