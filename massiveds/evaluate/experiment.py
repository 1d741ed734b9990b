"""The datastore-scaling experiment: eval sets searched once per setting, scored at every nested fraction and seed.

For each datastore, eval set and setting (the search options, one per value of a swept option), the
queries are embedded once and searched once for one ranked candidate list each, deep enough that the
smallest fraction still leaves ``max k`` hits after the dropping options (the first depth of
``SearchOptions.first_fetch`` at that fraction; a query short of hits at some fraction and seed is
searched again deeper, as ``search`` does). Each fraction and seed is then a filter over that list:
the candidates whose document's sample position (``massiveds.store.sampling``) is below the fraction,
then per-query decontamination against the query's own gold, dedup, and MMR or the top ``max k``,
exactly the steps and order of ``massiveds.store.search``; so the hits at fraction p and seed s are
those a datastore physically subsampled at (p, s) returns, and a curve over 6 fractions × 3 seeds costs
one search. Metrics follow from each ranked list (``massiveds.evaluate.metrics``).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib.metadata
import platform
import time
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from massiveds.clean.ngrams import words
from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import CATALOG
from massiveds.evaluate.evalset import EvalFields, EvalItem, EvalSet
from massiveds.evaluate.metrics import answer_matcher, bootstrap_interval, first_relevant, recall_at, reciprocal_rank_at
from massiveds.evaluate.report import DatastoreInfo, EvalReport, EvalSetInfo, Metric, Point, Settings, metric_names
from massiveds.store.cross_encoder import cross_encoder
from massiveds.store.datastore import Datastore
from massiveds.store.postprocess import DECON_NGRAM, GoldIndex, mmr, rerank_hits
from massiveds.store.sampling import check_fraction
from massiveds.store.search import (
    MAX_K,
    Hit,
    Retrievers,
    SearchOptions,
    deeper,
    exhausted,
    filter_hits,
    retrieve,
    search_mode,
)
from massiveds.store.shard import Shard
from massiveds.store.shard_set import ShardSet

#: Search options a sweep may vary (the others are fixed by the experiment: k, fraction, seed; or make no sense here).
SWEEPABLE = ("mode", "alpha", "fusion", "nprobe", "rerank", "rerank_depth", "domains", "dedup", "dedup_threshold", "mmr")
#: MRR is reported at this depth (or the largest k, if smaller).
MRR_K = 10
#: Queries searched together: bounds the candidate arrays (queries × depth) held at once.
BATCH = 64


@dataclass(frozen=True)
class EvalPlan:
    """What to measure: recall at ``ks``, at each of ``fractions`` × ``seeds``, for each value of the swept option."""

    ks: tuple[int, ...] = (1, 5, 10, 20, 100)
    fractions: tuple[float, ...] = (1.0,)
    seeds: tuple[int, ...] = (0,)
    #: search options fixed for the whole run (``SearchOptions`` names, no k / fraction / seed)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    sweep: tuple[str, tuple[Any, ...]] | None = None
    #: drop the hits that overlap each query's own question and answers (build-time decontamination rules)
    decontaminate_with_gold: bool = False
    bootstrap: int = 1000

    def __post_init__(self) -> None:
        if not self.ks or any(not 1 <= k <= MAX_K for k in self.ks):
            raise MassiveDSError(f"--k values must be integers in [1, {MAX_K}], got {list(self.ks)}")
        if not self.fractions:
            raise MassiveDSError("--fractions needs at least one fraction in (0, 1]")
        for f in self.fractions:
            check_fraction(f)
        if not self.seeds or any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise MassiveDSError(f"--seeds must be distinct non-negative integers, got {list(self.seeds)}")
        if self.bootstrap < 1:
            raise MassiveDSError(f"--bootstrap must be at least 1, got {self.bootstrap}")
        fixed = set(self.options) & {"k", "fraction", "seed", "decontaminate", "continuation"}
        if fixed:
            raise MassiveDSError(f"eval sets {', '.join(sorted(fixed))} itself (--k, --fractions, --seeds, --decontaminate-with-gold)")
        self.settings()  # every setting's options are valid before anything is searched

    @property
    def max_k(self) -> int:
        return max(self.ks)

    def settings(self) -> list[tuple[str, SearchOptions]]:
        """(label, options) per swept value; one setting labelled "" without a sweep."""
        if self.sweep is None:
            return [("", SearchOptions.create(k=self.max_k, **self.options))]
        key, values = self.sweep
        return [(f"{key}={_show(v)}", SearchOptions.create(k=self.max_k, **(self.options | {key: v}))) for v in values]


def parse_sweep(text: str) -> tuple[str, tuple[Any, ...]]:
    """``key=v1,v2,...`` as the option and its values, typed as ``SearchOptions`` declares (domains joined by ``+``)."""
    key, sep, rest = text.partition("=")
    key = key.strip()
    if not sep or not rest.strip():
        raise MassiveDSError(f"--sweep takes option=value1,value2,..., e.g. nprobe=8,32,128; got {text!r}")
    if key not in SWEEPABLE:
        raise MassiveDSError(f"--sweep cannot vary {key!r}; it can vary {', '.join(SWEEPABLE)}")
    kinds = set(typing.get_args(SearchOptions.fields()[key])) or {SearchOptions.fields()[key]}
    values = []
    for raw in (v.strip() for v in rest.split(",")):
        try:
            values.append(_typed(raw, kinds))
        except ValueError:
            raise MassiveDSError(f"--sweep {key}: {raw!r} is not a valid value") from None
    return key, tuple(values)


def _typed(raw: str, kinds: set[Any]) -> Any:
    """``raw`` as the first of ``kinds`` it parses as (``none`` for an optional option)."""
    if raw.lower() == "none" and type(None) in kinds:
        return None
    if bool in kinds:
        if raw.lower() not in ("true", "false"):
            raise ValueError(raw)
        return raw.lower() == "true"
    if int in kinds:
        return int(raw)
    if float in kinds:
        return float(raw)
    if any(typing.get_origin(k) is tuple for k in kinds):
        return tuple(d for d in raw.split("+") if d)
    return raw


def _show(value: Any) -> str:
    return "+".join(value) if isinstance(value, tuple) else str(value)


def evaluate(datastores: Sequence[tuple[str, Datastore]], sets: Sequence[EvalSet], plan: EvalPlan,
             fields: EvalFields, advance: Callable[[int], None] = lambda n: None) -> EvalReport:
    """Run ``plan`` for every eval set on every datastore (``(label, datastore)``); ``advance`` ticks queries × fractions × seeds."""
    clock = time.perf_counter()
    if plan.decontaminate_with_gold:
        for s in sets:
            if not all(item.answers for item in s.items):
                raise MassiveDSError(f"{s.source}: --decontaminate-with-gold needs gold answers on every item (name --answers-field)")
    points = []
    for label, ds in datastores:
        for eval_set in sets:
            queries = [item.query for item in eval_set.items]
            vectors: np.ndarray | None = None
            for setting, options in plan.settings():
                sources, _ = ds.retrievers(options)
                mode = search_mode(sources, options)
                if mode != "sparse" and vectors is None:
                    vectors = ds.embedder.encode_queries(queries)
                lists = rank(sources, eval_set.items, vectors, options, plan, mode, advance)
                points.extend(score(ds, sources, label, eval_set, setting, options, plan, lists))
    return EvalReport(
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        versions=versions(),
        settings=Settings(ks=list(plan.ks), fractions=list(plan.fractions), seeds=list(plan.seeds), options=plan.options,
                          sweep=None if plan.sweep is None else {plan.sweep[0]: list(plan.sweep[1])},
                          decontaminate_with_gold=plan.decontaminate_with_gold, bootstrap=plan.bootstrap),
        datastores=[datastore_info(label, ds) for label, ds in datastores],
        eval_sets=[EvalSetInfo(name=s.name, source=s.source, sha256=s.sha256, items=len(s.items), kinds=list(s.kinds),
                               fields=dataclasses.asdict(fields)) for s in sets],
        points=points,
        seconds=time.perf_counter() - clock,
    )


#: Per query, per (fraction index, seed index): the passage ids of the ranked hits (at most max k).
Lists = list[dict[tuple[int, int], list[int]]]


def rank(sources: Retrievers, items: Sequence[EvalItem], vectors: np.ndarray | None, options: SearchOptions, plan: EvalPlan,
         mode: str, advance: Callable[[int], None]) -> Lists:
    """Every query's ranked hits at every fraction and seed, from one candidate list per query (deepened when short)."""
    shards, reachable = sources.shards, sources.shards.num_passages
    need = options.pool
    first = dataclasses.replace(options, fraction=min(plan.fractions)).first_fetch(shards.deleted_share)
    if plan.decontaminate_with_gold and not options.dedup:
        first *= 2  # first_fetch doubles for the dropping options it knows of
    out: Lists = [{} for _ in items]
    for lo in range(0, len(items), BATCH):
        pending, fetch = list(range(lo, min(lo + BATCH, len(items)))), first
        while pending:
            fetch = min(fetch, reachable)
            texts = [items[q].query for q in pending]
            found = retrieve(sources, mode, texts, None if vectors is None else vectors[pending], fetch, options)
            short, fewest = [], need
            for row, q in enumerate(pending):
                valid = found.ids[row] >= 0
                seen = int(valid.sum())
                if shards.deleted_share:
                    valid[valid] = ~shards.deleted(found.ids[row][valid])
                ranked = Ranked(sources, items[q].query, found.ids[row][valid], found.scores[row][valid], _gold(items[q], plan), options)
                kept = {(f, s): ranked.kept(frac, seed, need) for f, frac in enumerate(plan.fractions) for s, seed in enumerate(plan.seeds)}
                worst = min(len(v) for v in kept.values())
                if worst < need and not exhausted(seen, fetch, reachable):
                    short.append(q)
                    fewest = min(fewest, worst)
                else:
                    out[q] = {key: ranked.top(ranks, options, plan.max_k) for key, ranks in kept.items()}
                    advance(len(kept))
            if short:
                fetch = deeper(fetch, need, fewest)
            pending = short
    return out


