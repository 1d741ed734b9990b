"""A static embedding model run with ``tokenizers`` and NumPy: the vectors sentence-transformers gives, without torch.

A folder whose only module is sentence-transformers' ``StaticEmbedding`` (what ``massiveds distill-embedder`` writes)
is a token table and a tokenizer: a passage's vector is the mean of its tokens' rows (an ``EmbeddingBag`` in mean
mode; no special tokens; an empty passage gives zeros), computed as a sparse passages x vocabulary count matrix
times the table (SciPy), which never gathers the tokens' rows into one array. Loading sentence-transformers imports
torch and transformers first, seconds and hundreds of MiB in every process that embeds (each embedding worker, each
server worker), for a lookup NumPy and SciPy do as fast.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

#: the module type of a static model in ``modules.json``, and its files
MODULE = "StaticEmbedding"
WEIGHTS, TOKENIZER, TABLE = "model.safetensors", "tokenizer.json", "embedding.weight"


def is_static_folder(folder: str | Path) -> bool:
    """Whether ``folder`` is a local sentence-transformers model made of one ``StaticEmbedding`` module and nothing else."""
    root = Path(folder)
    try:
        modules = json.loads((root / "modules.json").read_text())
    except (OSError, ValueError):
        return False
    return (len(modules) == 1 and str(modules[0].get("type", "")).rsplit(".", 1)[-1] == MODULE and not modules[0].get("path")
            and (root / WEIGHTS).is_file() and (root / TOKENIZER).is_file())


class StaticModel:
    """A ``StaticEmbedding`` folder loaded as a token table (float32, memory as the file) and a ``tokenizers.Tokenizer``."""

    def __init__(self, folder: str | Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        root = Path(folder)
        assert is_static_folder(root), f"{root} is not a static model folder"
        self.tokenizer: Any = Tokenizer.from_file(str(root / TOKENIZER))
        self.table = np.ascontiguousarray(load_file(str(root / WEIGHTS))[TABLE], dtype=np.float32)
        self.dim = int(self.table.shape[1])

    def encode(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """The mean token vector of each text (unnormalized) and the tokens read, tokenized once."""
        from scipy.sparse import csr_matrix

        ids = [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        tokens = int(lengths.sum())
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=tokens)
        counts = csr_matrix((np.ones(tokens, dtype=np.float32), flat, np.concatenate([[0], np.cumsum(lengths)])),
                            shape=(len(texts), len(self.table)))
        sums = np.asarray(counts @ self.table, dtype=np.float32)
        return sums / np.maximum(lengths, 1)[:, None].astype(np.float32), tokens
