"""A datastore's documents, reassembled from their passages: what delete matches eval items against and append dedups against.

A passage's text is ``document.text[char_start:char_end]``, so a document's passages, in id order, rebuild
its text except for the whitespace between windows (filled with spaces, which every normalisation that
compares texts collapses). A document's passages are consecutive ids, possibly across the boundary of two
shards: the documents of a shard are those whose first passage it holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from massiveds.core.catalog import ShardRecord
from massiveds.core.layout import ShardFiles
from massiveds.core.passages import PassageFile
from massiveds.store.shard import deleted_mask

COLUMNS = ("doc_id", "source", "title", "url", "char_start", "text")


@dataclass
class Document:
    """One document of the datastore, as its passages rebuild it; ``deleted`` when any of its passages is."""

    doc_id: str
    source: str
    title: str | None
    url: str | None
    text: str = ""
    deleted: bool = False

    def add(self, start: int, part: str) -> None:
        """Place the passage that starts at character ``start`` (chunks may overlap or skip whitespace)."""
        self.text = self.text.ljust(start) + part[max(0, len(self.text) - start):]


def _rows(root: Path, shards: Sequence[ShardRecord]) -> Iterator[tuple[int, tuple[str, str, str | None, str | None, int, str], bool]]:
    """(shard position, row values, deleted) of every passage of ``shards``, in order."""
    for n, shard in enumerate(shards):
        folder = root / shard.folder_rel()
        gone = deleted_mask(folder, shard.count)
        passages = PassageFile(folder / ShardFiles.PASSAGES)
        row = 0
        for i in range(passages.num_batches):
            batch = passages.read_batch(i)
            for values in zip(*(batch.column(c).to_pylist() for c in COLUMNS), strict=True):
                yield n, values, bool(gone[row])
                row += 1


def documents(root: Path, shards: Sequence[ShardRecord], first: int = 0, last: int | None = None) -> Iterator[Document]:
    """The documents whose first passage lies in ``shards[first:last]`` (``shards`` in id order), deleted ones included."""
    last = len(shards) if last is None else last
    current: Document | None = None
    previous = _last_doc(root, shards[first - 1]) if first > 0 else None
    for n, (doc_id, source, title, url, start, part), gone in _rows(root, shards[first:]):
        if current is None or doc_id != current.doc_id:
            if current is not None:
                yield current
                current = None
            if n == 0 and doc_id == previous:
                continue  # the rest of a document of the shard before
            if first + n >= last:
                return
            current = Document(doc_id, source, title, url)
        previous = None
        current.add(start, part)
        current.deleted |= gone
    if current is not None:
        yield current


def _last_doc(root: Path, shard: ShardRecord) -> str | None:
    """The document id of a shard's last passage."""
    passages = PassageFile(root / shard.folder_rel() / ShardFiles.PASSAGES)
    if not passages.num_batches:
        return None
    ids = passages.read_batch(passages.num_batches - 1).column("doc_id")
    return str(ids[len(ids) - 1]) if len(ids) else None
