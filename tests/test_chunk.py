"""Word chunking: window sizes, overlap, the min_size tail rule and offsets back into the document."""

from __future__ import annotations

import pyarrow as pa
import pytest

from massiveds.core.manifest import Chunk
from massiveds.core.schema import DOCUMENTS
from massiveds.encode.chunk import chunk_documents, word_windows

# Real text: the opening of Hamlet's soliloquy (public domain), with irregular whitespace.
TEXT = """To be, or not to be, that is the question:
Whether 'tis nobler in the mind to suffer
The slings and arrows of outrageous fortune,
Or to take arms against a sea of troubles
And by opposing end them. To die—to sleep,
No more;  and by a sleep to say we end
The heart-ache and the thousand natural shocks
That flesh is heir to: 'tis a consummation
Devoutly to be wish'd."""
WORDS = TEXT.split()


def texts(text: str, windows: list[tuple[int, int, int]]) -> list[str]:
    return [text[a:b] for a, b, _ in windows]


def test_windows_cover_the_text_exactly_in_order() -> None:
    windows = word_windows(TEXT, size=10)
    assert [n for *_, n in windows] == [10] * 7 + [len(WORDS) - 70]
    joined = " ".join(" ".join(t.split()) for t in texts(TEXT, windows))
    assert joined == " ".join(WORDS)
    for a, b, n in windows:
        piece = TEXT[a:b]
        assert piece == piece.strip() and len(piece.split()) == n


def test_short_tail_joins_previous_passage() -> None:
    assert len(WORDS) == 71  # windows of 20 leave a tail of 11
    merged = word_windows(TEXT, size=20, min_size=12)
    assert [w[2] for w in merged] == [20, 20, 31]
    assert merged[-1][1] == len(TEXT)
    kept = word_windows(TEXT, size=20, min_size=11)
    assert [w[2] for w in kept] == [20, 20, 20, 11]


def test_overlap_repeats_words_and_tail_counts_only_new_words() -> None:
    windows = word_windows(TEXT, size=20, overlap=5, min_size=1)
    starts = [len(TEXT[:a].split()) for a, _, _ in windows]
    assert starts == [0, 15, 30, 45, 60]
    assert windows[-1][2] == len(WORDS) - 60
    # the last window adds only 71-65=6 new words: with min_size 7 it joins the previous one
    merged = word_windows(TEXT, size=20, overlap=5, min_size=7)
    assert [len(TEXT[:a].split()) for a, _, _ in merged] == [0, 15, 30, 45]
    assert merged[-1][1] == len(TEXT)


def test_document_shorter_than_a_window_is_one_passage_and_empty_is_none() -> None:
    assert word_windows("just four words here", size=10, min_size=20) == [(0, 20, 4)]
    assert word_windows("   \n\t ", size=10) == []


@pytest.mark.parametrize("size", [7, 32, 200])
def test_chunk_documents_offsets_lead_back_to_the_document(size: int) -> None:
    docs = pa.Table.from_pylist(
        [
            {"doc_id": "hamlet", "domain": "books", "source": "s", "url": None, "title": "Hamlet", "text": TEXT, "meta": "{}", "_ord": 5},
            {
                "doc_id": "short",
                "domain": "books",
                "source": "s",
                "url": "u",
                "title": None,
                "text": "Brevity is the soul of wit.",
                "meta": "{}",
                "_ord": 9,
            },
        ],
        schema=DOCUMENTS,
    )
    passages = chunk_documents(docs, Chunk(size=size, min_size=3))
    by_doc = {"hamlet": TEXT, "short": "Brevity is the soul of wit."}
    rows = passages.to_pylist()
    assert rows[-1]["doc_id"] == "short" and rows[-1]["_chunk"] == 0
    for row in rows:
        assert by_doc[row["doc_id"]][row["char_start"] : row["char_end"]] == row["text"]
        assert row["n_tokens"] == len(row["text"].split())
    hamlet = [r for r in rows if r["doc_id"] == "hamlet"]
    assert [r["_chunk"] for r in hamlet] == list(range(len(hamlet)))
    assert sum(r["n_tokens"] for r in hamlet) == len(WORDS)


def test_token_windows_count_the_embedders_own_tokens() -> None:
    from massiveds.encode.chunk import token_spanner, windows
    from massiveds.encode.embed import load_tokenizer

    tokenizer = load_tokenizer("all-MiniLM-L6-v2")
    text = TEXT * 4  # longer than the tokenizer's own truncation length
    spans = token_spanner(tokenizer)(text)
    total = len(tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])
    assert len(spans) == total > 128
    retro = windows(spans, size=64, min_size=8)
    assert sum(n for *_, n in retro) == total
    assert all(n == 64 for *_, n in retro[:-1]) and 8 <= retro[-1][2] < 64 + 8
    for a, b, n in retro:
        assert abs(len(tokenizer(text[a:b], add_special_tokens=False)["input_ids"]) - n) <= 1  # a word cut at a boundary
