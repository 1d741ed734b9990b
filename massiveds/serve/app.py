"""The ASGI app: routes, error replies, the OpenAPI schema with its local /docs, and the page.

Routes: ``POST /search`` (MassiveDS-compatible), ``GET /health``, ``GET /stats``,
``GET /passages/{id}/context`` (a passage with its neighbours in its document), ``GET /inspect`` and
``GET /inspect/plot`` (``massiveds inspect`` as JSON and its HTML plot), ``GET /openapi.json``, ``GET /docs``
(Swagger UI from the installed ``swagger-ui-py`` files: no CDN), ``GET /`` (the search page, ``static/``).
Every error is ``{"error": "one line"}``: 400 bad JSON or values, 404 unknown path or passage, 405 wrong
method, 413 body over the limit (refused from its Content-Length, before it is read), 503 search queue
full, no readable shard, or a search over the time limit; 500 only for a bug, and the server keeps answering.
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path as FilePath
from typing import Annotated, Any

import swagger_ui
from fastapi import FastAPI, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from massiveds.core.errors import MassiveDSError, ShardsUnavailableError
from massiveds.ops.stats import DatastoreStats, datastore_stats, list_sizes, write_plot
from massiveds.serve.engine import Batcher, Counters, QueueFull, ServeConfig
from massiveds.serve.models import (
    ApiError,
    Context,
    ErrorBody,
    Health,
    SearchRequest,
    SearchResponse,
    Stats,
    parse_search,
    search_response,
)
from massiveds.store.datastore import Datastore

STATIC = FilePath(__file__).parent / "static"
SWAGGER = FilePath(swagger_ui.__file__).parent / "static"
#: Passage ids are int64.
MAX_ID = 2**63 - 1
ROUTES = "POST /search, GET /health, GET /stats, GET / (the search page), GET /docs"
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 404, 405, 413, 503)}


def create_app(ds: Datastore, config: ServeConfig) -> FastAPI:
    """The app over an open datastore; its search thread starts now and stops with the app's lifespan."""
    counters = Counters()
    batcher = Batcher(ds, config, counters)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(title=f"massiveds: {ds.name}", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Search a retrieval datastore: MassiveDS-compatible POST /search, health, statistics, passage context.")
    app.state.counters = counters
    _error_replies(app, counters)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs-assets", StaticFiles(directory=SWAGGER), name="docs-assets")

    @app.post("/search", response_model=SearchResponse, response_model_exclude_unset=True, responses=ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/SearchRequest"}}}}})
    async def search(request: Request) -> Response:
        """Ranked passages for one query or a list of them (any Content-Type; the body is JSON)."""
        start = time.perf_counter()
        parsed = parse_search(await read_body(request, config.max_body), ds, config.max_k, config.max_queries)
        try:
            future = batcher.submit(parsed.queries, parsed.options)
            result = await asyncio.wait_for(asyncio.wrap_future(future), config.timeout_s)
        except QueueFull as exc:
            raise ApiError(str(exc), HTTPStatus.SERVICE_UNAVAILABLE) from None
        except TimeoutError:
            raise ApiError(f"search did not finish in {config.timeout_s:.0f} s", HTTPStatus.SERVICE_UNAVAILABLE) from None
        except ShardsUnavailableError as exc:
            raise ApiError(str(exc), HTTPStatus.SERVICE_UNAVAILABLE) from None
        except MassiveDSError as exc:
            raise ApiError(str(exc)) from None
        took = (time.perf_counter() - start) * 1000
        counters.answered(len(parsed.queries), took)
        reply = SearchResponse.model_validate(search_response(parsed, result, took, ds.name))  # checked, then written by pydantic-core
        return Response(reply.model_dump_json(exclude_unset=True), media_type="application/json")

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    def health() -> Any:
        """Whether any shard can be searched, with the passages and shards that can."""
        usable, skipped = ds.usable_shards()
        body = {"status": "ok" if usable else "unavailable", "datastore": ds.name, "passages": sum(s.count for s in usable),
                "shards": len(usable), "skipped_shards": skipped}
        return body if usable else JSONResponse(body, HTTPStatus.SERVICE_UNAVAILABLE)

    @app.get("/stats", response_model=Stats)
    def stats() -> dict[str, Any]:
        """The catalog summary (embedder, index, domains, drops), shard status, limits and server counters."""
        cat, index = ds.catalog, ds.catalog.index
        shards = []
        for shard in ds.shards:
            err = ds.shards.error(shard)
            status = "ok" if err is None else "skipped"
            shards.append({"name": shard.name, "domain": shard.domain, "passages": shard.count, "status": status, "reason": err})
        return {
            "name": ds.name, "format_version": cat.format_version, "created": cat.created, "embedder": cat.embedder.as_json(),
            "index": {"type": index.type, "factory": index.factory, "nlist": index.nlist, "pq_m": index.pq_m, "nprobe": index.nprobe},
            "passages": ds.num_passages, "domains": {name: totals.as_json() for name, totals in cat.domains.items()},
            "documents_kept": cat.build.documents_kept, "dropped": cat.build.dropped, "shards": shards,
            "limits": {"max_n_docs": config.max_k, "max_queries": config.max_queries, "max_body_bytes": config.max_body,
                       "max_queue": config.max_queue},
            "server": counters.summary(),
        }

    @app.get("/passages/{passage_id}/context", response_model=Context, responses=ERRORS)
    def context(passage_id: Annotated[int, Path(ge=0, le=MAX_ID)]) -> dict[str, Any]:
        """A passage with the passages before and after it when they are of the same document (RETRO's continuation, both ways)."""
        if not ds.shards.has_passage(passage_id):
            raise ApiError(f"no passage {passage_id} in {ds.name}", HTTPStatus.NOT_FOUND)
        ids = [p for p in (passage_id - 1, passage_id, passage_id + 1) if p >= 0 and ds.shards.has_passage(p)]
        found = dict(zip(ids, ds.passages(ids), strict=True))
        passage = found[passage_id]
        near = {p: found[p] if p in found and found[p]["doc_id"] == passage["doc_id"] else None for p in (passage_id - 1, passage_id + 1)}
        return {"passage": passage, "previous": near[passage_id - 1], "next": near[passage_id + 1]}

    # computed once per version of the catalog: a delete, append or compact while serving shows at the next request
    @functools.lru_cache(maxsize=1)
    def stats_of(stamp: tuple[tuple[int, int, int], ...]) -> DatastoreStats:
        return datastore_stats(ds.root)

    @functools.lru_cache(maxsize=1)
    def plot_of(stamp: tuple[tuple[int, int, int], ...]) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            out = FilePath(tmp) / "inspect.html"
            write_plot(stats_of(stamp), list_sizes(ds.root), out)
            return out.read_text()

    @app.get("/inspect")
    def inspect() -> dict[str, Any]:
        """``massiveds inspect --json``: per domain and shard counts, bytes on disk, index, list balance, recall, drops."""
        return stats_of(ds.catalog_stamp()).to_dict()

    @app.get("/inspect/plot", response_class=HTMLResponse)
    def inspect_plot() -> str:
        """``massiveds inspect --plot``: tokens per domain and inverted-list sizes, as an HTML page."""
        return plot_of(ds.catalog_stamp())

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"massiveds: {ds.name} (API)",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js", swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")

    app.openapi = functools.partial(_openapi, app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema with the SearchRequest model, which /search validates itself (so that any Content-Type is read as JSON),
    and without FastAPI's 422 replies: this app answers a bad parameter with a one-line 400 (``ErrorBody``)."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        models = schema["components"]["schemas"]
        models["SearchRequest"] = SearchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        for name in ("HTTPValidationError", "ValidationError"):
            models.pop(name, None)
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation["responses"].pop("422", None)
        app.openapi_schema = schema
    return app.openapi_schema


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes: by its Content-Length before reading, or while reading a chunked one."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(f"body of {declared} bytes is over the {limit}-byte limit", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(f"body is over the {limit}-byte limit", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            chunks.append(chunk)
    except ClientDisconnect:  # the client's fault, not the server's (and no one reads the reply)
        raise ApiError("the client went away before sending its whole body") from None
    if not size:
        raise ApiError("the body is empty; send a JSON object with at least 'query'")
    return b"".join(chunks)


def _error_replies(app: FastAPI, counters: Counters) -> None:
    """Every error as ``{"error": "one line"}``, counted for /stats."""

    def reply(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
        counters.error(status)
        return JSONResponse({"error": message}, status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return reply(exc.status, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        path = request.url.path
        if exc.status_code == HTTPStatus.NOT_FOUND:
            return reply(exc.status_code, f"no such endpoint {path!r}; try {ROUTES}")
        if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
            allowed = (exc.headers or {}).get("Allow", "")
            return reply(exc.status_code, f"method {request.method} is not allowed on {path}; use {allowed} {path}", exc.headers)
        return reply(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = exc.errors()[0]
        return reply(HTTPStatus.BAD_REQUEST, f"'{error['loc'][-1]}': {error['msg']}, got {error.get('input')!r}")

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        return reply(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(exc).__name__}: {exc}")
