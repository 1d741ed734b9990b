"""Several manifests built together into one datastore: one embedder, one index, dedup and decontamination across all.

Building the domains of a mix together (``massiveds build books.yaml wiki.yaml ... --out DS``) is what
makes exact and near dedup global across domains and draws the index's training sample from every
domain in proportion to its size. What must be shared is checked up front, with one clear line:

- the embedder and the index spec (one vector space, one trained quantizer); the embedder's runtime
  knobs (batch size, device, workers) are the first manifest's;
- the sparse (BM25) section: one tokenizer and one set of corpus statistics for every shard;
- the near-dedup parameters, among the manifests that enable it (one set of MinHash bands);
- the decontamination parameters, among the manifests that name eval sets. Their eval sets are
  pooled and the whole datastore is scanned against all of them: a datastore is clean against every
  eval set any of its manifests names.

Each manifest keeps its own domain, sources, filters, chunking and shard size. Documents of earlier
manifests win exact/near-duplicate ties (the priority is manifest order, then source order, then doc_id).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from massiveds.clean.decontaminate import resolve_eval_sets
from massiveds.core.errors import ManifestError
from massiveds.core.manifest import Decontaminate, Embed, Index, LoadedManifest, NearDedup, Sparse
from massiveds.core.schema import SOURCE_BITS
from massiveds.encode.embed import resolve_model


@dataclass(frozen=True)
class ManifestSet:
    """The manifests of one build, in priority order, checked to be buildable into one datastore."""

    parts: tuple[LoadedManifest, ...]
    #: the number of the first manifest's first source: an append's sources come after the datastore's documents (source 0)
    first_source: int = 0

    def __post_init__(self) -> None:
        if not self.parts:
            raise ManifestError("no manifest given; name at least one manifest file")
        paths = [p.path.resolve() for p in self.parts]
        if len(set(paths)) != len(paths):
            raise ManifestError("a manifest is named twice; name each manifest once")
        sources = self.first_source + sum(len(p.manifest.sources) for p in self.parts)
        if sources > 1 << SOURCE_BITS:
            raise ManifestError(f"{sources} sources in one build; at most {1 << SOURCE_BITS}: build in groups and `massiveds merge` them")
        _same("embed", [(p, _embed_key(p)) for p in self.parts])
        _same("index", [(p, p.manifest.index.model_dump()) for p in self.parts])
        _same("sparse", [(p, p.manifest.sparse.model_dump()) for p in self.parts])
        _same("dedup.near", [(p, p.manifest.dedup.near.model_dump()) for p in self.parts if p.manifest.dedup.near.enabled])
        _same("decontaminate (ngram, threshold, min_run)",
              [(p, p.manifest.decontaminate.model_dump(exclude={"eval_sets"})) for p in self.parts if p.manifest.decontaminate.eval_sets])

    @classmethod
    def of(cls, loaded: LoadedManifest | list[LoadedManifest], first_source: int = 0) -> ManifestSet:
        """A set of one manifest or of several (their sources numbered from ``first_source``)."""
        return cls(tuple(loaded) if isinstance(loaded, list) else (loaded,), first_source)

    @property
    def first(self) -> LoadedManifest:
        """The first manifest: its folder resolves the shared embedder's path."""
        return self.parts[0]

    @property
    def name(self) -> str:
        """The datastore's name: the manifest's name, or the names of several joined by ``+``."""
        return "+".join(dict.fromkeys(p.manifest.name for p in self.parts))

    @property
    def sha256(self) -> str:
        """Identity of the set: the manifest's hash, or a hash over the hashes of several in order."""
        if len(self.parts) == 1:
            return self.first.sha256
        return hashlib.sha256(" ".join(p.sha256 for p in self.parts).encode()).hexdigest()

    @property
    def embed(self) -> Embed:
        """The shared embedder (with the first manifest's runtime knobs)."""
        return self.first.manifest.embed

    @property
    def index(self) -> Index:
        """The shared index spec."""
        return self.first.manifest.index

    @property
    def sparse(self) -> Sparse:
        """The shared BM25 section."""
        return self.first.manifest.sparse

    @property
    def exact_dedup(self) -> list[int]:
        """Positions of the manifests whose documents take part in exact dedup."""
        return [i for i, p in enumerate(self.parts) if p.manifest.dedup.exact]

    @property
    def near_dedup(self) -> tuple[list[int], NearDedup | None]:
        """Positions of the manifests in near dedup, and its shared parameters (None when none enables it)."""
        parts = [i for i, p in enumerate(self.parts) if p.manifest.dedup.near.enabled]
        return parts, self.parts[parts[0]].manifest.dedup.near if parts else None

    @property
    def decontaminate(self) -> Decontaminate | None:
        """The shared decontamination parameters, or None when no manifest names an eval set."""
        named = [p for p in self.parts if p.manifest.decontaminate.eval_sets]
        return named[0].manifest.decontaminate if named else None

    def eval_sets(self) -> list[dict[str, Any]]:
        """Every manifest's eval sets, resolved against its own folder; a set named by several manifests counts once."""
        pooled: dict[str, dict[str, Any]] = {}
        for p in self.parts:
            for spec in resolve_eval_sets(p.manifest.decontaminate, p.base_dir):
                seen = pooled.setdefault(spec["name"], spec)
                if seen != spec:
                    raise ManifestError(f"{p.path}: eval set {spec['name']!r} differs from the one of that name in another manifest; "
                                        "give one of them another name")
        return list(pooled.values())

    def source_offsets(self) -> list[int]:
        """Global index of each manifest's first source (sources are numbered across the set, in order)."""
        offsets, total = [], self.first_source
        for p in self.parts:
            offsets.append(total)
            total += len(p.manifest.sources)
        return offsets

    def records(self) -> list[dict[str, Any]]:
        """The manifests as stored in the catalog."""
        return [p.record() for p in self.parts]


def _embed_key(loaded: LoadedManifest) -> dict[str, Any]:
    """The settings that define the vectors, with the model resolved (one local model named from two folders is one model)."""
    spec = loaded.manifest.embed.model_dump(exclude={"batch_size", "device", "workers"})
    return spec | {"model": resolve_model(spec["model"], loaded.base_dir)}


def _same(what: str, keyed: list[tuple[LoadedManifest, Any]]) -> None:
    """Refuse manifests that differ in a setting the build shares."""
    for loaded, key in keyed[1:]:
        if key != keyed[0][1]:
            first = keyed[0][0].path
            raise ManifestError(f"{loaded.path}: {what} differs from {first}'s; manifests built together must share it "
                                "(build them separately and use `massiveds merge`)")

