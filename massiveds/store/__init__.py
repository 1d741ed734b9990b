"""The read side: an open datastore, its shards and merged index, search and its options, fusion, post-processing, sampling."""
