"""Physical subsampling: nested, close to the fraction, same passages/vectors/codes, same search results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import massiveds
from massiveds.core.manifest import Index
from massiveds.encode.index import add_vectors, plan_index, train_index
from massiveds.ops.subsample import subset_index
from massiveds.store.sampling import keep_mask
from tests.helpers import massiveds as cli
from tests.test_index import clustered


def test_subset_of_ivfpq_codes_searches_like_the_filtered_full_index() -> None:
    x = clustered(2_000, 32, 3)
    plan = plan_index(len(x), 32, Index(type="ivfpq", nlist=8, pq_m=8, nbits=6, nprobe=8))
    trained = train_index(plan, x)
    full = train_index(plan, x)
    add_vectors(full, x, np.arange(100, 2_100))
    keep = np.random.default_rng(0).random(2_000) < 0.3
    new_rows = np.full(2_000, -1, np.int64)
    new_rows[keep] = np.arange(keep.sum())
    sub = subset_index(full, trained, lambda ids: new_rows[ids - 100])
    assert sub.ntotal == keep.sum()
    for index in (full, sub):
        index.nprobe = 8
    q = clustered(10, 32, 4)
    d_full, i_full = full.search(q, 2_000)
    d_sub, i_sub = sub.search(q, 10)
    for row in range(len(q)):
        kept = [(d, new_rows[i - 100]) for d, i in zip(d_full[row], i_full[row], strict=True) if i >= 0 and keep[i - 100]][:10]
        np.testing.assert_allclose(d_sub[row], [d for d, _ in kept], rtol=1e-5)
        assert sorted(i_sub[row].tolist()) == sorted(i for _, i in kept)


@pytest.mark.slow
def test_subsample_is_nested_exact_and_searchable(example_datastore: Path, tmp_path: Path) -> None:
    half, quarter = tmp_path / "half", tmp_path / "quarter"
    cli("subsample", str(example_datastore), "--fraction", "0.5", "--seed", "11", "--out", str(half))
    cli("subsample", str(example_datastore), "--fraction", "0.25", "--seed", "11", "--out", str(quarter))
    full = massiveds.open(example_datastore)
    everything = full.passages(list(range(full.num_passages)))
    docs = sorted({p["doc_id"] for p in everything})
    by_half = massiveds.open(half)
    kept_half = by_half.passages(list(range(by_half.num_passages)))
    kept_quarter = massiveds.open(quarter).passages(list(range(massiveds.open(quarter).num_passages)))
    assert {p["doc_id"] for p in kept_quarter} <= {p["doc_id"] for p in kept_half}
    expected = [p for p, k in zip(everything, keep_mask([p["doc_id"] for p in everything], 0.5, 11), strict=True) if k]
    strip = ("passage_id", "shard")
    assert [{k: v for k, v in p.items() if k not in strip} for p in kept_half] == [
        {k: v for k, v in p.items() if k not in strip} for p in expected
    ]
    assert [p["passage_id"] for p in kept_half] == list(range(len(kept_half)))
    n = len(docs)
    assert abs(len({p["doc_id"] for p in kept_half}) - 0.5 * n) <= 4 * (n * 0.25) ** 0.5
    catalog = json.loads((half / "datastore.json").read_text())
    assert catalog["subsample"]["fraction"] == 0.5 and catalog["subsample"]["parent"]["name"] == "jargon-example"
    assert catalog["domains"]["wiki"]["documents"] == len({p["doc_id"] for p in kept_half})
    assert catalog["domains"]["wiki"]["passages"] == len(kept_half)

    # the same vectors, and search on the subsample = search on the full datastore restricted to kept documents
    full_vecs = np.concatenate(
        [
            np.load(example_datastore / "shards" / s / "vectors.npy")
            for s in sorted(p.name for p in (example_datastore / "shards").iterdir())
        ]
    )
    half_vecs = np.concatenate([np.load(half / "shards" / s["name"] / "vectors.npy") for s in catalog["shards"]])
    mask = keep_mask([p["doc_id"] for p in everything], 0.5, 11)
    np.testing.assert_array_equal(half_vecs, full_vecs[mask])
    query = "a bug that appears only when you look for it"
    wide = full.search(query, k=200)
    want = [(h["doc_id"], h["char_start"]) for h in wide if keep_mask([h["doc_id"]], 0.5, 11)[0]][:10]
    got = [(h["doc_id"], h["char_start"]) for h in by_half.search(query, k=10)]
    assert got == want

    proc = cli("subsample", str(example_datastore), "--fraction", "0", "--out", str(tmp_path / "none"), check=False)
    assert proc.returncode == 2 and "fraction must be in (0, 1]" in proc.stderr


@pytest.mark.slow
def test_inspect_reports_counts_bytes_and_plots(example_datastore: Path, tmp_path: Path) -> None:
    stats = json.loads(cli("inspect", str(example_datastore), "--json").stdout)
    catalog = json.loads((example_datastore / "datastore.json").read_text())
    assert stats["domains"]["wiki"]["passages"] == sum(s["count"] for s in catalog["shards"])
    for shard in stats["shards"]:
        folder = example_datastore / "shards" / shard["name"]
        assert shard["bytes"]["index"] == (folder / "index.faiss").stat().st_size
        assert shard["bytes"]["vectors"] == (folder / "vectors.npy").stat().st_size
    assert stats["dropped"]["filter:too_few_words"] > 0
    text = cli("inspect", str(example_datastore), "--plot", str(tmp_path / "p.html")).stdout
    assert "wiki" in text and "IDMap2,Flat" in text
    page = (tmp_path / "p.html").read_text()
    assert "<svg" in page and "tokens per domain" in page
    proc = cli("inspect", str(example_datastore), "--plot", str(tmp_path / "p.png"), check=False)
    assert proc.returncode == 2 and "HTML" in proc.stderr
