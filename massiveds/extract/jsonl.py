"""JSON Lines input, plain or compressed (.zst, .gz, .bz2, .xz: inferred from the name), streamed."""

from __future__ import annotations

import json
from collections.abc import Iterator

from massiveds.extract.records import RawRecord
from massiveds.extract.stream import iter_lines


def read_jsonl(path: str) -> Iterator[RawRecord]:
    """Yield one record per non-blank line; a line that is not a JSON object becomes an error record."""
    for row, raw in enumerate(iter_lines(path)):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            yield RawRecord(row, None, "line is not valid UTF-8")
            continue
        except json.JSONDecodeError as exc:
            yield RawRecord(row, None, f"invalid JSON: {exc.msg}")
            continue
        if not isinstance(obj, dict):
            yield RawRecord(row, None, f"JSON value is a {type(obj).__name__}, not an object")
            continue
        yield RawRecord(row, obj)
