"""The datastore an append adds to, and the checks that the new manifests can be built into it.

New shards share the datastore's vector space and BM25 scoring, so what defines them must be the
datastore's: the embedder (its model, normalisation, length and prefixes; the probe is compared once the
model is loaded), the one trained quantizer the new vectors are encoded with, and the sparse settings.
The manifests' ``index`` sections are not used: an append never trains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from massiveds.clean.deleted import DeletedDocuments
from massiveds.core.catalog import Catalog, ShardRecord
from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import ShardFiles
from massiveds.core.manifest import Sparse
from massiveds.ops.delete import deleted_documents
from pipelines.manifest_set import ManifestSet

#: Embedder settings a manifest declares that the catalog records too.
DECLARED = ("normalize", "max_length", "query_prefix", "passage_prefix")


@dataclass(frozen=True)
class Existing:
    """A datastore as an append found it: its folder and catalog."""

    root: Path
    catalog: Catalog

    @property
    def shards(self) -> list[ShardRecord]:
        """Its shards in passage id order."""
        return self.catalog.shards_by_id

    @property
    def first_id(self) -> int:
        """The first passage id after every id the datastore has used (deleted and compacted ones included)."""
        return max((s.id_end for s in self.catalog.shards), default=0)

    def first_number(self, domain: str) -> int:
        """The number of the next ``<domain>-<n>`` shard: after the highest the datastore has."""
        pattern = re.compile(rf"{re.escape(domain)}-(\d+)")
        return 1 + max((int(m.group(1)) for s in self.catalog.shards if (m := pattern.fullmatch(s.name))), default=-1)

    @cached_property
    def deleted(self) -> DeletedDocuments:
        """The documents its deletions removed: new copies of them are dropped, not appended."""
        return deleted_documents(self.root, self.catalog)

    @property
    def trained(self) -> str:
        """The trained quantizer every shard was indexed with, relative to the datastore."""
        assert self.catalog.trained_index is not None
        return self.catalog.trained_index.file

    def check(self, manifests: ManifestSet) -> None:
        """Refuse, in one line, manifests whose documents would not be comparable with the datastore's."""
        catalog, where = self.catalog, self.root
        if catalog.trained_index is None or catalog.trained_indexes:
            raise MassiveDSError(f"{where} holds shards trained with different quantizers (a merge); run `massiveds retrain {where}` "
                                 "first so that new vectors are encoded like every other")
        for shard in catalog.shards:
            if shard.trained != self.trained:
                raise MassiveDSError(f"shard {shard.name} of {where} was indexed with {shard.trained}, not {self.trained}; "
                                     f"run `massiveds retrain {where}` first")
        declared, recorded = manifests.embed, catalog.embedder
        if declared.model != recorded.model:
            raise MassiveDSError(f"{manifests.first.path}: embed.model is {declared.model!r} but {where} was embedded with "
                                 f"{recorded.model!r}; append with the datastore's embedder (or build a new datastore)")
        for name in DECLARED:  # max_length None: the model's own, which the catalog records
            if getattr(declared, name) not in (getattr(recorded, name), *([None] if name == "max_length" else [])):
                raise MassiveDSError(f"{manifests.first.path}: embed.{name} is {getattr(declared, name)!r} but {where} was embedded with "
                                     f"{getattr(recorded, name)!r}; set it as the datastore has it")
        stored = all(ShardFiles.VECTORS in s.files for s in catalog.shards)
        if declared.store_vectors != stored:
            raise MassiveDSError(f"{manifests.first.path}: embed.store_vectors is {declared.store_vectors} but {where}'s shards "
                                 f"{'hold' if stored else 'do not hold'} their vectors; set it to {stored}")
        self._check_sparse(manifests)
        self._check_eval_sets(manifests)

    def _check_eval_sets(self, manifests: ManifestSet) -> None:
        """New documents are scanned against every eval set the datastore was cleaned of: the manifests must name them all."""
        cleaned = self.catalog.build.model_dump().get("decontamination") or {}
        named = {spec["name"] for spec in manifests.eval_sets()}
        if missing := sorted(set(cleaned) - named):
            raise MassiveDSError(f"{self.root} was decontaminated against eval sets {', '.join(missing)}; name them in "
                                 f"decontaminate.eval_sets of {manifests.first.path} so the new documents are scanned against them too")

    def _check_sparse(self, manifests: ManifestSet) -> None:
        spec, recorded = manifests.sparse, self.catalog.sparse
        if recorded is None:
            if spec.enabled:
                raise MassiveDSError(f"{self.root} has no BM25 index, so new shards cannot have one; set sparse.enabled: false in "
                                     f"{manifests.first.path}")
            return
        want = Sparse(enabled=True, k1=recorded.k1, b=recorded.b, tokenizer=recorded.tokenizer)
        if spec != want:
            raise MassiveDSError(f"{manifests.first.path}: the sparse section differs from the BM25 index of {self.root} "
                                 f"(enabled, k1={recorded.k1}, b={recorded.b}, tokenizer {recorded.tokenizer.model_dump()}); "
                                 "set it as the datastore has it")
