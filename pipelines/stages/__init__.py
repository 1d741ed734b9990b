"""The build's stages, one module each; their order is ``pipelines.build.STAGES``, which reads like the README's pipeline line.

    download -> extract -> dedup -> near_dedup -> decontaminate -> dedup_index -> chunk -> shard -> sparse -> embed -> train
    -> index -> catalog   (sparse and embed run side by side)

A new stage is one module implementing ``pipelines.stage.Stage`` (or ``UnitStage``) and its place in that list.
Nothing is imported here: a Ray worker that runs one stage's units imports that stage's module alone.
"""
