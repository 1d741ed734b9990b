"""What a search hands back: ``Passage``, a stored passage as read by id, and ``Hit``, a passage with its scores.

Typed dicts, so the Python API's hits stay plain dicts (``hit["text"]``) while the type checker knows every key,
and the HTTP API's schema is generated from these declarations (``massiveds.serve.models``): one definition
of a hit for the search, its post-processing, the command line and the server. A passage also carries any
metadata column its source kept (``extra="allow"``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, with_config
from typing_extensions import NotRequired, TypedDict


@with_config(ConfigDict(extra="allow"))
class Passage(TypedDict):
    """One passage: its id, its document and where in it, its text, and the shard it lives in."""

    passage_id: Annotated[int, Field(description="the passage's id in the datastore")]
    doc_id: str
    domain: str
    source: NotRequired[str | None]
    url: NotRequired[str | None]
    title: NotRequired[str | None]
    text: str
    n_tokens: NotRequired[int | None]
    char_start: Annotated[int, Field(description="where the passage starts in its document's text")]
    char_end: int
    shard: str


@with_config(ConfigDict(extra="allow"))
class Hit(Passage):
    """A passage found by a search, with its score(s) and, when asked, the passage that continues it."""

    score: Annotated[float, Field(description="the ranking score (hybrid: fused)")]
    dense_score: NotRequired[Annotated[float | None, Field(description="hybrid only: inner product with the query")]]
    sparse_score: NotRequired[Annotated[float | None, Field(description="hybrid only: BM25 score (0: no query term)")]]
    rerank_score: NotRequired[Annotated[float, Field(description="with a cross-encoder rerank: its score of (query, passage), "
                                                                 "the order of the hits it scored")]]
    continuation: NotRequired[Annotated[Passage | None, Field(
        description="with `continuation`: the next passage of the same document, else null")]]

