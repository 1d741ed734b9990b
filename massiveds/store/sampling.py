"""Deterministic, nested document sampling: keep a document at fraction p with seed s iff h(s, doc_id) < p.

``h`` is xxh3-64 of ``"<seed>\\x00<doc_id>"`` mapped to [0, 1). Because the test is a threshold on a
fixed per-document number, the 10 % sample is a subset of the 20 % one for the same seed, which is
what datastore-scaling curves need; and a query-time filter agrees exactly with a physical subsample.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def doc_positions(doc_ids: Sequence[str], seed: int) -> np.ndarray:
    """Each document's position in [0, 1) for ``seed`` (kept at fraction p iff below p); repeated ids hashed once."""
    unique, inverse = np.unique(np.asarray(doc_ids, dtype=object), return_inverse=True)
    return np.array([doc_hash(d, seed) for d in unique.tolist()], dtype=np.float64)[inverse.reshape(-1)]


def keep_mask(doc_ids: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the documents kept at ``fraction`` with ``seed``."""
    check_fraction(fraction)
    return doc_positions(doc_ids, seed) < fraction
