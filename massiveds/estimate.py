"""Expected size of a build from the sizes manifests state per source (``estimated_*``), before any download.

Tokens come from ``estimated_tokens``, else from ``estimated_bytes`` at ``BYTES_PER_TOKEN``; passages
are tokens divided by the chunk size, with ``WORDS_PER_TOKEN`` when chunks count words. These ratios
are typical of English text with BPE/WordPiece tokenizers; code and math have fewer words per token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from massiveds.manifest import LoadedManifest

BYTES_PER_TOKEN = 4.0
WORDS_PER_TOKEN = 0.75


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
        out.append(SourceEstimate(m.name, m.domain, source.label, source.estimated_documents, tokens, passages))
    return out
