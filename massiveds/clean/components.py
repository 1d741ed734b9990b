"""Connected components by alternating large-star / small-star steps (Kiveris et al., SoCC 2014).

The graph is kept as *directed rows* ``(node, nbr)``, each undirected edge stored once in each
direction, so that a partition holding ``hash(node) == p`` sees every neighbour of its nodes. One
step is a group-by-node over one partition's rows (sorted numpy arrays, no per-node Python):

* **large-star** at ``u``: ``m = min(Γ(u) ∪ {u})``; every *larger* neighbour ``v > u`` is re-linked
  to ``m``: emit ``{v, m}``.
* **small-star** at ``u``: ``N = {v ∈ Γ(u) : v < u}``; if ``N`` is not empty, ``m = min N``; emit
  ``{v, m}`` for ``v ∈ N ∪ {u}``, ``v ≠ m``.

Both steps preserve connectivity and shrink it towards stars; O(log² n) rounds of the pair suffice
(in practice a few for LSH graphs, which start as stars). The graph is *settled* when every node
has at most one smaller neighbour and a node with a smaller neighbour has no larger one: then every
component is a star centred on its minimum, and each non-centre row ``(v, m)`` with ``m < v``
names ``v``'s component (the minimum ``_ord`` in it). Memory per step is the rows of one partition.
"""

from __future__ import annotations

import numpy as np

_EMPTY = np.zeros(0, np.int64)


def directed(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both directions of the undirected edges ``{a_i, b_i}``, self-loops dropped."""
    keep = a != b
    a, b = a[keep], b[keep]
    return np.concatenate([a, b]).astype(np.int64), np.concatenate([b, a]).astype(np.int64)


def _grouped(node: np.ndarray, nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique rows sorted by (node, nbr), and the index of each row's group start."""
    if len(node) == 0:
        return _EMPTY, _EMPTY, _EMPTY
    pairs = np.unique(np.stack([node, nbr], axis=1).astype(np.int64), axis=0)
    node, nbr = pairs[:, 0], pairs[:, 1]
    first = np.concatenate([[True], node[1:] != node[:-1]])
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(node)), 0))
    return node, nbr, group_start


def unsettled(node: np.ndarray, nbr: np.ndarray) -> int:
    """Nodes with two smaller neighbours, or with both a smaller and a larger one (0 = all components are stars)."""
    node, nbr, _ = _grouped(node, nbr)
    if len(node) == 0:
        return 0
    ids, inverse = np.unique(node, return_inverse=True)
    smaller = np.bincount(inverse, weights=nbr < node, minlength=len(ids))
    larger = np.bincount(inverse, weights=nbr > node, minlength=len(ids))
    return int(np.sum((smaller >= 2) | ((smaller >= 1) & (larger >= 1))))


def large_star(node: np.ndarray, nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One large-star step over rows grouped by node; returns undirected edges ``(v, m)``."""
    node, nbr, start = _grouped(node, nbr)
    if len(node) == 0:
        return _EMPTY, _EMPTY
    m = np.minimum(nbr[start], node)  # rows are sorted by nbr within a group: the first is the smallest
    larger = nbr > node
    return nbr[larger], m[larger]


def small_star(node: np.ndarray, nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One small-star step over rows grouped by node; returns undirected edges ``(v, m)``."""
    node, nbr, start = _grouped(node, nbr)
    if len(node) == 0:
        return _EMPTY, _EMPTY
    m = nbr[start]  # smallest neighbour; it is smaller than the node iff the node has any smaller neighbour
    smaller = nbr < node
    others = smaller & (nbr != m)
    has_smaller = smaller & (np.arange(len(node)) == start)  # one row per node that has a smaller neighbour
    a = np.concatenate([nbr[others], node[has_smaller]])
    b = np.concatenate([m[others], m[has_smaller]])
    return a, b


def star_members(node: np.ndarray, nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """In a settled graph: ``(member, centre)`` for every non-centre node, sorted by member."""
    keep = nbr < node
    member, centre = node[keep], nbr[keep]
    pairs = np.unique(np.stack([member, centre], axis=1), axis=0) if len(member) else np.zeros((0, 2), np.int64)
    if len(pairs) and np.any(pairs[1:, 0] == pairs[:-1, 0]):
        raise ValueError("graph is not settled: a node has two smaller neighbours")
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
