"""The read side: an open datastore, its shard set (id routing, passages, tombstones), the dense and BM25 retrievers
over it, search and its options, fusion, post-processing, sampling."""
