"""Deterministic, nested document sampling: keep a document at fraction p with seed s iff h(s, doc_id) < p.

``h`` is xxh3-64 of ``"<seed>\\x00<doc_id>"`` mapped to [0, 1). Because the test is a threshold on a
fixed per-document number, the 10 % sample is a subset of the 20 % one for the same seed, which is
what datastore-scaling curves need; and a query-time filter agrees exactly with a physical subsample.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import xxhash

from massiveds.core.errors import MassiveDSError

_SCALE = float(2**64)


def check_fraction(fraction: float) -> float:
    """Validate a sampling fraction: (0, 1]."""
    if not 0 < fraction <= 1:
        raise MassiveDSError(f"fraction must be in (0, 1], got {fraction}; e.g. 0.1 keeps 10 % of documents")
    return fraction


def doc_hash(doc_id: str, seed: int) -> float:
    """The document's position in [0, 1) for ``seed``."""
    return xxhash.xxh3_64_intdigest(f"{seed}\x00{doc_id}".encode()) / _SCALE


def keep_mask(doc_ids: Iterable[str], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the documents kept at ``fraction`` with ``seed``."""
    check_fraction(fraction)
    return np.array([doc_hash(d, seed) < fraction for d in doc_ids], dtype=bool)