def _gold(item: EvalItem, plan: EvalPlan) -> GoldIndex | None:
    """The item's own question and answers as a decontamination gold (n-grams of 13 words, or of the whole item if shorter)."""
    if not plan.decontaminate_with_gold:
        return None
    text = " ".join((item.query, *item.answers))
    return GoldIndex([text], ngram=min(DECON_NGRAM, len(words(text))))


class Ranked:
    """One query's candidate list, best first, with the hits read lazily (text only where a step needs it)."""

    def __init__(self, sources: Retrievers, query: str, ids: np.ndarray, scores: np.ndarray, gold: GoldIndex | None,
                 options: SearchOptions) -> None:
        self.sources, self.query, self.ids, self.scores, self.gold, self.options = sources, query, ids, scores, gold, options
        self.filtering = gold is not None or options.dedup
        self._positions: dict[int, np.ndarray] = {}
        self._hits: dict[int, Hit] = {}
        self._cross: dict[str, float] = {}  # the cross-encoder's score of each passage text: fractions and seeds share hits

    def hit(self, j: int) -> Hit:
        """Candidate ``j`` as a hit (its passage with the candidate's score)."""
        if j not in self._hits:
            self._hits[j] = {**self.sources.shards.passages([int(self.ids[j])])[0], "score": float(self.scores[j])}
        return self._hits[j]

    def kept(self, fraction: float, seed: int, need: int) -> list[int]:
        """The ranks of the first ``need`` candidates of documents sampled at (``fraction``, ``seed``) that the dropping options keep."""
        if seed not in self._positions:  # once per seed, then one comparison per fraction
            self._positions[seed] = self.sources.shards.sample_positions(self.ids, seed)
        sampled = np.nonzero(self._positions[seed] < fraction)[0]
        if not self.filtering:
            return [int(j) for j in sampled[:need]]
        size = 2 * need  # decontamination is per hit and dedup greedy in rank order: a prefix's survivors are a prefix of all
        while True:
            ranks = [int(j) for j in sampled[:size]]
            survivors, _ = filter_hits([self.hit(j) for j in ranks], self.options, self.gold)
            if len(survivors) >= need or size >= len(sampled):
                rank_of = {int(self.ids[j]): j for j in ranks}
                return [rank_of[h["passage_id"]] for h in survivors[:need]]
            size *= 2

    def top(self, kept: list[int], options: SearchOptions, k: int) -> list[int]:
        """The passage ids of the final ranking of the kept ranks: the cross-encoder's order, then MMR, or the first ``k``."""
        if options.cross_encoder is None and options.mmr is None:
            return [int(self.ids[j]) for j in kept[:k]]
        hits = [self.hit(j) for j in kept[: options.pool]]
        if options.cross_encoder is not None:
            hits = rerank_hits([self.query], [hits], self._cross_scores, options.rerank_depth)[0]
        if options.mmr is not None:
            pool = hits[: options.mmr_pool]
            hits = mmr(pool, self.sources.dense.vectors(pool), options.mmr, k)
        return [h["passage_id"] for h in hits[:k]]

    def _cross_scores(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """The cross-encoder's scores of (this query, passage) pairs, each passage scored once whatever the fraction or seed."""
        assert self.options.cross_encoder is not None
        missing = list(dict.fromkeys(text for _, text in pairs if text not in self._cross))
        if missing:
            scores = cross_encoder(self.options.cross_encoder).scores([(self.query, text) for text in missing])
            self._cross.update(zip(missing, scores.tolist(), strict=True))
        return np.array([self._cross[text] for _, text in pairs], dtype=np.float32)


def score(ds: Datastore, sources: Retrievers, label: str, eval_set: EvalSet, setting: str, options: SearchOptions, plan: EvalPlan,
          lists: Lists) -> list[Point]:
    """The points of one datastore, eval set and setting: metrics per fraction from the ranked lists of every seed."""
    shards = sources.shards
    mrr_k = min(MRR_K, plan.max_k)
    names = metric_names(eval_set.kinds, plan.ks, mrr_k)
    judges = [Judge(ds.shards, item) for item in eval_set.items]
    points = []
    for f, fraction in enumerate(plan.fractions):
        ranks = {kind: np.array([[judge.first(kind, lists[q][f, s]) for q, judge in enumerate(judges)] for s in range(len(plan.seeds))],
                                dtype=np.int64) for kind in eval_set.kinds}
        metrics = {}
        for name in names:
            kind, _, at = name.partition("@")
            if kind.endswith("_mrr"):
                per_query = reciprocal_rank_at(ranks[kind.removesuffix("_mrr")], int(at))
            else:
                per_query = recall_at(ranks[kind], int(at))
            per_seed = per_query.mean(axis=1)
            low, high = bootstrap_interval(per_query.mean(axis=0), plan.bootstrap)
            metrics[name] = Metric(mean=float(per_seed.mean()), std=float(per_seed.std()), ci_low=low, ci_high=high,
                                   per_seed=[float(v) for v in per_seed])
        sizes = [sampled_size(shards, fraction, seed) for seed in plan.seeds]
        points.append(Point(datastore=label, eval_set=eval_set.name, setting=setting, fraction=fraction,
                            tokens=[t for t, _ in sizes], passages=[p for _, p in sizes], metrics=metrics,
                            first_hit_domains=first_hit_domains(ds.shards, [[lists[q][f, s] for q in range(len(judges))]
                                                                     for s in range(len(plan.seeds))]),
                            ranks={kind: r.tolist() for kind, r in ranks.items()}))
    return points


class Judge:
    """Which hits are relevant to one eval item, by each kind of gold it has (answer matches cached per passage)."""

    def __init__(self, shards: ShardSet, item: EvalItem) -> None:
        self.shards, self.item = shards, item
        self.matcher = answer_matcher(item.answers)
        self.docs, self.passages = set(item.gold_docs), set(item.gold_passages)
        self._answer: dict[int, bool] = {}

    def first(self, kind: str, ids: list[int]) -> int:
        """The 1-based rank of the first hit of ``ids`` relevant by ``kind`` (0: none)."""
        if kind == "passage":
            return first_relevant([pid in self.passages for pid in ids])
        if kind == "doc":
            return first_relevant([d in self.docs for d in self.shards.column_of(np.array(ids, dtype=np.int64), "doc_id").tolist()])
        return next((r + 1 for r, pid in enumerate(ids) if self.answers(pid)), 0)  # texts read only up to the first match

    def answers(self, pid: int) -> bool:
        if pid not in self._answer:
            self._answer[pid] = self.matcher(self.shards.passages([pid])[0]["text"])
        return self._answer[pid]


def sampled_size(shards: Iterable[Shard], fraction: float, seed: int) -> tuple[int, int]:
    """Tokens and passages of the documents kept at (``fraction``, ``seed``) in ``shards``."""
    tokens = passages = 0
    for shard in shards:
        keep = shard.sample_positions(seed) < fraction
        tokens += int(np.asarray(shard.column("n_tokens"), dtype=np.int64)[keep].sum())
        passages += int(keep.sum())
    return tokens, passages


def first_hit_domains(shards: ShardSet, lists: list[list[list[int]]]) -> dict[str, float]:
    """Share of first hits per domain, over every query (with a hit) of every seed, then averaged over seeds."""
    shares: dict[str, float] = {}
    for per_query in lists:
        firsts = np.array([ids[0] for ids in per_query if ids], dtype=np.int64)
        for shard, where, _ in shards.shard_rows(firsts):
            shares[shard.domain] = shares.get(shard.domain, 0.0) + len(where) / len(firsts) / len(lists)
    return dict(sorted(shares.items()))


def datastore_info(label: str, ds: Datastore) -> DatastoreInfo:
    """What identifies a datastore in a report: its catalog's sha256, embedder, index and BM25 settings as recorded."""
    catalog = ds.catalog
    return DatastoreInfo(label=label, path=str(ds.root), name=ds.name,
                         catalog_sha256=hashlib.sha256((ds.root / CATALOG).read_bytes()).hexdigest(), passages=ds.num_passages,
                         tokens=sum(s.tokens for s in catalog.shards), embedder=catalog.embedder.model_dump(mode="json"),
                         index=catalog.index.model_dump(mode="json"),
                         sparse=None if catalog.sparse is None else catalog.sparse.model_dump(mode="json"))


def versions() -> dict[str, str]:
    """Versions of what the numbers depend on."""
    out = {"python": platform.python_version()}
    for package in ("massiveds", "faiss-cpu", "faiss-gpu", "numpy", "sentence-transformers", "torch", "bm25s"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out
