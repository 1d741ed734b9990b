"""A static embedder distilled offline from a local sentence-transformers model (model2vec), saved for ``embed.model``.

model2vec embeds every token of the source model's vocabulary once with the source model, reduces the
vectors by PCA to ``dims`` and weights them by token frequency (Zipf); the result is a lookup table that a
``StaticEmbedding`` mean-pools. It needs no corpus and no hub: only the source model on disk.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import atomic_path, sha256_file
from massiveds.encode.embed import resolve_model

INSTALL_HINT = "pip install 'massiveds[static]'"


@dataclass(frozen=True)
class Distilled:
    """What a distillation made: where, from what, its width and vocabulary, and how long it took."""

    out: Path
    source: str
    dims: int
    vocabulary: int
    bytes: int
    seconds: float


def distill_static(source: str, out: Path, dims: int = 256) -> Distilled:
    """Distil ``source`` (a sentence-transformers folder or an offline-packaged model name) into a static model at ``out``."""
    if dims < 2:
        raise MassiveDSError(f"--dims {dims}: a static model needs at least 2 dimensions")
    if out.exists() and any(out.iterdir()):
        raise MassiveDSError(f"{out} is not empty: give a new --out folder (or delete this one)")
    location = resolve_model(source)
    if not Path(location).is_dir():
        raise MassiveDSError(f"{source!r} is not a local model folder (nor a packaged offline model): distillation runs offline "
                             "from a sentence-transformers model on disk")
    try:
        import model2vec.distill  # noqa: F401  (what StaticEmbedding.from_distillation calls)
    except ImportError:
        raise MassiveDSError(f"distilling a static model needs model2vec: {INSTALL_HINT}") from None
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import StaticEmbedding

    width = SentenceTransformer(location, device="cpu").get_embedding_dimension() or 0
    if dims > width:
        raise MassiveDSError(f"--dims {dims} is wider than {source!r} ({width} dimensions): PCA can only reduce; "
                             f"use --dims {width} or fewer")
    # it warns that model2vec 0.10 dropped two options it passes (apply_zipf, use_subword): their defaults hold
    logging.getLogger(StaticEmbedding.__module__).setLevel(logging.ERROR)
    clock = time.perf_counter()
    try:
        module = StaticEmbedding.from_distillation(location, pca_dims=dims, device="cpu")
    except (OSError, ValueError, RuntimeError) as exc:
        raise MassiveDSError(f"cannot distil {source!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    seconds = time.perf_counter() - clock
    with atomic_path(out) as tmp:
        SentenceTransformer(modules=[module], device="cpu").save(str(tmp))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return Distilled(out, source, dims, module.num_embeddings, size, seconds)


#: The packages whose code distils (model2vec, through sentence-transformers) and runs the source model.
DISTILLING_PACKAGES = ("model2vec", "sentence-transformers", "transformers", "tokenizers", "torch")


def _version(package: str) -> str:
    """The installed version of ``package`` ("absent" when it is not installed)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def static_cache_key(source: str, dims: int) -> str:
    """A digest of what a distilled model depends on: this module's code, the distilling packages, ``dims``, the source model's files."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update("".join(f"{p} {_version(p)}\n" for p in DISTILLING_PACKAGES).encode())
    digest.update(f"dims {dims}\n".encode())
    folder = Path(resolve_model(source))
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    digest.update("".join(f"{p.relative_to(folder).as_posix()} {sha256_file(p)}\n" for p in files).encode() or source.encode())
    return digest.hexdigest()[:16]


def cached_static(source: str, cache: Path, dims: int = 256) -> Path:
    """A static model distilled from ``source`` once into ``cache`` and reused (tests, benchmarks) until what it is made from changes.

    The folder is named by ``static_cache_key``: a change to the distillation code, its packages, ``dims`` or the
    source model's files distils again, into a new folder.
    """
    out = cache / f"static-{Path(source).name}-{dims}-{static_cache_key(source, dims)}"
    if not (out / "modules.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        distill_static(source, out, dims)
    return out
