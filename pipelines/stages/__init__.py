"""The build's stages, one module each, and their order: ``STAGES`` reads like the pipeline line of the README.

    download -> extract -> dedup -> near_dedup -> decontaminate -> chunk -> shard -> embed -> train -> index -> catalog

A new stage is one module implementing ``pipelines.stage.Stage`` (or ``UnitStage``) and its place in this list.
"""

from __future__ import annotations

from pipelines.stage import Stage
from pipelines.stages.catalog import CatalogStage
from pipelines.stages.chunk import Chunk
from pipelines.stages.decontaminate import DecontaminateStage
from pipelines.stages.dedup import ExactDedup
from pipelines.stages.download import Download
from pipelines.stages.embed import Embed
from pipelines.stages.extract import Extract
from pipelines.stages.index import Index
from pipelines.stages.near_dedup import NearDedupStage
from pipelines.stages.shard import Shard
from pipelines.stages.train import Train

STAGES: tuple[Stage, ...] = (
    Download(), Extract(), ExactDedup(), NearDedupStage(), DecontaminateStage(),
    Chunk(), Shard(), Embed(), Train(), Index(), CatalogStage(),
)
