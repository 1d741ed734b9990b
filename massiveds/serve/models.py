"""The HTTP API's request and response models (its OpenAPI schema is generated from them), and request validation.

The search options of ``SearchRequest`` are not declared here: each is a field of
``massiveds.store.search.SearchOptions`` and comes with its type and default from there (a tuple of strings
is sent as a string or a list of them); only ``query``, ``n_docs`` and ``domains`` are the API's own. A
request that fails validation is one ``ApiError``: its status and a one-line message.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from massiveds.core.errors import MassiveDSError
from massiveds.store.datastore import Datastore
from massiveds.store.fusion import FUSIONS
from massiveds.store.hit import Hit, Passage
from massiveds.store.search import MODES, SearchOptions, SearchResult, check_queries

#: What each search option does, shown in the OpenAPI schema and /docs (docs/search.md has the long form).
OPTION_HELP = {
    "nprobe": "IVF lists probed per shard (default: the catalog's)",
    "dedup": "drop near-duplicate hits (word 5-gram Jaccard >= dedup_threshold); the best-scored copy stays",
    "dedup_threshold": "Jaccard similarity from which two hits are near-duplicates, in (0, 1]",
    "decontaminate": "gold texts: drop hits that contain one (13-gram overlap) or share a 32-word run with it",
    "fraction": "search only the nested sample of this fraction of the documents, in (0, 1]",
    "seed": "which nested sample `fraction` takes",
    "mmr": "maximal marginal relevance lambda in [0, 1] (1 = plain ranking, lower = more diverse)",
    "continuation": "give each hit its next passage of the same document (`continuation`, else null)",
    "rerank": "`exact`: rescore the index candidates by exact inner product; `cross-encoder:<model>`: reorder the hits by a "
              "cross-encoder's score of (query, passage) (`rerank_score`); `exact+cross-encoder:<model>`: both",
    "rerank_depth": "with a cross-encoder: the hits per query it scores (after every filter), 1 to 1000",
    "strict": "fail when a shard cannot be read, instead of skipping it",
    "mode": "`dense`, `sparse` (BM25) or `hybrid` (default: hybrid where the datastore has a BM25 index, else dense)",
    "alpha": "hybrid: the weight of the dense list in [0, 1]",
    "fusion": "hybrid: `convex` (weighted scores) or `rrf` (reciprocal ranks)",
}
#: The values an option may take: an enum in the schema, checked by the model.
CHOICES: dict[str, tuple[str, ...]] = {"mode": MODES, "fusion": tuple(FUSIONS)}
#: The search options a request may set by name: every ``SearchOptions`` field but ``k`` (``n_docs``) and ``domains`` (own rules).
OPTION_FIELDS = tuple(name for name in SearchOptions.fields() if name not in ("k", "domains"))


class ApiError(Exception):
    """A request the client must fix (or a server state it must wait out): answered with ``status`` and a one-line message."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


class ErrorBody(BaseModel):
    """Every error reply: one line."""

    error: str


def _option_field(name: str) -> tuple[Any, Any]:
    """The request field of search option ``name``: its declared type (tuples as a string or a list) and default."""
    hint = SearchOptions.fields()[name]
    default = next(f.default for f in dataclasses.fields(SearchOptions) if f.name == name)
    if name in CHOICES:
        choice = typing.Literal[CHOICES[name]]  # type: ignore[valid-type]
        hint = choice | None if default is None else choice
    elif typing.get_origin(hint) is tuple:
        hint, default = str | list[str] | None, None
    return hint, Field(default, description=OPTION_HELP[name])


class _RequestBase(BaseModel):
    """JSON types are kept (no "5" for 5); unknown fields are allowed, and listed in the reply's ``ignored_fields``."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)

    query: str | list[str] = Field(min_length=1, description="one query, or a list of them (one list of hits per query)")
    n_docs: int = Field(10, description="hits per query, 1 to the server's --max-k")
    domains: str | list[str] | None = Field(
        None, description="a domain, a comma-separated list or a list of them; the datastore's name or null for all")


SearchRequest = create_model("SearchRequest", __base__=_RequestBase, __doc__="POST /search: MassiveDS's request, plus every search option.",
                             **{name: _option_field(name) for name in OPTION_FIELDS})  # type: ignore[call-overload]


class Results(BaseModel):
    """MassiveDS's results: one inner list per query, even for one query."""

    IDs: list[list[int]]
    passages: list[list[str]]
    scores: list[list[float]]
    hits: list[list[Hit]]


class SearchResponse(BaseModel):
    """POST /search: MassiveDS's response shape, plus the full hits."""

    message: str
    query: str | list[str]
    n_docs: int
    nprobe: int | None
    results: Results
    skipped_shards: dict[str, str] = Field(description="shards left out of the search, with why")
    ignored_fields: list[str] = Field(description="request fields this server does not know")
    took_ms: float


class Health(BaseModel):
    """GET /health."""

    status: str
    datastore: str
    passages: int
    shards: int
    skipped_shards: dict[str, str]


class ShardStatus(BaseModel):
    """One shard in GET /stats."""

    name: str
    domain: str
    passages: int
    status: str
    reason: str | None


