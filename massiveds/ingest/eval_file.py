"""Evaluation files (questions with their gold, reference texts) read as the build reads its inputs.

One reader for every command that takes such a file (``eval``, ``leakage``, ``delete --eval``, the
decontaminate stage): any manifest format with a reader, a local path or an fsspec URL, compressed or not.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from massiveds.core.errors import MassiveDSError
from massiveds.ingest.extract import reader_for
from massiveds.ingest.extract.stream import DEFAULT_LIMITS
from massiveds.ingest.extract.types import RawRecord


def eval_records(path: str, fmt: str = "jsonl") -> Iterator[RawRecord]:
    """Each record of the evaluation file ``path`` in format ``fmt``, in order: its row and fields, or why it cannot be read."""
    try:
        yield from reader_for(fmt)(path, DEFAULT_LIMITS)
    except FileNotFoundError:
        raise MassiveDSError(f"{path}: evaluation file not found") from None
    except (OSError, ValueError, ImportError) as exc:
        raise MassiveDSError(f"{path}: cannot read the evaluation file ({type(exc).__name__}: {exc})") from None


def record_text(fields: dict[str, Any], names: Sequence[str]) -> str:
    """The text of a record's ``names`` fields, joined by newlines (lists and objects flattened, absent fields left out)."""
    return "\n".join(t for t in (_text(fields.get(name)) for name in names) if t)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return "\n".join(_text(v) for v in value)
    if isinstance(value, dict):
        return "\n".join(_text(v) for v in value.values())
    return str(value)
