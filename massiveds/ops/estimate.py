"""Expected size and cost of a build from the sizes manifests state per source (``estimated_*``), before any download.

Tokens come from ``estimated_tokens``, else from ``estimated_bytes`` at ``BYTES_PER_TOKEN``; passages
are tokens divided by the chunk size, with ``WORDS_PER_TOKEN`` when chunks count words, and at least
one per document when the manifest states the documents (a short document is one passage). These
ratios are typical of English text with BPE/WordPiece tokenizers; code and math have fewer words per token.

Embedding time is passages divided by a throughput per GPU, ``H100_EMBED_PASSAGES_PER_S`` unless
given (``massiveds plan --embed-rate``). That default is derived, not measured here: a BERT-base-size
encoder (Contriever-msmarco, E5-base, BGE-base: 85 M non-embedding parameters, 12 layers, d = 768)
costs 2 · 85 M + 12 · 4 · 341 · 768 ≈ 183 MFLOP per token, so ≈ 62 GFLOP for a 256-word passage
(≈ 341 tokens). An H100 SXM does 989 TFLOP/s of dense fp16 (NVIDIA's datasheet); at 32 % of that,
5,000 passages/s. 32 % is a little under what MassiveDS's own build implies: a note in its README
(RulinShao/retrieval-scaling) records 3,518,123 passages from 1 B tokens in 47 minutes next to a note
naming one L40 GPU, ≥ 1,248 passages/s of ≈ 51 GFLOP = 64 TFLOP/s, 35 % of the L40's 181 TFLOP/s.
A build records its own rate (``build.embed_passages_per_s``): measure on the target GPU, pass it as ``--embed-rate``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from massiveds.core.manifest import LoadedManifest

BYTES_PER_TOKEN = 4.0
WORDS_PER_TOKEN = 0.75
#: Passages/s one H100 embeds with a BERT-base-size encoder in fp16 (derived in the module doc).
H100_EMBED_PASSAGES_PER_S = 5000.0


@dataclass(frozen=True)
class SourceEstimate:
    """Expected documents, tokens and passages of one source (None where the manifest says nothing)."""

    manifest: str
    domain: str
    source: str
    documents: int | None
    tokens: int | None
    passages: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


@dataclass(frozen=True)
class BuildEstimate:
    """What a build of these sources takes before the index: passages, text, embedding GPU time."""

    passages: int
    tokens: int
    text_bytes: int
    embed_passages_per_s: float
    embed_gpu_hours: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


def estimate(loaded: LoadedManifest) -> list[SourceEstimate]:
    """One estimate per source of a manifest."""
    m = loaded.manifest
    per_passage = m.chunk.size if m.chunk.unit == "tokens" else m.chunk.size / WORDS_PER_TOKEN
    out = []
    for source in m.sources:
        tokens = source.estimated_tokens
        if tokens is None and source.estimated_bytes is not None:
            tokens = int(source.estimated_bytes / BYTES_PER_TOKEN)
        passages = None if tokens is None else max(1, round(tokens / per_passage))
        if source.estimated_documents is not None:
            passages = max(passages or 0, source.estimated_documents)
        out.append(SourceEstimate(m.name, m.domain, source.label, source.estimated_documents, tokens, passages))
    return out


def build_estimate(sources: list[SourceEstimate], passages_per_s: float = H100_EMBED_PASSAGES_PER_S) -> BuildEstimate:
    """Totals over ``sources`` and the GPU-hours to embed them at ``passages_per_s`` per GPU."""
    passages = sum(s.passages or 0 for s in sources)
    tokens = sum(s.tokens or 0 for s in sources)
    return BuildEstimate(passages, tokens, int(tokens * BYTES_PER_TOKEN), passages_per_s, passages / passages_per_s / 3600)
