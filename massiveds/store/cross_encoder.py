"""Cross-encoder rerank: a model reads each (query, passage) pair together and scores it, the step after retrieval.

Any sentence-transformers ``CrossEncoder`` (a local folder or a hub name; none ships with the project,
docs/search.md names trained ones). A model is loaded once per process and kept (the server keeps it warm);
on a GPU it runs in fp16. Passages longer than the model's limit are truncated by its tokenizer. The pairs of
every query of a batch are scored together, in the model's batches, so a batch of queries costs one pass.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from massiveds.core.errors import MassiveDSError

#: How a cross-encoder is named in the ``rerank`` option: ``cross-encoder:<model>``.
PREFIX = "cross-encoder:"
#: Candidates a cross-encoder scores per query when ``rerank_depth`` is not given.
DEFAULT_DEPTH = 100
#: Tokens of a (query, passage) pair at most, when the model's own configuration sets no limit.
MAX_PAIR_TOKENS = 512
#: Pairs per forward pass.
BATCH_PAIRS = 32

_loaded: dict[str, CrossEncoderModel] = {}
_loading = threading.Lock()


@dataclass
class CrossEncoderModel:
    """A loaded cross-encoder: ``scores`` of (query, passage) pairs, higher is more relevant."""

    name: str
    model: Any
    lock: threading.Lock

    def scores(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """The model's score of each pair (float32), in the order given; batching does not change them."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        with self.lock:  # one forward pass at a time: the server's workers call from threads
            out = self.model.predict([list(p) for p in pairs], batch_size=BATCH_PAIRS, show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32).reshape(len(pairs))


def cross_encoder(name: str) -> CrossEncoderModel:
    """The cross-encoder ``name`` (a folder or a hub name), loaded on first use in this process and kept."""
    with _loading:
        if name not in _loaded:
            _loaded[name] = _load(name)
        return _loaded[name]


def _load(name: str) -> CrossEncoderModel:
    """Load ``name`` as a cross-encoder; a model of another kind (an embedder), or none, is a one-line error."""
    from sentence_transformers import CrossEncoder

    from massiveds.encode.embed import pick_device

    folder = Path(name).expanduser()
    device = pick_device("auto")
    try:
        model = CrossEncoder(str(folder) if folder.exists() else name, device=device, local_files_only=not folder.exists())
    except (OSError, ValueError) as exc:
        raise MassiveDSError(f"cross-encoder {name!r} cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                             "give a CrossEncoder's folder, or a hub name in the local cache") from None
    architectures = list(getattr(model.config, "architectures", None) or [])
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        kind = ", ".join(map(str, architectures)) or "no declared architecture"
        raise MassiveDSError(f"{name!r} holds a {kind} model, not a cross-encoder (a ...ForSequenceClassification model that "
                             "scores (query, passage) pairs): an embedder is not a reranker")
    if model.num_labels != 1:
        raise MassiveDSError(f"cross-encoder {name!r} has {model.num_labels} outputs; a reranker scores each pair with one")
    if model.max_seq_length is None or model.max_seq_length > MAX_PAIR_TOKENS:
        model.max_seq_length = MAX_PAIR_TOKENS
    if device.startswith("cuda"):
        model.half()
    model.eval()
    return CrossEncoderModel(name, model, threading.Lock())
