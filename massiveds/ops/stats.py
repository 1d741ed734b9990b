"""Datastore statistics for ``massiveds inspect``: per domain and per shard, from the catalog and the files."""

from __future__ import annotations

import html
import itertools
from pathlib import Path
from typing import Any

import numpy as np

from massiveds.core.catalog import open_catalog
from massiveds.core.errors import DatastoreError
from massiveds.core.layout import DatastoreLayout
from massiveds.encode.index import ivf_list_sizes, read_index

FILE_KINDS = {"passages.arrow": "passages", "index.faiss": "index", "vectors.npy": "vectors"}


def datastore_stats(path: str | Path) -> dict[str, Any]:
    """Counts, bytes on disk, index parameters, list balance, recall and drops of a datastore."""
    layout = DatastoreLayout(path)
    catalog = open_catalog(layout.root)
    shards = []
    for s in sorted(catalog["shards"], key=lambda s: s["id_start"]):
        folder = layout.shard_folder(s)
        sizes = {kind: (folder / name).stat().st_size if (folder / name).is_file() else 0 for name, kind in FILE_KINDS.items()}
        balance = s.get("list_balance") or {}
        shards.append(
            {
                "name": s["name"],
                "domain": s["domain"],
                "passages": s["count"],
                "tokens": s.get("tokens", 0),
                "bytes": sizes,
                "max_list": balance.get("max_list"),
                "mean_list": balance.get("mean_list"),
                "imbalance": balance.get("imbalance"),
                "folder": s.get("folder"),
                "present": folder.is_dir(),
            }
        )
    domains = {}
    for name, d in catalog["domains"].items():
        mine = [s for s in shards if s["domain"] == name]
        domains[name] = d | {"bytes": {k: sum(s["bytes"][k] for s in mine) for k in FILE_KINDS.values()}}
    return {
        "name": catalog["name"],
        "embedder": catalog["embedder"],
        "index": catalog["index"],
        "recall": catalog.get("recall"),
        "subsample": catalog.get("subsample"),
        "merged_from": catalog.get("merged_from"),
        "dropped": catalog.get("build", {}).get("dropped", {}),
        "domains": domains,
        "shards": shards,
    }


def list_sizes(path: str | Path) -> np.ndarray:
    """Sizes of every inverted list of every shard present (empty for Flat datastores)."""
    layout = DatastoreLayout(path)
    paths = [layout.shard_folder(s) / "index.faiss" for s in open_catalog(layout.root)["shards"]]
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


def write_plot(stats: dict[str, Any], sizes: np.ndarray, out: Path) -> None:
    """A self-contained HTML page: tokens per domain and the inverted-list size distribution."""
    if out.suffix.lower() not in (".html", ".htm"):
        raise DatastoreError(f"--plot writes an HTML page; name it something.html (got {out.name})")
    domains = stats["domains"]
    body = [f"<h1>{html.escape(stats['name'])}</h1>", _bars("tokens per domain", list(domains), [d["tokens"] for d in domains.values()])]
    if sizes.size:
        edges = np.unique(np.quantile(sizes, np.linspace(0, 1, 11)).round().astype(int))
        counts, edges = np.histogram(sizes, bins=edges if len(edges) > 1 else 1)
        labels = [f"{int(a):,}–{int(b):,}" for a, b in itertools.pairwise(edges)]
        body.append(_bars("inverted lists by size (entries per list)", labels, counts.tolist()))
    else:
        body.append("<p>Flat index: no inverted lists.</p>")
    out.write_text("<!doctype html><meta charset='utf-8'><title>massiveds inspect</title>" + "".join(body) + "\n")
