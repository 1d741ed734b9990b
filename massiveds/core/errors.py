"""User-facing errors: one clear line that says what is wrong and what to do."""


class MassiveDSError(Exception):
    """An error the user can fix (bad manifest, missing file, wrong argument); the CLI prints it on one line."""


class ManifestError(MassiveDSError):
    """A manifest that cannot be loaded or does not validate."""


class DatastoreError(MassiveDSError):
    """A datastore directory that is missing, incomplete or inconsistent."""


class ShardsUnavailableError(DatastoreError):
    """No shard that a search needs can be read (every selected shard is missing or broken)."""


class ShardSkippedWarning(UserWarning):
    """A shard whose files are missing or unreadable was left out of a search."""
