"""The build manifest: one YAML file per domain, validated with pydantic, every knob defaulted.

A manifest names *what* to build (sources, domain) and *how* (filters, dedup, chunking, embedder,
index, sharding). Unknown fields and bad values are rejected with one line that names the file
and the field, before any work starts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from massiveds.core.errors import ManifestError
from massiveds.core.formats import FORMATS, MARKUPS

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Auto = Literal["auto"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """One input: a local path or glob (relative to the manifest), or a remote URL or glob, and its fields."""

    uri: str = Field(description="path or glob relative to the manifest, absolute path, or http(s)://, s3://, hf://datasets/<repo>/<path> "
                     "(globs expand through fsspec, except over http); for format hf: hf://datasets/<repo> or a save_to_disk folder")
    format: str = Field(default="jsonl", description="one of massiveds.core.formats.FORMATS: " + ", ".join(FORMATS))
    name: str | None = Field(default=None, description="label in doc ids and reports; default: the uri")
    text_field: str = Field(default="text", description="the field holding the document's text")
    id_field: str | None = Field(default=None, description="the field holding the source's own document id; default: <file>#<row>")
    title_field: str | None = Field(default=None, description="the field holding the title (default for file formats: the title found)")
    url_field: str | None = Field(default=None, description="the field holding the URL (default for file formats: the URL found)")
    sha256: str | None = Field(default=None, description="the file's sha256, verified before the build (local) or after the download "
                               "(remote)")
    markup: str = Field(
        default="none",
        description="markup held by the text field, turned into plain text at extraction "
        "(default: none; html for html/warc, wikitext for wikitext, latex for latex files)",
    )
    markup_field: str | None = Field(
        default=None, description="a field naming each row's own markup (one of the markup values); overrides markup"
    )
    html_extractor: Literal["trafilatura", "resiliparse"] = Field(
        default="trafilatura", description="what turns HTML into text: trafilatura, or resiliparse (pip install resiliparse)"
    )
    storage_options: dict[str, Any] = Field(
        default={}, description="fsspec options of a remote source (e.g. {endpoint_url: ..., anon: true} for s3)"
    )
    uri_list: bool = Field(
        default=False, description="uri names a text file of URLs, one per line (e.g. RedPajama's urls/*.txt); each is an input"
    )
    include: str | None = Field(default=None, description="keep only the expanded URIs (glob or list) that match this regex")
    builder: str | None = Field(
        default=None, description="format hf: read uri as data files with this datasets builder (csv, json, parquet, text)"
    )
    builder_options: dict[str, Any] = Field(default={}, description="format hf: options of the builder (e.g. {delimiter: \"\\t\"})")
    config: str | None = Field(default=None, description="format hf: the dataset configuration (subset) name")
    split: str = Field(default="train", description="format hf: the split to read")
    revision: str | None = Field(default=None, description="format hf: a branch, tag or commit of the hub dataset")
    estimated_documents: NonNegativeInt | None = Field(default=None, description="expected documents in this source (for plan)")
    estimated_tokens: NonNegativeInt | None = Field(default=None, description="expected tokens in this source (for plan)")
    estimated_bytes: NonNegativeInt | None = Field(default=None, description="expected download size in bytes (for plan)")

    @model_validator(mode="before")
    @classmethod
    def _format_defaults(cls, data: Any) -> Any:
        fmt = FORMATS.get(data.get("format", "")) if isinstance(data, dict) else None
        if fmt is not None and fmt.file_records:
            data = dict(data)
            data.setdefault("title_field", "title")
            data.setdefault("url_field", "url")
            data.setdefault("markup", fmt.markup)
        return data

    @field_validator("html_extractor")
    @classmethod
    def _extractor_installed(cls, value: str) -> str:
        if value == "resiliparse" and importlib.util.find_spec("resiliparse") is None:
            raise ValueError("html_extractor 'resiliparse' needs the resiliparse package; pip install resiliparse")
        return value

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in FORMATS:
            raise ValueError(f"format {value!r} is not supported yet; use one of {', '.join(FORMATS)}")
        return value

    @field_validator("markup")
    @classmethod
    def _known_markup(cls, value: str) -> str:
        if value not in MARKUPS:
            raise ValueError(f"markup {value!r} is not known; use one of {', '.join(MARKUPS)}")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower())):
            raise ValueError("sha256 must be 64 hexadecimal characters")
        return value

    @model_validator(mode="after")
    def _check_uri(self) -> Source:
        from massiveds.core.uris import check_uri

        check_uri(self.uri, self.format, builder=self.builder, uri_list=self.uri_list)
        if self.format != "hf" and (self.config is not None or self.builder is not None):
            raise ValueError("config and builder apply to format hf only")
        if self.include is not None:
            try:
                re.compile(self.include)
            except re.error as exc:
                raise ValueError(f"include is not a valid regular expression ({exc})") from None
        return self

    @property
    def label(self) -> str:
        """The source's name as it appears in doc ids, drop records and reports."""
        return self.name or self.uri


