"""Sources of format ``hf``: a dataset read with the ``datasets`` library (hub or ``save_to_disk`` folder), written as Parquet parts.

The extract stage reads Parquet; an ``hf`` source is turned into ``part-NNNNN.parquet`` files of at
most ``rows_per_part`` rows in the download cache, listed in ``parts.json`` (written last: the
folder is complete once it exists). Hub datasets are streamed, so no split is held in memory.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import atomic_path, read_json, write_json
from massiveds.core.uris import hf_dataset
from massiveds.ingest.sources.fetch import describe, is_remote

PARTS = "parts.json"
ROWS_PER_PART = 100_000
READ_BATCH = 5_000


def _open_dataset(uri: str, config: str | None, split: str, revision: str | None, builder: str | None,
                  builder_options: dict[str, Any]) -> Any:
    import datasets

    if builder is not None:  # data files read by a packaged builder (csv, json, parquet, text), streamed
        return datasets.load_dataset(builder, data_files=uri, split="train", streaming=True, **builder_options)
    if is_remote(uri):
        repo, at = hf_dataset(uri)
        return datasets.load_dataset(repo, name=config, split=split, revision=revision or at, streaming=True)
    if not Path(uri).is_dir():
        raise MassiveDSError(f"{uri}: not a folder written by datasets' save_to_disk")
    ds = datasets.load_from_disk(uri)
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise MassiveDSError(f"{uri}: no split {split!r} (splits: {', '.join(ds)})")
        ds = ds[split]
    return ds


def materialize(
    uri: str,
    dest: str | Path,
    *,
    config: str | None = None,
    split: str = "train",
    revision: str | None = None,
    builder: str | None = None,
    builder_options: dict[str, Any] | None = None,
    rows_per_part: int = ROWS_PER_PART,
    on_rows: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write the dataset's rows into Parquet parts under ``dest`` unless that was done; returns the parts listing."""
    dest = Path(dest)
    if (dest / PARTS).is_file():
        return dict(read_json(dest / PARTS)) | {"fetched": False}
    shutil.rmtree(dest, ignore_errors=True)  # parts of an interrupted run
    try:
        ds = _open_dataset(uri, config, split, revision, builder, builder_options or {})
    except MassiveDSError:
        raise
    except Exception as exc:
        raise MassiveDSError(f"{uri}: cannot load the dataset ({describe(exc)})") from None
    parts: list[dict[str, Any]] = []
    writer: pq.ParquetWriter | None = None
    ctx: Any = None
    rows_in_part = 0

    def close() -> None:
        nonlocal writer, ctx
        if writer is not None:
            writer.close()
            ctx.__exit__(None, None, None)
            parts[-1]["rows"] = rows_in_part
            writer, ctx = None, None

    try:
        for table in ds.with_format("arrow").iter(batch_size=min(READ_BATCH, rows_per_part)):
            assert isinstance(table, pa.Table)
            start = 0
            while start < table.num_rows:
                if writer is None:
                    name = f"part-{len(parts):05d}.parquet"
                    parts.append({"file": name, "rows": 0})
                    ctx = atomic_path(dest / name)
                    writer, rows_in_part = pq.ParquetWriter(str(ctx.__enter__()), table.schema, compression="zstd"), 0
                take = min(table.num_rows - start, rows_per_part - rows_in_part)
                writer.write_table(table.slice(start, take))
                rows_in_part += take
                start += take
                if on_rows is not None:
                    on_rows(take)
                if rows_in_part >= rows_per_part:
                    close()
        close()
    except Exception as exc:
        if writer is not None:
            writer.close()
            ctx.__exit__(type(exc), exc, exc.__traceback__)
        if isinstance(exc, MassiveDSError):
            raise
        raise MassiveDSError(f"{uri}: reading the dataset failed ({describe(exc)})") from None
    listing = {"uri": uri, "config": config, "split": split, "revision": revision, "builder": builder,
               "rows": sum(p["rows"] for p in parts), "parts": parts}
    dest.mkdir(parents=True, exist_ok=True)
    write_json(dest / PARTS, listing)
    return listing | {"fetched": True}


def parts_of(dest: str | Path) -> list[Path]:
    """The Parquet parts of a materialised hf source, in order (raises if it was not materialised)."""
    dest = Path(dest)
    if not (dest / PARTS).is_file():
        raise MassiveDSError(f"{dest}: this hf source has not been downloaded yet; run the download stage first")
    return [dest / p["file"] for p in read_json(dest / PARTS)["parts"]]
