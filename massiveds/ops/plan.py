"""What a datastore needs before it is built: the index for its number of vectors, exact Flat beside it, and the build's cost.

``massiveds plan`` renders it; the vectors default to the passages the manifests' sources state (``ops.estimate``)
and the dimension to the first manifest's embedder, read without loading it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from massiveds.core.errors import MassiveDSError
from massiveds.core.manifest import Index, LoadedManifest
from massiveds.encode.embed import declared_dimension
from massiveds.encode.index import PlanReport, flat_report, plan_report
from massiveds.ops.estimate import H100_EMBED_PASSAGES_PER_S, BuildEstimate, SourceEstimate, build_estimate, estimate

#: Dimensions of a few common embedders, so ``massiveds plan MANIFEST`` needs no --dim for them.
KNOWN_DIMS = {
    "all-MiniLM-L6-v2": 384,
    "sentence-transformers/all-MiniLM-L6-v2": 384,
    "facebook/contriever": 768,
    "facebook/contriever-msmarco": 768,
    "intfloat/e5-base-v2": 768,
    "intfloat/e5-large-v2": 1024,
    "BAAI/bge-base-en-v1.5": 768,
}
#: The dimension planned for when no manifest names an embedder: the default model's (all-MiniLM-L6-v2).
DEFAULT_DIM = 384


@dataclass(frozen=True)
class DatastorePlan:
    """The index planned for each number of vectors, exact Flat for each, and what embedding the manifests' sources takes."""

    sources: list[SourceEstimate]
    model: str | None
    dim: int
    plans: list[PlanReport]
    flats: list[PlanReport]
    build: BuildEstimate | None

    def source_totals(self) -> tuple[int, int, int]:
        """Documents, tokens and passages over every source; a size its manifest does not state counts as 0."""
        return (sum(e.documents or 0 for e in self.sources), sum(e.tokens or 0 for e in self.sources),
                sum(e.passages or 0 for e in self.sources))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``massiveds plan --json``)."""
        return {
            "sources": [e.to_dict() for e in self.sources],
            "build": None if self.build is None else self.build.to_dict() | {"model": self.model, "dim": self.dim},
            "plans": [r.to_dict() for r in self.plans],
            "flat": [f.to_dict() for f in self.flats],
        }


def embedding_dimension(model: str | None, base_dir: Path | None = None) -> int:
    """The size of ``model``'s vectors without loading it: a known model's, else what its local folder declares."""
    if model is None:
        return DEFAULT_DIM
    dim = KNOWN_DIMS.get(model) or declared_dimension(model, base_dir)
    if dim is None:
        raise MassiveDSError(f"the dimension of {model!r} is not known here (not a local model folder); give it with --dim")
    return dim


def plan_datastore(manifests: Sequence[LoadedManifest] = (), counts: Sequence[int] | None = None, dim: int | None = None,
                   memory_gb: float | None = None, embed_rate: float | None = None) -> DatastorePlan:
    """Plan the index for each of ``counts`` vectors (default: the manifests' stated passages) under the first manifest's spec.

    ``dim`` defaults to the first manifest's embedder's, ``memory_gb`` to its ``index.memory_budget_gb`` and
    ``embed_rate`` (passages/s per GPU) to ``H100_EMBED_PASSAGES_PER_S``.
    """
    spec, model, folder = Index(), None, None
    if manifests:
        first = manifests[0]
        spec, model, folder = first.manifest.index, first.manifest.embed.model, first.path.parent
    sources = [e for m in manifests for e in estimate(m)]
    build = build_estimate(sources, embed_rate or H100_EMBED_PASSAGES_PER_S) if sources else None
    if counts is None:
        if build is None or not build.passages:
            raise MassiveDSError("give the number of vectors with --vectors N (e.g. --vectors 100M), or manifests with estimated sizes")
        counts = [build.passages]
    dim = embedding_dimension(model, folder) if dim is None else dim
    budget = memory_gb if memory_gb is not None else spec.memory_budget_gb
    plans = [plan_report(n, dim, spec, memory_gb) for n in counts]
    return DatastorePlan(sources, model, dim, plans, [flat_report(n, dim, budget) for n in counts], build)