class Filters(_Strict):
    """Document-level filters applied after text normalisation (see massiveds.clean.quality), and the
    input limits the readers apply (see massiveds.ingest.extract.stream).

    Every quality threshold can be set to ``null`` to disable it. The defaults are loose enough to
    keep prose, reference text, LaTeX and source code (measured on the project's shared data) and
    to drop what is clearly not text: base64 blobs, symbol soup, pages of one repeated line.
    """

    min_words: NonNegativeInt = Field(default=20, description="drop documents of fewer whitespace-separated words (too_few_words)")
    max_words: PositiveInt | None = Field(default=1_000_000, description="drop documents of more words (too_many_words)")
    min_mean_word_length: NonNegativeFloat | None = Field(
        default=2.0, description="drop documents whose words average fewer characters (mean_word_length_low)"
    )
    max_mean_word_length: PositiveFloat | None = Field(
        default=30.0, description="drop documents whose words average more characters (mean_word_length_high)"
    )
    max_symbol_ratio: NonNegativeFloat | None = Field(
        default=0.5, description="drop documents with more runs of '#', '...' or '…' per word (symbol_ratio)"
    )
    min_alpha_ratio: Fraction | None = Field(
        default=0.35, description="drop documents where a smaller fraction of the words holds a letter (alpha_ratio)"
    )
    max_repeated_line_fraction: Fraction | None = Field(
        default=0.5, description="drop documents where more of the characters of non-blank lines repeat an earlier line (repeated_lines)"
    )
    max_record_bytes: PositiveInt | None = Field(
        default=32 << 20,
        description="a record larger than this (a JSON line, a page, a WARC record, a LaTeX project's sources, a text field) "
        "is dropped as record_too_large without being read whole; plain text files are cut into parts instead",
    )
    max_expansion_ratio: Annotated[float, Field(ge=1)] | None = Field(
        default=100.0,
        description="a compressed input that expands past this many times its size (checked from 64 MiB on) is cut off "
        "there as decompression_bomb; real text expands 3-10 times",
    )

    @model_validator(mode="after")
    def _check(self) -> Filters:
        low, high = self.min_mean_word_length, self.max_mean_word_length
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_mean_word_length ({low}) must not exceed max_mean_word_length ({high})")
        if self.max_words is not None and self.max_words < self.min_words:
            raise ValueError(f"max_words ({self.max_words}) must not be below min_words ({self.min_words})")
        return self


class NearDedup(_Strict):
    """MinHash-LSH near-duplicate removal parameters (bands x rows = num_perm); see massiveds.clean.minhash."""

    enabled: bool = Field(default=True, description="remove near duplicates (the later copy goes)")
    ngram: Annotated[int, Field(gt=0, le=64)] = Field(default=5, description="words per shingle")
    num_perm: PositiveInt = Field(default=112, description="MinHash permutations per document (a multiple of bands)")
    bands: PositiveInt = Field(default=14, description="LSH bands; more bands find pairs of lower similarity")
    threshold: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.8, description="shingle-set Jaccard similarity from which two documents are near duplicates"
    )
    verify: Literal["jaccard", "signature", "none"] = Field(
        default="jaccard",
        description="check each LSH candidate pair before linking it: true shingle-set Jaccard (exact), "
        "MinHash signature agreement (an estimate, 4*num_perm bytes per document), or none",
    )
    seed: NonNegativeInt = Field(default=1, description="seed of the MinHash permutations")

    @model_validator(mode="after")
    def _check(self) -> NearDedup:
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")
        return self

    @property
    def rows(self) -> int:
        """Signature positions per LSH band."""
        return self.num_perm // self.bands


