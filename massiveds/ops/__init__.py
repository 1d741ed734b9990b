"""Operations on whole datastores: verify, publish/pull, merge, merge-index, subsample, statistics, size estimates."""
