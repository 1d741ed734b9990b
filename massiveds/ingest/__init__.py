"""Getting text in: sources (local, http, s3, hf) and extraction of documents from every input format."""
