"""The download stage as Ray-free work units: one remote file (or one ``hf`` dataset) per unit.

``massiveds.ingest.sources.plan.plan_downloads`` makes the items; ``download_unit`` fetches one into the
build's download cache (``build/download/files/...``) and returns what it did. A unit that finds its
file already cached and verified moves no bytes, so a re-run (even without unit markers) fetches
nothing twice. ``run_download`` runs the units through any runner of the ``run(step, fn, items,
kwargs)`` shape (the build's Ray runner, or ``run_threads`` here) and summarises them.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from massiveds.core.errors import MassiveDSError
from massiveds.ingest.sources.fetch import CHUNK, RetryPolicy, fetch
from massiveds.ingest.sources.hf import materialize
from massiveds.ingest.sources.plan import download_cache

Runner = Callable[[str, Callable[..., dict[str, Any]], list[dict[str, Any]], dict[str, Any]], list[dict[str, Any]]]


def download_unit(item: dict[str, Any], build: str | Path, attempts: int = 6, backoff: float = 0.5, chunk: int = CHUNK) -> dict[str, Any]:
    """Fetch one planned file (or materialise one hf dataset) into the download cache; raise FetchError on failure."""
    cache = download_cache(build)
    dest = cache / "files" / item["dest"]
    if item["kind"] == "hf":
        listing = materialize(item["uri"], dest, config=item.get("config"), split=item.get("split", "train"), revision=item.get("revision"),
                              builder=item.get("builder"), builder_options=item.get("builder_options"))
        size = sum((dest / p["file"]).stat().st_size for p in listing["parts"])
        return {"unit": item["unit"], "kind": "hf", "source": item["source"], "uri": item["uri"], "rows": listing["rows"],
                "parts": len(listing["parts"]), "bytes": size, "fetched": listing["fetched"], "attempts": 1}
    result = fetch(item["uri"], dest, sha256=item.get("sha256"), quarantine_dir=cache / "quarantine",
                   storage_options=item.get("storage_options") or {}, policy=RetryPolicy(attempts=attempts, base=backoff), chunk=chunk)
    return {"unit": item["unit"], "kind": "file", "source": item["source"]} | result.to_dict()


#: A user error as it appears in a remote traceback's text: ``massiveds.ingest.sources.fetch.FetchError: <message>``.
_REMOTE_ERROR = re.compile(r"^massiveds\.[\w.]+\.(?:\w*Error|ChecksumMismatch): (.+)$", re.MULTILINE)


def _user_error(exc: BaseException) -> MassiveDSError | None:
    """The MassiveDSError behind an exception a runner wrapped, if any.

    Ray Data re-raises a failed unit as ``UserCodeException``, keeping the original exception only
    in the text of the remote traceback, so that text is searched when the chain has none.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, MassiveDSError):
            return e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    found = _REMOTE_ERROR.findall(str(exc))
    return MassiveDSError(found[-1].strip()) if found else None


def run_download(run: Runner, items: list[dict[str, Any]], build: str | Path, **unit_kwargs: Any) -> dict[str, Any]:
    """Run the download units with ``run`` and return the stage result (counts, bytes, a one-line summary)."""
    try:
        results = run("download", download_unit, items, {"build": Path(build)} | unit_kwargs)
    except MassiveDSError:
        raise
    except Exception as exc:
        if (err := _user_error(exc)) is not None:
            raise MassiveDSError(str(err)) from None
        raise
    fetched = [r for r in results if r["fetched"]]
    per_source: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for r in results:
        per_source[r["source"]].update({"files": 1, "bytes": r["bytes"], "fetched": int(r["fetched"])})
    total, moved = sum(r["bytes"] for r in results), sum(r["bytes"] for r in fetched)
    retried = sum(max(0, r["attempts"] - 1) for r in results)
    return {
        "files": len(results),
        "fetched": len(fetched),
        "bytes": total,
        "bytes_fetched": moved,
        "retries": retried,
        "sources": {s: dict(c) for s, c in per_source.items()},
        "summary": f"{len(results)} files ({total / 1e6:,.1f} MB): {len(fetched)} fetched, "
        f"{len(results) - len(fetched)} cached, {retried} retries",
    }


def run_threads(workers: int = 8, on_result: Callable[[dict[str, Any]], None] | None = None) -> Runner:
    """A runner that runs units on a thread pool in this process (downloads are I/O bound), failing on the first error."""

    def run(step: str, fn: Callable[..., dict[str, Any]], items: list[dict[str, Any]], kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        results: dict[str, dict[str, Any]] = {}
        with cf.ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=step) as pool:
            futures = {pool.submit(fn, item, **kwargs): item["unit"] for item in items}
            try:
                for fut in cf.as_completed(futures):
                    results[futures[fut]] = fut.result()
                    if on_result is not None:
                        on_result(results[futures[fut]])
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return [results[i["unit"]] for i in items]

    return run
