"""Manifest fields of near dedup and decontamination: defaults, validation, YAML loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from massiveds.core.errors import ManifestError
from massiveds.core.manifest import Decontaminate, Manifest, NearDedup, load_manifest


def test_defaults_follow_the_design() -> None:
    m = Manifest(name="x", domain="wiki", sources=[{"uri": "a.jsonl"}])
    near = m.dedup.near
    assert (near.enabled, near.ngram, near.num_perm, near.bands, near.rows, near.threshold) == (
        True,
        5,
        112,
        14,
        8,
        0.8,
    )  # default: on
    assert near.verify == "jaccard" and near.seed == 1
    d = m.decontaminate
    assert (d.eval_sets, d.ngram, d.threshold, d.min_run) == ([], 13, 0.8, 32)


def test_near_dedup_validation() -> None:
    assert NearDedup(enabled=True).enabled
    with pytest.raises(ValueError, match="multiple of bands"):
        NearDedup(num_perm=100, bands=14)
    with pytest.raises(ValueError):
        NearDedup(verify="maybe")


def test_yaml_with_near_dedup_and_eval_sets_loads(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "name: t\ndomain: wiki\nsources: [{uri: data/*.jsonl}]\n"
        "dedup: {near: {enabled: true, verify: signature}}\n"
        "decontaminate:\n  eval_sets: [{uri: evals/qa.jsonl, fields: [question, answer], id_field: id}]\n  min_run: 0\n"
    )
    loaded = load_manifest(path)
    assert loaded.manifest.dedup.near.verify == "signature"
    assert loaded.manifest.decontaminate.eval_sets[0].label == "evals/qa.jsonl"
    assert Decontaminate.model_validate(loaded.manifest.decontaminate.model_dump()).min_run == 0
    path.write_text("name: t\ndomain: wiki\nsources: [{uri: a}]\ndecontaminate: {eval_sets: [{uri: e.jsonl, fields: []}]}\n")
    with pytest.raises(ManifestError, match="fields"):
        load_manifest(path)
