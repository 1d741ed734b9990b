"""LaTeX extraction on real sources: an R vignette (Sweave), a PARI/GP manual chapter in a project
directory and a tarball (\\include followed, macros expanded), and the shared LaTeX JSONL."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from massiveds.ingest.extract.latex import expand_macros, latex_to_text, strip_comments
from tests.helpers import FIXTURES, extract, head_rows, shared

LATEX_LEFTOVERS = ("\\begin{document}", "\\documentclass", "\\usepackage", "\\section", "\\cite", "\\label", "<<", "\\SweaveOpts")


def test_sweave_vignette_prose_kept_code_and_preamble_dropped():
    (doc,) = extract(FIXTURES / "latex" / "tiedtimes.Rnw", "latex").docs
    text = doc["text"]
    assert doc["title"] == "Roundoff error and Tied Times"  # from \title
    assert text.startswith("Round off error\n\nThe heart of the issue can be shown with a simple example.")
    assert "We have become a victim of floating point precision." in text
    assert 'birth <- as.Date("1973/03/10")' not in text and "library(survival" not in text  # R chunks dropped
    assert "Ross Ihaka suggestions" not in text  # a comment
    for junk in LATEX_LEFTOVERS:
        assert junk not in text, junk
    assert "Parametric survival routines such as survreg are not" in text  # \code{survreg} -> survreg


def _check_project(doc: dict) -> None:
    text = doc["text"]
    assert doc["title"] == "User's Guide to PARI/GP"  # \title with an expanded macro
    assert text.startswith("This excerpt of the PARI/GP manual is included from a second file.\n\nOverview of the PARI system")
    assert "PARI/GP is a specialized computer algebra system, primarily aimed at number\ntheorists" in text  # \include'd
    assert "$\\mathbb{Q}$" in text and "\\Q$" not in text  # \def\Q expanded, math kept as LaTeX
    assert "Copyright (c) 2000  The PARI Group" not in text  # comments of the included file
    assert "bibliography" not in text and "pari.bib" not in text
    for junk in LATEX_LEFTOVERS:
        assert junk not in text, junk


def test_project_directory_follows_include():
    result = extract(FIXTURES / "latex" / "project", "latex")
    (doc,) = result.docs  # chapter1.tex is included by main.tex, so it is not a document of its own
    _check_project(doc)


def test_arxiv_style_tarball(tmp_path: Path):
    tarball = tmp_path / "2101.00001.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(FIXTURES / "latex" / "project", arcname="paper")
    (doc,) = extract(tarball, "latex").docs
    _check_project(doc)
    assert doc["meta"]["member"] == "2101.00001.tar.gz/paper/main.tex"


def test_macros_without_arguments_are_expanded_others_removed():
    src = strip_comments(
        "\\newcommand{\\R}{\\mathbb{R}} % reals\n\\newcommand{\\norm}[1]{\\|#1\\|}\n\\def\\eps{\\varepsilon}\n"
        "$x \\in \\R$, $\\eps$, \\norm{x}"
    )
    out = expand_macros(src)
    assert "$x \\in \\mathbb{R}$, $\\varepsilon$" in out
    assert "newcommand" not in out and "reals" not in out


def test_jsonl_latex_markup_on_shared_vignettes_and_manual(tmp_path: Path):
    rows = head_rows(shared("jsonl", "stem_latex.jsonl.zst"), 12) + head_rows(shared("jsonl", "math.jsonl.zst"), 10)
    src = tmp_path / "latex.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = extract(src, "jsonl", markup="latex", title_field="title")
    assert len(result.docs) >= 15
    for doc in result.docs:
        assert "\\begin{document}" not in doc["text"] and "\\documentclass" not in doc["text"]
        assert "\n<<" not in doc["text"]
    assert latex_to_text(rows[0]["text"]).text == next(d["text"] for d in result.docs if d["meta"]["row"] == 0)