class Dedup(_Strict):
    """Exact (normalised-text hash) and near (MinHash) deduplication."""

    exact: bool = Field(default=True, description="remove documents whose normalised text an earlier document has")
    near: NearDedup = Field(default=NearDedup(), description="MinHash-LSH near-duplicate removal")


class EvalSet(_Strict):
    """An evaluation set whose text must not leak into the datastore: a file or glob relative to the manifest."""

    uri: str = Field(description="path or glob of the eval set's files, relative to the manifest")
    format: Literal["jsonl", "parquet"] = Field(default="jsonl", description="jsonl or parquet")
    fields: Annotated[list[str], Field(min_length=1)] = Field(
        default=["question", "answer"], description="the fields of an item whose text, joined, a document must not contain"
    )
    name: str | None = Field(default=None, description="label in drop records and reports; default: the uri")
    id_field: str | None = Field(default=None, description="item id field; default: the row number in its file")

    @property
    def label(self) -> str:
        """The eval set's name as it appears in drop records and reports."""
        return self.name or self.uri


class Decontaminate(_Strict):
    """Build-time decontamination: drop documents that contain evaluation items (see massiveds.clean.decontaminate).

    A document is contaminated by an item when at least ``threshold`` of the item's distinct word
    ``ngram``-grams occur in it, or when they share a run of at least ``min_run`` consecutive words
    (0 turns the run criterion off).
    """

    eval_sets: list[EvalSet] = Field(default=[], description="the evaluation sets to decontaminate against (none: no decontamination)")
    ngram: Annotated[int, Field(gt=0, le=64)] = Field(default=13, description="words per n-gram compared")
    threshold: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.8, description="fraction of an item's distinct n-grams found in a document that contaminates it"
    )
    min_run: NonNegativeInt = Field(default=32, description="or a run of this many consecutive words shared with an item (0: off)")

    @model_validator(mode="after")
    def _check(self) -> Decontaminate:
        if self.min_run and self.min_run < self.ngram:
            raise ValueError(f"min_run ({self.min_run}) must be 0 or at least ngram ({self.ngram})")
        labels = [e.label for e in self.eval_sets]
        if len(set(labels)) != len(labels):
            raise ValueError("eval set names must be unique (set name: on sets that share a uri)")
        return self


class Chunk(_Strict):
    """How documents are cut into passages."""

    unit: Literal["words", "tokens"] = Field(default="words", description="words, or the embedder's tokens (RETRO: 64)")
    size: PositiveInt = Field(default=256, description="units (words or tokens) per passage")
    overlap: NonNegativeInt = Field(default=0, description="units a passage shares with the one before it")
    min_size: NonNegativeInt = Field(default=20, description="a document's last passage shorter than this joins the one before it")

    @model_validator(mode="after")
    def _check(self) -> Chunk:
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than size ({self.size})")
        if self.min_size > self.size:
            raise ValueError(f"min_size ({self.min_size}) must not exceed size ({self.size})")
        return self


