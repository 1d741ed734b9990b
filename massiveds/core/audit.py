"""Who changed a datastore and when: the ``at`` and ``by`` of the catalog's deletion and append records."""

from __future__ import annotations

import datetime
import getpass
import os
import socket


def utc_now() -> str:
    """The time now, UTC, to the second, in ISO 8601."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def who() -> str:
    """user@host of this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"
