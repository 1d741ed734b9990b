"""Index planner tiers, memory budget and footprint; the ``massiveds plan`` command."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from massiveds.core.errors import MassiveDSError
from massiveds.core.manifest import Index
from massiveds.encode.index import GB, plan_index, plan_report, set_nprobe, train_index
from massiveds.ops.index_report import parse_count
from tests.helpers import EXAMPLE
from tests.helpers import massiveds as cli


def test_tiers_from_one_million_to_ten_billion() -> None:
    one_m = plan_index(1_000_000, 384, Index())
    assert one_m.factory == "IVF4096,PQ64x8" and one_m.coarse == "flat" and not one_m.opq
    hundred_m = plan_index(100_000_000, 384, Index())
    assert hundred_m.factory == "OPQ64,IVF131072_HNSW32,PQ64x8"  # 16·√N = 160000 -> 2^17
    assert hundred_m.train_sample == 1 << 22 and hundred_m.train_sample >= 30 * hundred_m.nlist
    one_b = plan_index(1_000_000_000, 384, Index())
    assert one_b.factory == "OPQ64,IVF524288_HNSW32,PQ64x8"
    assert one_b.train_sample == 30 * 524288  # the cap would leave < 30 points per centroid
    ten_b = plan_index(10_000_000_000, 768, Index())
    assert ten_b.nlist == 1 << 20 and ten_b.coarse == "hnsw" and ten_b.opq and ten_b.nprobe == 1024
    for plan, n in ((one_m, 1e6), (hundred_m, 1e8), (one_b, 1e9), (ten_b, 1e10)):
        assert plan.bytes_per_vector == 64 + 8
        assert 2 * np.sqrt(n) <= plan.nlist <= 32 * np.sqrt(n)  # 4..16·√N, rounded to a power of two
        assert 30 * plan.nlist <= plan.train_sample <= 256 * plan.nlist


def test_budget_shrinks_pq_then_refuses() -> None:
    free = plan_index(10_000_000_000, 768, Index())
    tight = plan_index(10_000_000_000, 768, Index(memory_budget_gb=512))
    assert tight.pq_m == 32 and tight.factory == "OPQ32,IVF1048576_HNSW32,PQ32x8" and "PQ64 would exceed" in tight.reason
    report = plan_report(10_000_000_000, 768, Index(memory_budget_gb=512))
    assert report.fits_budget and report.footprint.serve_bytes <= 512 * GB < plan_report(10_000_000_000, 768).footprint.serve_bytes
    assert free.pq_m == 64
    # the argument overrides the manifest's budget
    assert plan_index(10_000_000_000, 768, Index(memory_budget_gb=10_000), memory_budget_gb=512).pq_m == 32
    with pytest.raises(MassiveDSError, match=r"need at least .* GB even with PQ8x8, over index.memory_budget_gb 10"):
        plan_index(10_000_000_000, 384, Index(memory_budget_gb=10))
    with pytest.raises(MassiveDSError, match=r"does not fit index\.memory_budget_gb"):
        plan_index(10_000_000_000, 384, Index(pq_m=64, memory_budget_gb=512))


def test_flat_when_small_and_it_fits_else_ivfpq() -> None:
    assert plan_index(150_000, 384, Index()).type == "flat"
    squeezed = plan_index(150_000, 384, Index(memory_budget_gb=0.1))  # flat would take ~0.23 GB
    assert squeezed.type == "ivfpq" and "flat index exceeds the memory budget" in squeezed.reason
    with pytest.raises(MassiveDSError, match="flat index of 150000 vectors"):
        plan_index(150_000, 384, Index(type="flat", memory_budget_gb=0.1))


def test_footprint_counts_codes_ids_and_quantizer() -> None:
    report = plan_report(1_000_000, 384)
    fp = report.footprint
    assert fp.vectors_bytes == 72 * 1_000_000
    assert fp.quantizer_bytes == 4096 * 384 * 4 + 4096 * 48 + 256 * 384 * 4  # centroids, list headers, PQ codebooks
    assert fp.serve_bytes == fp.vectors_bytes + fp.quantizer_bytes
    assert fp.fp16_vectors_disk_bytes == 1_000_000 * 384 * 2 and fp.train_sample_bytes == 262_144 * 384 * 4
    hnsw = plan_report(100_000_000, 384).footprint
    assert hnsw.quantizer_bytes > 131072 * 384 * 4 + 384 * 384 * 4  # + graph and OPQ matrix


def test_hnsw_coarse_quantizer_and_opq_train_and_search() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    plan = plan_index(len(x), 32, Index(type="ivfpq", nlist=16, pq_m=8, nbits=6, coarse="hnsw", opq=True))
    assert plan.factory == "OPQ8,IVF16_HNSW32,PQ8x6"
    index = train_index(plan, x[: plan.train_sample])
    index.add_with_ids(x, np.arange(len(x), dtype=np.int64))
    set_nprobe(index, 16)
    assert faiss.downcast_index(faiss.extract_index_ivf(index).quantizer).hnsw.efSearch >= 32
    _, ids = index.search(x[:50], 1)
    assert (ids[:, 0] == np.arange(50)).mean() > 0.7  # every list probed: PQ error only


def test_parse_count() -> None:
    assert [parse_count(t) for t in ("1000", "2.5M", "1e9", "1B", "10_000", "3k")] == [1000, 2_500_000, 10**9, 10**9, 10_000, 3000]
    with pytest.raises(MassiveDSError, match="cannot read 'lots'"):
        parse_count("lots")


def test_plan_command_prints_tiers_and_json() -> None:
    text = cli("plan", "--vectors", "1M,1B", "--memory-gb", "100").stdout
    assert "IVF4096,PQ64x8" in text and "OPQ64,IVF524288_HNSW32,PQ64x8" in text and "RAM to serve" in text and "fits" in text
    data = json.loads(cli("plan", str(EXAMPLE), "--vectors", "1500", "--json").stdout)["plans"]
    assert data[0]["plan"]["type"] == "flat" and data[0]["plan"]["dim"] == 384  # the example's model is all-MiniLM-L6-v2
    bad = cli("plan", "--vectors", "10B", "--memory-gb", "10", check=False)
    assert bad.returncode == 2 and "error:" in bad.stderr and "PQ8x8" in bad.stderr
    missing = cli("plan", check=False)
    assert missing.returncode == 2 and "--vectors" in missing.stderr


#: Tokens per domain of the MassiveDS mix (Shao et al., 2024, arXiv:2407.12854, Table 2; web: ~1.19T, the 1.4T total
#: less the other domains), which the shipped manifests' estimated_tokens add up to.
MASSIVEDS_TOKENS = {"books": 26.3e9, "stem": 97.7e9, "wiki": 31.9e9, "forum": 20.2e9, "code": 52.8e9, "math": 14.1e9,
                    "biomedical": 6.5e9, "web": 1190e9}


def test_plan_from_the_real_manifests_stated_sizes() -> None:
    manifests = sorted(str(p) for p in (EXAMPLE.parents[1]).glob("*.yaml"))
    assert len(manifests) >= 8
    out = json.loads(cli("plan", *manifests, "--json").stdout)
    sources = out["sources"]
    per_domain: dict[str, int] = {}
    for s in sources:
        per_domain[s["domain"]] = per_domain.get(s["domain"], 0) + s["tokens"]
    assert per_domain == pytest.approx(MASSIVEDS_TOKENS)
    total = sum(s["passages"] for s in sources)
    assert all(s["passages"] >= (s["documents"] or 0) for s in sources)  # a document is at least one passage
    assert 4e9 < total < 4.5e9  # 1.44T tokens in 256-word passages; MassiveDS's flat index of 12.4 TB is ~4.0-4.4B vectors
    chosen, flat = out["plans"][0], out["flat"][0]
    assert chosen["plan"]["type"] == "ivfpq" and chosen["footprint"]["n_vectors"] == total
    assert flat["plan"]["type"] == "flat" and flat["footprint"]["index_disk_bytes"] == total * (4 * 768 + 8)
    assert flat["footprint"]["serve_bytes"] > 40 * chosen["footprint"]["serve_bytes"]
    build = out["build"]
    assert build["model"] == "facebook/contriever-msmarco" and build["dim"] == 768 and build["passages"] == total
    assert build["embed_gpu_hours"] == pytest.approx(total / 5000 / 3600)  # the H100 default rate

    text = cli("plan", *manifests, "--embed-rate", "2500").stdout  # a measured rate replaces the default
    for field in ("expected size", "total", "passage text", "fp16 vectors", "embedding GPU-hours", "2,500 passages/s per GPU",
                  "Flat, 4.23B x 768", "IVF-PQ, 4.23B x 768", "OPQ64,IVF1048576_HNSW32,PQ64x8", "RAM to serve", "index on disk",
                  "training sample", "31,457,280"):
        assert field in text, field
    assert f"{round(2 * build['embed_gpu_hours']):,}" in text