class Stats(BaseModel):
    """GET /stats: the catalog summary, shard status, limits and server counters."""

    name: str
    format_version: int
    created: str | None
    embedder: dict[str, Any]
    index: dict[str, Any]
    passages: int
    domains: dict[str, dict[str, Any]]
    documents_kept: int | None
    dropped: dict[str, int]
    shards: list[ShardStatus]
    limits: dict[str, int]
    server: dict[str, Any]


class Context(BaseModel):
    """GET /passages/{passage_id}/context: a passage with the passages before and after it in its document."""

    passage: Passage
    previous: Passage | None = Field(description="the passage before it, when of the same document")
    next: Passage | None = Field(description="the passage after it, when of the same document")


@dataclass
class ParsedSearch:
    """A validated /search request."""

    queries: list[str]
    options: SearchOptions
    ignored: list[str]
    single: bool


def parse_search(body: bytes, ds: Datastore, max_k: int, max_queries: int) -> ParsedSearch:
    """Validate a /search body against the models, the datastore and the limits; raises ApiError."""
    try:
        request = SearchRequest.model_validate_json(body)
    except ValidationError as exc:
        raise ApiError(validation_message(exc)) from None
    fields = request.model_dump(exclude_unset=True)
    query = fields.pop("query")
    queries = [query] if isinstance(query, str) else query
    if len(queries) > max_queries:
        raise ApiError(f"at most {max_queries} queries per request, got {len(queries)}")
    n_docs = fields.pop("n_docs", 10)
    if not 1 <= n_docs <= max_k:
        raise ApiError(f"'n_docs' must be an integer in [1, {max_k}], got {n_docs!r}")
    domains = _domains(fields.pop("domains", None), ds)
    ignored = sorted(request.model_extra or {})
    options = {name: value for name, value in fields.items() if name in OPTION_FIELDS and value is not None}
    try:
        check_queries(queries)
        if domains is not None:
            ds.shards.select(domains)
        return ParsedSearch(queries, SearchOptions.create(k=n_docs, domains=domains, **options), ignored, isinstance(query, str))
    except MassiveDSError as exc:
        raise ApiError(str(exc)) from None


def validation_message(exc: ValidationError) -> str:
    """The first problem of a failed validation, as one line that names the field."""
    error = exc.errors(include_url=False)[0]
    name = str(error["loc"][0]) if error["loc"] else ""
    value = error.get("input")
    if error["type"] == "json_invalid":
        return f"body is not valid JSON ({error.get('ctx', {}).get('error', error['msg'])})"
    if not name:
        return "body must be a JSON object with at least 'query'"
    if name == "query":
        return "'query' must be a non-empty string or a non-empty list of strings"
    if name == "n_docs":
        return f"'n_docs' must be an integer, got {value!r}"
    if name == "domains":
        return f"'domains' must be a domain name or a list of them, got {value!r}"
    if error["type"] == "literal_error":
        return f"{name} must be one of {', '.join(CHOICES[name])}, got {value!r}"
    if name in OPTION_FIELDS and error["type"] != "finite_number":
        return json_type_error(name, value) or f"'{name}': {error['msg']}"
    return f"'{name}': {error['msg']}, got {value!r}"


def _domains(value: str | list[str] | None, ds: Datastore) -> list[str] | None:
    """Requested domains; None (or the datastore's own name, as MassiveDS clients send) means all."""
    if value is None or value == ds.name or value == [ds.name]:
        return None
    if isinstance(value, str):
        return [d.strip() for d in value.split(",") if d.strip()] or None
    if value and all(value):
        return value
    raise ApiError(f"'domains' must be a domain name or a list of them, got {value!r}")


def search_response(request: ParsedSearch, result: SearchResult, took_ms: float, name: str) -> dict[str, Any]:
    """The MassiveDS-compatible response body (plus full hits) of one request."""
    single = request.single
    what = f"'{request.queries[0]}'" if single else f"{len(request.queries)} queries"
    return {
        "message": f"Search completed for {what} from {name}",
        "query": request.queries[0] if single else request.queries,
        "n_docs": request.options.k,
        "nprobe": request.options.nprobe,
        "results": {
            "IDs": [[h["passage_id"] for h in hits] for hits in result.hits],
            "passages": [[h["text"] for h in hits] for hits in result.hits],
            "scores": [[h["score"] for h in hits] for hits in result.hits],
            "hits": result.hits,
        },
        "skipped_shards": result.skipped_shards,
        "ignored_fields": request.ignored,
        "took_ms": round(took_ms, 3),
    }


def json_type_error(name: str, value: Any) -> str | None:
    """Why a JSON value cannot be option ``name`` (by its declared type in ``SearchOptions``), or None when it can."""
    hint = SearchOptions.fields()[name]
    if typing.get_origin(hint) is tuple:
        strings = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        return None if strings else f"'{name}' must be a string or a list of strings"
    kinds = set(typing.get_args(hint)) - {type(None)} or {hint}
    if bool in kinds:
        return None if isinstance(value, bool) else f"'{name}' must be true or false, got {value!r}"
    if int in kinds:
        return None if isinstance(value, int) and not isinstance(value, bool) else f"'{name}' must be an integer, got {value!r}"
    if float in kinds:
        return None if isinstance(value, int | float) and not isinstance(value, bool) else f"'{name}' must be a number, got {value!r}"
    return None if isinstance(value, str) else f"'{name}' must be a string, got {value!r}"
