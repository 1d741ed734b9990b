"""Document cleaning: normalisation, quality filters, deduplication."""
