"""The datastore catalog (``datastore.json``) as typed records; read it, check every path it names, write it back.

``open_catalog`` is the one way the commands that read a datastore (search, serve, inspect, verify,
subsample, merge, merge-index, publish) get its catalog: it refuses a folder that is not a
datastore, an unreadable or malformed catalog, and any path that would lead outside the datastore
(``massiveds.core.safe_paths``), so a crafted datastore fails before a single file is read.

The records are pydantic models. A record is written back with exactly the keys it was read or made
with, in their order: a field a catalog lacks stays absent (a default is never written), an
explicit ``null`` stays ``null``, and a field set later comes after the others (as ``dict | {...}``
would put it). So a catalog read and written back is the same JSON, and ``write_catalog`` is the one
writer of ``datastore.json`` outside the build. Records are closed (an unknown field is an error)
except where the build stores open-ended content: the ``build`` record, the manifests, ``chunk``
and ``recall``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import ErrorDetails
from typing_extensions import Self

from massiveds.core.errors import DatastoreError
from massiveds.core.layout import CATALOG, FORMAT_VERSION, TRAINED_INDEX, atomic_path, file_record
from massiveds.core.manifest import SparseTokenizer
from massiveds.core.safe_paths import UnsafePathError, check_name, check_relpath, inside, safe_join
from massiveds.core.writer_lock import require_writer

CHECKSUMS = "checksums.json"
#: The folder of the dedup index's files (``DedupIndexRecord``).
DEDUP_DIR = "dedup"
#: The folder of a shard ``massiveds compact`` rewrote: a new folder for every rewrite, so a reader never sees one half-swapped.
COMPACTED = re.compile(r"shards/(.+)\.v([1-9][0-9]*)")

#: A JSON number as written: an int stays an int (``1``, not ``1.0``), so a catalog written back is the same text.
Measure: TypeAlias = int | float


class Record(BaseModel):
    """A catalog record: strict JSON types, no unknown field, immutable; written back with its own keys in their order."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    _keys: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_keys(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        record = handler(data)
        if isinstance(data, dict):
            record._keys = tuple(data)
        return record

    @model_serializer(mode="wrap")
    def _in_order(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        return {k: out[k] for k in self._keys if k in out} | out

    def as_json(self) -> dict[str, Any]:
        """The record as stored: the fields it was read or made with (none added, nulls kept), in their order."""
        return self.model_dump(mode="json", exclude_unset=True)

    def but(self, drop: Iterable[str] = (), **changes: Any) -> Self:
        """A copy without the fields ``drop`` and with ``changes``, validated; keys ordered as ``{...without drop} | changes`` orders them.

        A field kept keeps its place, a new (or dropped) one comes last; a dropped field left unset is absent from the JSON.
        """
        dropped = set(drop)
        kept = {k: v for k, v in self.as_json().items() if k not in dropped}
        return self.model_validate(kept | changes)


class OpenRecord(Record):
    """A record of open-ended content the build writes: its unknown fields are kept as they are."""

    model_config = ConfigDict(extra="allow")


class FileRecord(Record):
    """Size and sha256 of one datastore file."""

    bytes: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> FileRecord:
        """The record of the file at ``path``."""
        return cls.model_validate(file_record(path))


class TrainedIndexRecord(Record):
    """A trained, empty index beside the catalog: its path relative to the datastore, size and sha256."""

    file: str
    bytes: int
    sha256: str

    @classmethod
    def of(cls, root: Path, rel: str) -> TrainedIndexRecord:
        """The record of ``root / rel``."""
        return cls.model_validate({"file": rel} | file_record(root / rel))


class ListBalance(Record):
    """Inverted-list balance of a shard's IVF index (``massiveds.encode.index.list_balance``)."""

    max_list: int
    mean_list: Measure
    empty_lists: int
    imbalance: Measure


class ShardOrigin(Record):
    """Where a merged shard came from: its source datastore's name and its name there."""

    datastore: str
    shard: str


class ShardSpan(BaseModel):
    """What names a shard: its name, its domain, and its passages' ids ``[id_start, id_start + count)``.

    Declared once: the catalog's ``ShardRecord``, a planned shard (``massiveds.encode.sharding``) and the build's work
    item for a shard (``pipelines.stages.shard.ShardItem``) each add their own fields to it.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    domain: str
    id_start: int
    count: int


class ShardRecord(Record, ShardSpan):
    """One shard: passage ids ``[id_start, id_start + count)``, its files, and what a merge or subsample adds."""

    list_balance: ListBalance | None = None
    files: dict[str, FileRecord] = {}
    tokens: int = 0
    #: Documents whose first passage is in the shard (written by subsample and merge --copy).
    documents: int | None = None
    #: Folder of a shard merged in place, relative to the datastore (may climb out of it), or of a compacted shard
    #: (``shards/<name>.v<n>``); absent: ``shards/<name>``.
    folder: str | None = None
    #: Added to the ids stored in the shard's files to give the datastore's (a shard merged in place keeps its source's ids).
    id_offset: int = 0
    #: The trained index the shard was built from, relative to the datastore.
    trained: str = TRAINED_INDEX
    #: The shard's default nprobe (a merge keeps each source's); absent: the catalog's.
    nprobe: int | None = None
    merged_from: ShardOrigin | None = None
    #: Passages deleted (``massiveds delete``) but still in the shard's files: rows listed in its ``deleted.npy``.
    deleted: int = 0
    #: Ids the shard covers, ``[id_start, id_start + id_span)``, when ``massiveds compact`` left gaps (its rows' ids are in
    #: ``ids.npy``); absent: ``count``, every id of the range is a row.
    id_span: int | None = None

    @property
    def id_end(self) -> int:
        """One past the shard's last passage id."""
        return self.id_start + (self.id_span if self.id_span is not None else self.count)

    @property
    def generation(self) -> int:
        """How many times ``massiveds compact`` rewrote the shard: its folder is ``shards/<name>.v<generation>`` (0: ``shards/<name>``)."""
        found = COMPACTED.fullmatch(self.folder or "")
        return int(found.group(2)) if found and found.group(1) == self.name else 0

    @property
    def elsewhere(self) -> bool:
        """Whether the shard's folder is another datastore's (merged in place), not one of this datastore's ``shards/``."""
        return self.folder is not None and not self.generation

    def folder_rel(self) -> str:
        """The shard's folder relative to the datastore: ``shards/<name>``, or the ``folder`` it references (names checked)."""
        name = check_name(self.name, "shard name")
        if self.folder is None:
            return f"shards/{name}"
        return check_relpath(self.folder, f"shard {name}: folder", parent_steps=True)

    def trained_rel(self) -> str:
        """The trained index the shard was built from, relative to the datastore (checked)."""
        return check_relpath(self.trained, f"shard {self.name}: trained index")

    @property
    def stored_id_start(self) -> int:
        """First passage id stored in the shard's own files: ``id_start - id_offset``."""
        return self.id_start - self.id_offset

    def nprobe_or(self, default: int | None) -> int | None:
        """The shard's own nprobe when its record has one (``null`` included), else ``default`` (the catalog's)."""
        return self.nprobe if "nprobe" in self.model_fields_set else default


class EmbedderRecord(Record):
    """The embedder the vectors were made with (``massiveds.encode.embed.Embedder.info``)."""

    model: str
    #: ``transformer`` or ``static`` (a ``StaticEmbedding``); catalogs from before static models were transformers
    kind: Literal["transformer", "static"] = "transformer"
    dim: int
    normalize: bool
    max_length: int | None = None
    query_prefix: str = ""
    passage_prefix: str = ""
    similarity: str = "inner_product"
    #: the first components of a fixed text's vector (``massiveds.encode.embed.PROBE_TEXT``): a changed model gives others
    probe: list[float] | None = None


class IndexRecord(Record):
    """The index plan as stored (``massiveds.encode.index.IndexPlan.to_dict``); a merge adds every source's plan."""

    type: str
    dim: int
    metric: str
    factory: str
    nlist: int | None
    pq_m: int | None
    nbits: int | None
    train_sample: int
    nprobe: int | None
    bytes_per_vector: Measure
    reason: str
    coarse: str | None = None
    opq: bool = False
    memory_budget_gb: Measure | None = None
    #: ``kmeans`` (one k-means over every list) or ``two-level`` (``massiveds.encode.index.two_level_centroids``)
    coarse_training: str = "kmeans"
    merged_plans: list[IndexRecord] = []


class ChunkingRecord(OpenRecord):
    """The chunking the passages were cut with (the manifest's ``chunk`` section)."""

    unit: str
    size: int
    overlap: int
    min_size: int


class DomainTotals(Record):
    """Documents, passages, tokens and shards of one domain."""

    documents: int = 0
    passages: int
    tokens: int = 0
    shards: int

    def __add__(self, other: DomainTotals) -> DomainTotals:
        """The sum of two totals, with the fields either records (as a ``Counter`` would add them)."""
        mine, theirs = self.as_json(), other.as_json()
        return DomainTotals.model_validate({k: mine.get(k, 0) + theirs.get(k, 0) for k in mine | theirs})


class BuildRecord(OpenRecord):
    """What the build did (records read, drops per stage and reason, throughput, timings, nodes); open-ended."""

    records_read: int | None = None
    documents_kept: int | None = None
    #: Documents dropped, by ``stage:reason``.
    dropped: dict[str, int] = {}
    #: Per source: records read and kept, and drops by ``stage:reason``.
    sources: dict[str, dict[str, int]] = {}
    #: Per stage and step: the units (passages, for embed) each Ray node did.
    nodes: dict[str, dict[str, dict[str, int]]] = {}


class ManifestRecord(OpenRecord):
    """A manifest the datastore was built from: its file name, sha256 and full, defaulted content."""

    path: str
    sha256: str
    content: dict[str, Any]


class RecallRecord(OpenRecord):
    """recall@k at the default nprobe and the rerank depth calibrated at build time (``massiveds.evaluate.recall.recall_summary``)."""

    status: str
    reason: str | None = None
    k: int | None = None
    nprobe: int | None = None
    queries: int | None = None
    #: Exact rerank's default depth at ``k``: the shallowest that reached the target recall (``rerank_target``).
    rerank_depth: int | None = None

    def figure(self, rerank: bool = False) -> float | None:
        """recall@``k`` as measured, without or with exact rerank at ``rerank_depth``; None when it was not measured.

        The figures are ``recall_at_<k>`` and ``recall_at_<k>_rerank``. Catalogs written before the key followed the
        ``k`` measured (a datastore of fewer passages than asked clipped ``k`` but kept the key of the ``k`` asked) hold
        one such key under another number: that one is the figure.
        """
        if self.status != "measured":
            return None
        extra, suffix = self.model_extra or {}, "_rerank" if rerank else ""
        value = extra.get(f"recall_at_{self.k}{suffix}")
        if value is None:
            value = next((v for key, v in extra.items() if re.fullmatch(rf"recall_at_\d+{suffix}", key)), None)
        return float(value) if isinstance(value, int | float) else None


class CatalogRef(Record):
    """Another datastore's catalog: its name and the sha256 of its ``datastore.json``."""

    name: str
    catalog_sha256: str


class SubsampleRecord(Record):
    """How a subsample was drawn: fraction, seed, parent, and the parent's own subsample record."""

    fraction: Measure
    seed: int
    parent: CatalogRef
    previous: SubsampleRecord | None = None


class DeletionRecord(Record):
    """One ``massiveds delete``: when, by whom, why, what was selected and how much went; the ids are in ``table``."""

    at: str
    by: str
    reason: str
    #: how the documents were chosen: ``doc-ids FILE``, ``source NAME`` or ``match-eval FILE``
    selection: str
    documents: int
    passages: int
    shards: list[str]
    #: the deleted documents (doc_id, source, reason; no text), relative to the datastore
    table: str
    file: FileRecord


class AppendRecord(Record):
    """One ``massiveds append``: when, by whom, from which manifests, what it added and dropped, and the index's recall around it."""

    at: str
    by: str
    manifests: list[ManifestRecord]
    #: documents read from the manifests' sources, and kept
    records_read: int
    documents: int
    passages: int
    tokens: int
    shards: list[str]
    #: documents dropped, by ``stage:reason`` (``dedup:exact_duplicate`` against the datastore's own documents too)
    dropped: dict[str, int]
    #: the drop records (the build's ``dropped`` schema: ``duplicate_of`` names the document kept), relative to the datastore
    table: str
    file: FileRecord
    #: the trained quantizer the new shards were indexed with, relative to the datastore
    trained: str
    #: recall@10 at the default nprobe before and after (null: not measured)
    recall_before: Measure | None
    recall_after: Measure | None
    seconds: Measure


class MergedIndexRecord(Record):
    """The merged on-disk index (``massiveds merge-index``) and the shards it was made from."""

    index: str
    ivfdata: str
    ntotal: int
    nlist: int
    shards: list[str]
    files: dict[str, FileRecord]
    seconds: Measure


class SparseRecord(Record):
    """The BM25 index every shard holds (``massiveds.encode.sparse``): how it was built, and the datastore statistics it was scored with."""

    library: str
    method: str
    k1: Measure
    b: Measure
    tokenizer: SparseTokenizer
    passages: int
    avg_length: Measure
    #: distinct terms over the datastore
    terms: int
    bytes: int
    #: True when shards were scored with different statistics (after an append): search then computes each query term's idf
    #: from the shards' own term counts, N = the passages of all the shards, and scales each shard's stored scores for that
    #: term by idf_now / idf_stored (``massiveds.encode.sparse``, live idf); absent: every shard was scored with ``passages``.
    live_idf: bool = False


class DedupIndexRecord(Record):
    """The datastore's dedup index (``massiveds.clean.dedup_index``): its files under ``dedup/``, and the MinHash parameters.

    ``ngram``, ``num_perm`` and ``seed`` are those of the signatures (None: no document has one, near dedup never ran).
    """

    files: dict[str, FileRecord]
    documents: int
    signed: int
    ngram: int | None
    num_perm: int | None
    seed: int | None

    @property
    def params(self) -> tuple[int, int, int] | None:
        """(ngram, num_perm, seed) of the signatures; None: none is signed."""
        return None if self.ngram is None or self.num_perm is None or self.seed is None else (self.ngram, self.num_perm, self.seed)

    def plus(self, more: DedupIndexRecord) -> DedupIndexRecord:
        """This index with the files of ``more`` added (an append's): the records of the files already here are kept as they are,
        not read again, so an append costs what it adds. Signatures of other parameters than these cannot join."""
        params = self.params or more.params
        assert more.params in (None, params), f"signatures of {more.params} cannot join an index of {params}"
        ngram, num_perm, seed = params if params is not None else (None, None, None)
        return DedupIndexRecord(files=dict(sorted((self.files | more.files).items())), documents=self.documents + more.documents,
                                signed=self.signed + more.signed, ngram=ngram, num_perm=num_perm, seed=seed)


class Catalog(Record):
    """A datastore's ``datastore.json`` (docs/datastore.md)."""

    format_version: int
    name: str
    created: str
    embedder: EmbedderRecord
    index: IndexRecord
    chunk: ChunkingRecord | None = None
    trained_index: TrainedIndexRecord | None = None
    #: A merge keeps one trained index per source.
    trained_indexes: list[TrainedIndexRecord] = []
    shards: list[ShardRecord]
    domains: dict[str, DomainTotals]
    build: BuildRecord = BuildRecord()
    #: The datastores a merge was made of.
    merged_from: list[CatalogRef] | None = None
    manifests: list[ManifestRecord] = []
    versions: dict[str, str] = {}
    recall: RecallRecord | None = None
    #: absent: the datastore has no BM25 index (dense search only)
    sparse: SparseRecord | None = None
    subsample: SubsampleRecord | None = None
    merged: MergedIndexRecord | None = None
    #: every ``massiveds delete``, oldest first
    deletions: list[DeletionRecord] = []
    #: every ``massiveds append``, oldest first
    appends: list[AppendRecord] = []
    #: what dedup knows of every document the datastore holds or deleted; absent: built before the index existed
    dedup: DedupIndexRecord | None = None

    @property
    def shards_by_id(self) -> list[ShardRecord]:
        """The shards in passage id order."""
        return sorted(self.shards, key=lambda s: s.id_start)

    @property
    def num_passages(self) -> int:
        return sum(s.count for s in self.shards)


@dataclass(frozen=True)
class Expected:
    """A file the datastore must hold: path relative to its root, size, sha256."""

    rel: str
    bytes: int
    sha256: str


def _field(loc: tuple[int | str, ...]) -> str:
    """``('shards', 0, 'count')`` -> ``shards[0].count``."""
    out = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    return out or "(top level)"


def _problem(error: ErrorDetails) -> str:
    if error["type"] == "missing":
        return f"field {_field(error['loc'])} is missing"
    if error["type"] == "extra_forbidden":
        return f"field {_field(error['loc'])} is not a catalog field"
    return f"field {_field(error['loc'])}: {error['msg'][:1].lower()}{error['msg'][1:]}"


def parse_catalog(data: object, where: str, advice: str) -> Catalog:
    """``data`` (a parsed ``datastore.json``) as a Catalog; a DatastoreError naming ``where``, the first bad field and ``advice`` if not."""
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        version = data.get("format_version") if isinstance(data, dict) else None
        if isinstance(version, int) and version != FORMAT_VERSION:
            advice = f"datastore format {version} is not {FORMAT_VERSION}: rebuild it, or read it with the massiveds that wrote it"
        raise DatastoreError(f"{where}: malformed catalog: {_problem(errors[0])}{more}; {advice}") from None


def catalog_text(catalog: Catalog) -> str:
    """``datastore.json`` as written: indented JSON of ``catalog.as_json()``."""
    return json.dumps(catalog.as_json(), indent=2) + "\n"


def write_catalog(root: Path, catalog: Catalog) -> None:
    """Write ``catalog`` as ``root/datastore.json``, atomically; only under the datastore's writer lock."""
    write_catalog_bytes(root, catalog_text(catalog).encode())


def write_catalog_bytes(root: Path, raw: bytes) -> None:
    """Write ``raw`` (a catalog as published) as ``root/datastore.json``, atomically; only under the datastore's writer lock."""
    require_writer(root, f"writing {CATALOG}")
    with atomic_path(root / CATALOG) as tmp:
        tmp.write_bytes(raw)


def install_catalog(staged: Path, root: Path) -> None:
    """Move a catalog written elsewhere (a build's, a pull's) into place as ``root/datastore.json``; only under the writer lock."""
    require_writer(root, f"writing {CATALOG}")
    os.replace(staged, root / CATALOG)


def catalog_files(catalog: Catalog) -> list[Expected]:
    """The files a catalog records with their sizes and digests: the trained index(es) and every shard file (where it lives)."""
    trained = [catalog.trained_index] if catalog.trained_index else []
    out = [Expected(t.file, t.bytes, t.sha256) for t in trained + catalog.trained_indexes]  # a merge keeps one per source
    for shard in catalog.shards:
        folder = shard.folder_rel()
        out += [Expected(f"{folder}/{check_name(name, 'shard file')}", rec.bytes, rec.sha256) for name, rec in sorted(shard.files.items())]
    out += [Expected(d.table, d.file.bytes, d.file.sha256) for d in catalog.deletions]
    out += [Expected(a.table, a.file.bytes, a.file.sha256) for a in catalog.appends]
    if catalog.dedup is not None:
        out += [Expected(f"{DEDUP_DIR}/{check_name(name, 'dedup index file')}", rec.bytes, rec.sha256)
                for name, rec in sorted(catalog.dedup.files.items())]
    if catalog.merged is not None:  # merge-index's files, beside its index
        folder = catalog.merged.index.rpartition("/")[0]
        out += [Expected(f"{folder}/{check_name(name, 'merged index file')}", rec.bytes, rec.sha256)
                for name, rec in sorted(catalog.merged.files.items())]
    return out


def listing_files(listing: dict[str, Any]) -> list[Expected]:
    """The files a ``checksums.json`` listing records (keys are checked by ``check_paths``, not here)."""
    return [Expected(rel, int(r["bytes"]), r["sha256"]) for rel, r in sorted(listing["files"].items())]


def read_listing(root: Path) -> dict[str, Any] | None:
    """The parsed ``checksums.json`` of ``root`` (None when the datastore has none)."""
    path = root / CHECKSUMS
    if not path.is_file():
        return None
    try:
        listing = json.loads(path.read_text())
        if not isinstance(listing.get("files"), dict):
            raise ValueError("no 'files' mapping")
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise DatastoreError(f"{path}: unreadable ({exc}); run massiveds verify {root}") from None
    return dict(listing)


def check_paths(root: Path, catalog: Catalog, listing: dict[str, Any] | None) -> None:
    """Raise UnsafePathError at the first path of the catalog or listing that leads outside the datastore.

    A shard's own files must lie in its folder: ``shards/<name>`` inside ``root``, or the folder a
    merged-in-place record declares (a reference the catalog makes on purpose, so it may lie
    elsewhere). Trained and merged indexes, and every ``checksums.json`` key, lie inside ``root``.
    """
    try:
        for shard in catalog.shards:
            folder = root / shard.folder_rel()  # checks the shard's name too
            if not shard.elsewhere:
                inside(folder, root, f"shard {shard.name}:")
            for name in shard.files:
                inside(folder / check_name(name, f"shard {shard.name}: file name"), folder, f"shard {shard.name}: file")
            safe_join(root, shard.trained, f"shard {shard.name}: trained index")
        trained = [catalog.trained_index] if catalog.trained_index else []
        for rec in trained + catalog.trained_indexes:
            safe_join(root, rec.file, f"{CATALOG} trained index")
        for deletion in catalog.deletions:
            safe_join(root, deletion.table, f"{CATALOG} deletion table")
        for appended in catalog.appends:
            safe_join(root, appended.table, f"{CATALOG} append table")
        if catalog.merged is not None:
            safe_join(root, catalog.merged.index, f"{CATALOG} merged index")
            safe_join(root, catalog.merged.ivfdata, f"{CATALOG} merged ivfdata")
        for rel in (listing or {}).get("files", {}):
            safe_join(root, rel, f"{CHECKSUMS} entry")
    except UnsafePathError as exc:
        raise UnsafePathError(f"{root}: {exc}") from None


def check_agreement(root: Path, catalog: Catalog, listing: dict[str, Any], *, complete: bool = False) -> None:
    """Raise DatastoreError where the catalog and ``checksums.json`` record a file differently (``complete``: or the listing lacks it)."""
    listed = {e.rel: e for e in listing_files(listing)}
    for e in catalog_files(catalog):
        other = listed.get(e.rel)
        if (other is None and complete) or (other is not None and (other.bytes, other.sha256) != (e.bytes, e.sha256)):
            raise DatastoreError(f"{root}: {CATALOG} and {CHECKSUMS} disagree about {e.rel}: refused; run massiveds verify {root}")


def read_catalog(root: Path) -> Catalog:
    """The catalog of ``root``, its paths unchecked; DatastoreError when there is none, or it is not JSON or not a catalog."""
    path = root / CATALOG
    if not path.is_file():
        raise DatastoreError(f"{root}: not a datastore (no {CATALOG}); build one with 'massiveds build'")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatastoreError(f"{path}: unreadable ({exc}); run massiveds verify {root}") from None
    return parse_catalog(data, str(path), f"run massiveds verify {root}")


def open_catalog(root: str | Path) -> Catalog:
    """The catalog of the datastore at ``root``, after ``check_paths`` and ``check_agreement`` over it and its ``checksums.json``."""
    root = Path(root)
    catalog = read_catalog(root)
    listing = read_listing(root)
    check_paths(root, catalog, listing)
    if listing is not None:
        check_agreement(root, catalog, listing)
    return catalog
