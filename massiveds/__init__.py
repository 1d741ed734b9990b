"""massiveds: build, search and study trillion-token retrieval datastores.

``massiveds.open(path).search(queries, k=10)`` searches a built datastore; the ``massiveds``
command builds one from a manifest (see README.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from massiveds.store.datastore import Datastore


def open(path: Any) -> Datastore:  # noqa: A001 - the documented API is massiveds.open(path)
    """Open a built datastore for search (imports FAISS and the datastore code on first use)."""
    from massiveds.store.datastore import Datastore

    return Datastore.open(path)
