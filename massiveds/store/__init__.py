"""The read side: an open datastore, search and its options, post-processing, sampling, recall, the HTTP server."""
