"""Datastore statistics for ``massiveds inspect``: per domain and per shard, from the catalog and the files."""

from __future__ import annotations

import html
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from massiveds.core.catalog import Catalog, DomainTotals, ShardRecord, open_catalog
from massiveds.core.errors import DatastoreError
from massiveds.core.layout import ShardFiles
from massiveds.encode.index import ivf_list_sizes, read_index
from massiveds.encode.sparse import SHARD_FILES

FILE_KINDS = {ShardFiles.PASSAGES: "passages", ShardFiles.INDEX: "index", ShardFiles.VECTORS: "vectors",
              **dict.fromkeys(SHARD_FILES, "sparse")}


@dataclass(frozen=True)
class ShardStats:
    """One shard: its catalog record, the bytes of each file kind on disk, and whether its folder is there."""

    record: ShardRecord
    bytes: dict[str, int]
    present: bool

    def to_dict(self) -> dict[str, Any]:
        balance = self.record.list_balance
        return {
            "name": self.record.name,
            "domain": self.record.domain,
            "passages": self.record.count,
            "deleted": self.record.deleted,
            "tokens": self.record.tokens,
            "bytes": self.bytes,
            "max_list": None if balance is None else balance.max_list,
            "mean_list": None if balance is None else balance.mean_list,
            "imbalance": None if balance is None else balance.imbalance,
            "folder": self.record.folder,
            "present": self.present,
        }


@dataclass(frozen=True)
class DomainStats:
    """One domain: its catalog totals and the bytes of each file kind of its shards."""

    totals: DomainTotals
    bytes: dict[str, int]


@dataclass(frozen=True)
class DatastoreStats:
    """What ``massiveds inspect`` shows: the catalog, with per-domain and per-shard bytes on disk."""

    root: Path
    catalog: Catalog
    domains: dict[str, DomainStats]
    shards: list[ShardStats]

    def to_dict(self) -> dict[str, Any]:
        """``inspect --json``."""
        cat = self.catalog
        return {
            "name": cat.name,
            "embedder": cat.embedder.as_json(),
            "index": cat.index.as_json(),
            "recall": None if cat.recall is None else cat.recall.as_json(),
            "sparse": None if cat.sparse is None else cat.sparse.as_json(),
            "subsample": None if cat.subsample is None else cat.subsample.as_json(),
            "merged_from": None if cat.merged_from is None else [m.as_json() for m in cat.merged_from],
            "dropped": cat.build.dropped,
            "deletions": [d.as_json() for d in cat.deletions],
            "appends": [a.as_json() for a in cat.appends],
            "recall_warning": recall_warning(cat, self.root),
            "domains": {name: d.totals.as_json() | {"bytes": d.bytes} for name, d in self.domains.items()},
            "shards": [s.to_dict() for s in self.shards],
        }


#: A fall in recall@10 since the quantizer was trained beyond which inspect and append suggest ``massiveds retrain``.
RECALL_DROP_WARNING = 0.05


def recall_warning(catalog: Catalog, root: str | Path) -> str | None:
    """A line suggesting ``massiveds retrain`` when recall@10 fell by over ``RECALL_DROP_WARNING`` across appends with one quantizer."""
    trained = catalog.trained_index.file if catalog.trained_index else None
    since = [a for a in catalog.appends if a.trained == trained and a.recall_before is not None and a.recall_after is not None]
    if not since:
        return None
    first, last = since[0].recall_before, since[-1].recall_after
    assert first is not None and last is not None
    if first - last <= RECALL_DROP_WARNING:
        return None
    return (f"recall@10 fell from {first:.3f} to {last:.3f} over {len(since)} append(s) with the same quantizer: the data drifted from "
            f"what it was trained on: run massiveds retrain {root}")


def datastore_stats(path: str | Path) -> DatastoreStats:
    """Counts, bytes on disk, index parameters, list balance, recall and drops of a datastore."""
    root = Path(path)
    catalog = open_catalog(root)
    shards = [_shard_stats(root, s) for s in catalog.shards_by_id]
    domains = {}
    for name, totals in catalog.domains.items():
        mine = [s for s in shards if s.record.domain == name]
        domains[name] = DomainStats(totals, {k: sum(s.bytes[k] for s in mine) for k in dict.fromkeys(FILE_KINDS.values())})
    return DatastoreStats(root, catalog, domains, shards)


def _shard_stats(root: Path, shard: ShardRecord) -> ShardStats:
    folder = root / shard.folder_rel()
    sizes = dict.fromkeys(FILE_KINDS.values(), 0)
    for name, kind in FILE_KINDS.items():
        sizes[kind] += (folder / name).stat().st_size if (folder / name).is_file() else 0
    return ShardStats(shard, sizes, folder.is_dir())


def list_sizes(path: str | Path) -> np.ndarray:
    """Sizes of every inverted list of every shard present (empty for Flat datastores)."""
    root = Path(path)
    paths = [root / s.folder_rel() / ShardFiles.INDEX for s in open_catalog(root).shards]
    per_shard = [ivf_list_sizes(read_index(p)) for p in paths if p.is_file()]
    return np.concatenate([s for s in per_shard if s is not None] or [np.zeros(0, dtype=np.int64)])


def _bars(title: str, labels: list[str], values: list[float], width: int = 640) -> str:
    top = max(values) if values and max(values) > 0 else 1.0
    row = 22
    parts = [f'<h2>{html.escape(title)}</h2><svg width="{width}" height="{row * len(values) + 10}" xmlns="http://www.w3.org/2000/svg">']
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        w = (width - 260) * value / top
        y = i * row + 5
        parts.append(f'<text x="0" y="{y + 14}" font-size="13">{html.escape(label)}</text>')
        parts.append(f'<rect x="160" y="{y}" width="{w:.1f}" height="{row - 6}" fill="#4c72b0"/>')
        parts.append(f'<text x="{165 + w:.1f}" y="{y + 14}" font-size="12">{value:,.0f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_plot(stats: DatastoreStats, sizes: np.ndarray, out: Path) -> None:
    """A self-contained HTML page: tokens per domain and the inverted-list size distribution."""
    if out.suffix.lower() not in (".html", ".htm"):
        raise DatastoreError(f"--plot writes an HTML page; name it something.html (got {out.name})")
    domains = stats.domains
    body = [f"<h1>{html.escape(stats.catalog.name)}</h1>",
            _bars("tokens per domain", list(domains), [d.totals.tokens for d in domains.values()])]
    if sizes.size:
        edges = np.unique(np.quantile(sizes, np.linspace(0, 1, 11)).round().astype(int))
        counts, edges = np.histogram(sizes, bins=edges if len(edges) > 1 else 1)
        labels = [f"{int(a):,}–{int(b):,}" for a, b in itertools.pairwise(edges)]
        body.append(_bars("inverted lists by size (entries per list)", labels, counts.tolist()))
    else:
        body.append("<p>Flat index: no inverted lists.</p>")
    out.write_text("<!doctype html><meta charset='utf-8'><title>massiveds inspect</title>" + "".join(body) + "\n")
