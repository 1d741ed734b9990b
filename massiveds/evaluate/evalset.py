"""Evaluation sets: JSONL files (local or any fsspec URL) of queries with their gold, read and checked up front.

Each line is a JSON object with a query and at least one kind of gold: answer strings (a hit containing
one, after normalisation, answers the query: DPR's top-k accuracy), gold document ids, gold passage
ids. The field names are the caller's; a bad line is a one-line error naming the file and the line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import fsspec

from massiveds.core.errors import MassiveDSError
from massiveds.ingest.eval_file import eval_records


@dataclass(frozen=True)
class EvalFields:
    """Which JSON fields hold the query and each kind of gold (None: the set has none of that kind)."""

    query: str = "question"
    answers: str | None = "answers"
    gold_doc: str | None = None
    gold_passage: str | None = None


@dataclass(frozen=True)
class EvalItem:
    """One query and its gold: answer strings, document ids, passage ids (each possibly empty)."""

    query: str
    answers: tuple[str, ...] = ()
    gold_docs: tuple[str, ...] = ()
    gold_passages: tuple[int, ...] = ()


@dataclass(frozen=True)
class EvalSet:
    """The items of one eval file, where it came from and the sha256 of its bytes (for a reproducible report)."""

    name: str
    source: str
    sha256: str
    items: tuple[EvalItem, ...]
    #: the kinds of gold every item has: of "answer", "doc", "passage"
    kinds: tuple[str, ...]


def read_eval_set(source: str, fields: EvalFields, name: str | None = None) -> EvalSet:
    """The eval set in the JSONL file at ``source`` (path or fsspec URL; compressed or not), read by ``eval_records``."""
    items: list[EvalItem] = []
    answers_field = fields.answers
    for record in eval_records(source):
        where, row = f"{source}, line {record.row + 1}", record.fields
        if row is None:
            raise MassiveDSError(f"{where}: not a JSON object ({record.error}); each line must be one")
        if not items and answers_field == EvalFields.answers and answers_field not in row and (fields.gold_doc or fields.gold_passage):
            answers_field = None  # the default answers field, absent from a set that names other gold
        items.append(_item(row, fields, answers_field, where))
    if not items:
        raise MassiveDSError(f"{source}: no evaluation items (the file is empty)")
    kinds = tuple(kind for kind, field in (("answer", answers_field), ("doc", fields.gold_doc), ("passage", fields.gold_passage)) if field)
    if not kinds:
        raise MassiveDSError(f"{source}: no gold to evaluate against; name --answers-field, --gold-doc-field or --gold-passage-field")
    return EvalSet(name or _stem(source), source, _sha256(source), tuple(items), kinds)


def _sha256(source: str) -> str:
    """The sha256 of the file's bytes (a compressed file's once decompressed): which questions a report was measured on."""
    digest = hashlib.sha256()
    with fsspec.open(source, "rb", compression="infer") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _item(row: dict[str, Any], fields: EvalFields, answers_field: str | None, where: str) -> EvalItem:
    """The item of one parsed line; raises naming ``where`` when a field is missing or of the wrong type."""
    query = row.get(fields.query)
    if not isinstance(query, str):
        got = "missing" if query is None else f"a {type(query).__name__}"
        raise MassiveDSError(f"{where}: the query field {fields.query!r} is {got}; name the right one with --query-field")
    if not query.strip():
        raise MassiveDSError(f"{where}: the query is empty")
    answers = _strings(row, answers_field, where, "--answers-field") if answers_field else ()
    docs = _strings(row, fields.gold_doc, where, "--gold-doc-field") if fields.gold_doc else ()
    passages = _passage_ids(row, fields.gold_passage, where) if fields.gold_passage else ()
    return EvalItem(query, answers, docs, passages)


def _strings(row: dict[str, Any], field: str, where: str, flag: str) -> tuple[str, ...]:
    """A field holding one non-empty string or a non-empty list of them (ids may be numbers: made strings)."""
    value = row.get(field)
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str | int) and not isinstance(v, bool) and str(v).strip() for v in values):
        got = "missing" if field not in row else f"{json.dumps(value)[:60]}"
        raise MassiveDSError(f"{where}: field {field!r} must be a non-empty string or list of them, got {got}; "
                             f"name the right one with {flag}")
    return tuple(str(v) for v in values)


def _passage_ids(row: dict[str, Any], field: str, where: str) -> tuple[int, ...]:
    """A field holding one passage id (an integer) or a non-empty list of them."""
    value = row.get(field)
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        got = "missing" if field not in row else f"{json.dumps(value)[:60]}"
        raise MassiveDSError(f"{where}: field {field!r} must be a passage id (integer ≥ 0) or a list of them, got {got}; "
                             "name the right one with --gold-passage-field")
    return tuple(int(v) for v in values if isinstance(v, int))


def _stem(source: str) -> str:
    """A short name for an eval file: its file name without the extensions."""
    return source.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0] or source
