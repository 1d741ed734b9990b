"""The ``massiveds`` command line: build, search and validate datastores.

The commands live by what users do with them (``build``, ``search``, ``manage``, ``evaluate``); each imports its heavy
modules (faiss, torch, ray, pipelines) inside the command, so the command line starts fast.
"""

from __future__ import annotations

import os

import typer

from massiveds.cli import build, evaluate, manage, search

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help="Build, search and manage retrieval datastores."
)

# in the order ``massiveds --help`` lists them
for _name, _command in (
    ("build", build.build), ("append", build.append), ("search", search.search), ("validate", build.validate),
    ("inspect", manage.inspect), ("subsample", manage.subsample), ("publish", manage.publish), ("pull", manage.pull),
    ("verify", manage.verify), ("serve", search.serve), ("leakage", search.leakage), ("merge", manage.merge), ("plan", build.plan),
    ("distill-embedder", build.distill_embedder), ("eval-recall", evaluate.eval_recall), ("eval", evaluate.eval_command),
    ("delete", manage.delete), ("compact", manage.compact), ("retrain", manage.retrain), ("merge-index", manage.merge_index),
):
    app.command(_name)(_command)


def main() -> None:
    """Entry point of the ``massiveds`` script."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()