class Embed(_Strict):
    """The sentence-transformers embedder and how it runs."""

    model: str = Field(default="all-MiniLM-L6-v2",
                       description="a sentence-transformers model (transformer or static): hub name or local folder")
    batch_size: PositiveInt | Auto = Field(default="auto",
                                           description="passages per model batch; auto: 64 for a transformer, 1024 for a static model")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when torch sees a GPU (fp16), else CPU")
    store_vectors: bool = Field(default=True, description="keep each shard's fp16 vectors (vectors.npy) for exact rerank and recall")
    normalize: bool = Field(default=True, description="L2-normalise the vectors, so that inner product is cosine similarity")
    max_length: PositiveInt | None = Field(
        default=None, description="tokens a passage is cut at; null: the model's own (a static model: its tokenizer's truncation)"
    )
    query_prefix: str = Field(default="", description="text put before every query (e.g. 'query: ' for E5)")
    passage_prefix: str = Field(default="", description="text put before every passage (e.g. 'passage: ' for E5)")
    workers: PositiveInt | Auto = Field(
        default="auto", description="embedding actors; auto: one per GPU, else one per 8 CPUs (at most the cluster's GPUs / CPUs)"
    )


class Index(_Strict):
    """FAISS index spec; ``auto`` values are chosen from the number of vectors (see massiveds.encode.index)."""

    type: Literal["auto", "flat", "ivfpq"] = Field(
        default="auto", description="flat (exact) or ivfpq; auto: flat up to flat_max vectors (within the memory budget), else ivfpq"
    )
    nlist: PositiveInt | Auto = Field(default="auto", description="IVF lists; auto: the power of two nearest 4·√N (16·√N above 10 M)")
    pq_m: PositiveInt | Auto = Field(
        default="auto", description="PQ sub-quantizers, a divisor of the dimension; auto: the largest not above min(64, d/4)"
    )
    nbits: Annotated[int, Field(ge=1, le=16)] = Field(default=8, description="bits of each PQ sub-quantizer's code")
    train_sample: PositiveInt | Auto = Field(
        default="auto", description="vectors the quantizer is trained on; auto: 64·nlist, at most 2^22, at least 30·nlist"
    )
    nprobe: PositiveInt | Auto = Field(default="auto", description="IVF lists a search visits by default; auto: about 2·√nlist")
    flat_max: PositiveInt = Field(default=200_000, description="type auto builds a flat index up to this many vectors")
    memory_budget_gb: PositiveFloat | None = Field(
        default=None, description="RAM to serve the index (codes, ids, quantizer); PQ size and type are chosen to fit it"
    )
    coarse: Literal["auto", "flat", "hnsw"] = Field(default="auto", description="coarse quantizer; auto: HNSW32 from 65536 lists")
    opq: bool | Auto = Field(default="auto", description="OPQ rotation before PQ; auto: on from 65536 lists")
    coarse_training: Literal["auto", "kmeans", "two-level"] = Field(
        default="auto", description="how the IVF centroids are trained: one k-means over all lists, or two-level (√nlist groups, "
        "then lists within each: far less work for many lists); auto: two-level from 8192 lists"
    )


class SparseTokenizer(_Strict):
    """How passages and queries are cut into BM25 terms (bm25s's tokenizer: runs of 2+ word characters)."""

    lowercase: bool = Field(default=True, description="lowercase before splitting")
    stopwords: Literal["en", "none"] = Field(default="en", description="drop English stopwords (bm25s's list), or none")
    stemmer: str | None = Field(default="english", description="a PyStemmer algorithm (english, porter, german, ...), or null for none")

    @field_validator("stemmer")
    @classmethod
    def _known_stemmer(cls, value: str | None) -> str | None:
        import Stemmer

        if value is not None and value not in Stemmer.algorithms():
            raise ValueError(f"unknown stemmer {value!r}; PyStemmer has {', '.join(Stemmer.algorithms())}")
        return value


class Sparse(_Strict):
    """A BM25 index per shard beside the dense one, scored with statistics of the whole datastore (docs/search.md, hybrid)."""

    enabled: bool = Field(default=False, description="build the BM25 index (search modes sparse and hybrid need it)")
    k1: NonNegativeFloat = Field(default=1.5, description="BM25 term-frequency saturation")
    b: Fraction = Field(default=0.75, description="BM25 length normalisation: 0 none, 1 full")
    tokenizer: SparseTokenizer = Field(default=SparseTokenizer(), description="how passages and queries are cut into BM25 terms")


class Shards(_Strict):
    """How passages are split into independently indexed shards."""

    target_passages: PositiveInt = Field(default=1_000_000, description="passages per shard (each shard has an index of its own)")


