"""What the commands share: the ``--wait`` option, waiting for another writer, JSON on stdout, and user errors as one red line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from massiveds.core.errors import MassiveDSError
from massiveds.core.report import console

#: The ``--rerank`` of search and eval.
RERANK_HELP = ("'exact' (inner product over stored vectors), 'cross-encoder:MODEL' (a CrossEncoder's folder or hub name) or "
               "'exact+cross-encoder:MODEL'")

#: The ``--wait`` of every command that changes a datastore.
Wait = Annotated[float, typer.Option("--wait", min=0.0, help="seconds to wait for another command changing the datastore "
                                     "(delete, append, compact, ...) before giving up")]


def writer_waits(seconds: float) -> None:
    """This command waits ``seconds`` at most for another writer of its datastore, saying whom it waits for."""
    from massiveds.core.writer_lock import set_wait_policy

    set_wait_policy(seconds, lambda line: console.print(f"[yellow]{line}[/]", highlight=False, soft_wrap=True))


def _read_error(exc: Exception, datastore: Path) -> str:
    """One line for a reader's failure: a file gone because a writer replaced it under the read says so (run it again)."""
    if isinstance(exc, FileNotFoundError):
        return (f"{exc.filename}: gone while this command read {datastore}: a writer (compact, retrain) replaced it; run the command "
                "again (massiveds verify checks the datastore)")
    return str(exc)


@contextmanager
def user_errors(reading: Path | None = None, failures: list[str] | None = None) -> Iterator[None]:
    """A user error (``MassiveDSError``) in the block ends the command as one red line ``error: <message>`` and exit code 2.

    ``reading``: the datastore the block reads; a file of it gone (a writer replaced it) is a user error too.
    ``failures``: the message goes there and the command goes on, to exit 2 when it has checked the rest.
    """
    caught = (MassiveDSError,) if reading is None else (MassiveDSError, FileNotFoundError)
    try:
        yield
    except caught as exc:
        message = str(exc) if reading is None else _read_error(exc, reading)
        console.print(f"[bold red]error:[/] {message}", soft_wrap=True, highlight=False)
        if failures is None:
            raise typer.Exit(code=2) from None
        failures.append(message)


def print_json(payload: object, ensure_ascii: bool = True) -> None:
    """``payload`` as indented JSON on stdout, the one thing there (tables and messages go to stderr)."""
    sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=ensure_ascii) + "\n")
