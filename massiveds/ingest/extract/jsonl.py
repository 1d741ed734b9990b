"""JSON Lines input, plain or compressed (.zst, .gz, .bz2, .xz, .zip: inferred from the name), streamed."""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator

from massiveds.ingest.extract.stream import DEFAULT_LIMITS, Limits, LongLine, iter_lines
from massiveds.ingest.extract.types import RawRecord

#: A ``\\uD800``-``\\uDFFF`` escape: JSON can spell a lone surrogate, which no UTF-8 text can hold.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _not_unicode(obj: object) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_jsonl(path: str, limits: Limits = DEFAULT_LIMITS) -> Iterator[RawRecord]:
    """Yield one record per non-blank line; a line that is not a JSON object of valid Unicode becomes an error record.

    A line over ``limits.max_record_bytes`` is skipped unread (``record_too_large``); a UTF-8 byte
    order mark before the first line is ignored.
    """
    for row, raw in enumerate(iter_lines(path, limits)):
        if isinstance(raw, LongLine):
            yield RawRecord(row, None, f"line of {raw.nbytes:,} bytes, over max_record_bytes ({limits.max_record_bytes:,})",
                            reason="record_too_large")
            continue
        if row == 0 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            yield RawRecord(row, None, f"line is not valid UTF-8 (byte {exc.start})")
            continue
        except json.JSONDecodeError as exc:
            yield RawRecord(row, None, f"invalid JSON: {exc.msg} (column {exc.colno})")
            continue
        except (ValueError, RecursionError) as exc:  # an integer of 4,300+ digits, arrays nested 1,000+ deep
            yield RawRecord(row, None, f"JSON that cannot be decoded: {exc}")
            continue
        if not isinstance(obj, dict):
            yield RawRecord(row, None, f"JSON value is a {type(obj).__name__}, not an object")
            continue
        if _SURROGATE_ESCAPE.search(raw) and _not_unicode(obj):
            yield RawRecord(row, None, "a string holds a lone surrogate (\\ud800-\\udfff escape): not valid Unicode")
            continue
        yield RawRecord(row, obj)