def leaves_folder(uri: str) -> bool:
    """Whether a relative local path (or glob) climbs above its base folder with ``..``, at any step (lexically)."""
    from massiveds.core.uris import scheme_of

    if scheme_of(uri) not in ("", "file"):
        return False
    path = uri.removeprefix("file://")
    if PurePosixPath(path).is_absolute():
        return False
    depth = 0
    for part in path.replace("\\", "/").split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", ".", "**"):  # ``**`` may stand for no folder at all
            depth += 1
    return False


class Manifest(_Strict):
    """A whole build manifest (every field: docs/manifest.md)."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")] = Field(
        description="the datastore's name: letters, digits, '.', '_' and '-'"
    )
    domain: Annotated[str, Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_]*$")] = Field(
        description="the label every passage of this manifest carries (search selects shards by it): lower case, digits, '_'"
    )
    sources: Annotated[list[Source], Field(min_length=1)] = Field(description="the inputs, at least one")
    filters: Filters = Field(default=Filters(), description="document filters and input limits")
    dedup: Dedup = Field(default=Dedup(), description="exact and near-duplicate removal")
    decontaminate: Decontaminate = Field(default=Decontaminate(), description="removal of documents that contain evaluation items")
    chunk: Chunk = Field(default=Chunk(), description="how documents are cut into passages")
    embed: Embed = Field(default=Embed(), description="the embedding model and how it runs")
    index: Index = Field(default=Index(), description="the FAISS index of every shard")
    sparse: Sparse = Field(default=Sparse(), description="the BM25 index beside the dense one")
    shards: Shards = Field(default=Shards(), description="how passages are split into shards")
    allow_paths_outside: bool = Field(
        default=False,
        description="let relative source, eval-set and model paths reach outside the manifest's folder with '..' "
        "(absolute paths are always allowed)",
    )

    def paths_outside(self) -> list[tuple[str, str]]:
        """(field, uri) of every relative local path that leads outside the manifest's folder."""
        fields = [(f"sources[{i}].uri", s.uri) for i, s in enumerate(self.sources)]
        fields += [(f"decontaminate.eval_sets[{i}].uri", e.uri) for i, e in enumerate(self.decontaminate.eval_sets)]
        fields.append(("embed.model", self.embed.model))  # a hub name never holds '..'
        return [(name, uri) for name, uri in fields if leaves_folder(uri)]


class LoadedManifest(BaseModel):
    """A validated manifest plus where it came from (its folder resolves relative source paths)."""

    model_config = ConfigDict(frozen=True)

    manifest: Manifest
    path: Path
    sha256: str

    @property
    def base_dir(self) -> Path:
        """Folder that relative source URIs are resolved against."""
        return self.path.parent

    def record(self) -> dict[str, Any]:
        """The manifest as stored in the datastore catalog: path, hash and the full, defaulted content."""
        return {"path": self.path.name, "sha256": self.sha256, "content": self.manifest.model_dump(mode="json")}


def _format_error(path: Path, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg}")
    return f"{path}: invalid manifest: " + "; ".join(parts)


def load_manifest(path: str | Path) -> LoadedManifest:
    """Read and validate a manifest file, raising ManifestError with one clear line on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found; pass the path of a YAML manifest")
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ManifestError(f"{path}: not valid YAML{where}; fix the syntax") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: a manifest must be a YAML mapping with name, domain and sources")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(_format_error(path, exc)) from None
    if not manifest.allow_paths_outside and (outside := manifest.paths_outside()):
        field, uri = outside[0]
        raise ManifestError(
            f"{path}: {field} {uri!r} leads outside the manifest's folder {path.resolve().parent}; "
            "move the data under it, use an absolute path, or set allow_paths_outside: true"
        )
    return LoadedManifest(manifest=manifest, path=path.resolve(), sha256=hashlib.sha256(raw).hexdigest())


def manifest_json_schema() -> str:
    """The JSON schema of the manifest, for editors and docs."""
    return json.dumps(Manifest.model_json_schema(), indent=2)
