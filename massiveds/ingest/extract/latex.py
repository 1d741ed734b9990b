"""LaTeX sources (a .tex/.Rnw file, a project directory, or an arXiv-style tarball) to text.

The conversion (``latex_to_text``) strips comments, drops Sweave code chunks, follows
``\\input``/``\\include`` through a resolver, expands argument-free ``\\newcommand``/``\\def``
macros, keeps the body between ``\\begin{document}`` and ``\\end{document}`` (the whole source when
there is none), drops the bibliography, and turns text markup into text: section titles become
their own paragraph, ``\\emph{x}`` becomes ``x``, ``\\cite``/``\\label``/``\\ref`` disappear. Math
(``$..$``, ``\\[..\\]``, equation-like environments) and verbatim blocks are kept as written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from massiveds.ingest.extract.latex_files import project_files, root_files
from massiveds.ingest.extract.stream import DEFAULT_LIMITS, Limits
from massiveds.ingest.extract.types import Extracted, RawRecord

Resolver = Callable[[str], "str | None"]

MAX_INPUT_DEPTH = 8
_COMMENT = re.compile(r"(?<!\\)%.*")
_SWEAVE_CHUNK = re.compile(r"^<<[^\n]*>>=[ \t]*\n.*?^@[ \t]*$", re.DOTALL | re.MULTILINE)
_INPUT = re.compile(r"\\(?:input|include|subfile)\s*(?:\{([^{}]+)\}|([^\s{}\\]+))")
_MACRO_DEF = re.compile(
    r"\\(?:(?:re|provide)?newcommand\*?\s*\{?\s*\\([A-Za-z@]+)\s*\}?|def\s*\\([A-Za-z@]+))\s*(\[\d\](?:\[[^\]]*\])?|#\d)?\s*\{"
)
_TITLE = re.compile(r"\\title\s*(?:\[[^\]]*\])?\s*\{")
_DOC_BEGIN = re.compile(r"^[ \t]*\\document(?:class|style)\b.*?\\begin\s*\{document\}", re.DOTALL | re.MULTILINE)
_DOC_END = re.compile(r"\\end\s*\{document\}")
_BIBLIOGRAPHY = re.compile(
    r"\\begin\{thebibliography\}.*?(\\end\{thebibliography\}|$)|\\(?:bibliography|bibliographystyle|addbibresource|nocite)\s*\{[^{}]*\}"
    r"|\\printbibliography(\[[^\]]*\])?",
    re.DOTALL,
)
_MATH_ENVS = "equation|align|alignat|gather|multline|eqnarray|math|displaymath|flalign"
_VERBATIM_ENVS = "verbatim|Verbatim|lstlisting|minted|Sinput|Soutput"
_INLINE_MATH = r"(?:[^$\n\\]|\\.|\n(?![ \t]*\n))+?"  # no blank line inside: an unbalanced $ spoils one paragraph
_PROTECTED = re.compile(
    rf"\$\${_INLINE_MATH}\$\$|(?<!\\)\${_INLINE_MATH}\$|\\\[.*?\\\]|\\\(.*?\\\)"
    rf"|\\begin\{{(?P<env>(?:{_MATH_ENVS})\*?|{_VERBATIM_ENVS})\}}.*?\\end\{{(?P=env)\}}|\\bprog\b.*?@eprog",
    re.DOTALL,
)
#: Verbatim blocks: LaTeX environments, and PARI/GP's \bprog ... @eprog code blocks.
_VERBATIM_BLOCK = re.compile(rf"\\begin\{{({_VERBATIM_ENVS})\}}(?:\[[^\]]*\])?(.*?)\\end\{{\1\}}|\\bprog()(.*?)@eprog", re.DOTALL)
#: Inline code whose ``$`` is not math (R's ``fit$coef``): escaped before math is delimited.
_INLINE_CODE = re.compile(r"\\(?:code|texttt|kbd|file|samp|command|fct|var)\s*\{[^{}]*\}|\\verb\*?([^A-Za-z\s])(?:(?!\1).)*\1")
#: Environments dropped with their content.
DROPPED_ENVS = ("figure", "figure*", "table", "table*", "tikzpicture", "picture", "comment", "thebibliography", "Schunk")
#: Commands dropped with their arguments.
DROPPED_COMMANDS = (
    "label", "ref", "eqref", "pageref", "autoref", "cref", "Cref", "cite", "citep", "citet", "citealp", "citeauthor",
    "citeyear", "nocite", "includegraphics", "vspace", "hspace", "setlength", "addtolength", "setcounter",
    "addtocounter", "usepackage", "documentclass", "bibliographystyle", "SweaveOpts", "Sexpr", "thanks", "maketitle",
    "tableofcontents", "newpage", "clearpage", "pagebreak", "linebreak", "noindent", "centering",
    "DefineVerbatimEnvironment", "fvset", "setkeys", "renewenvironment", "newenvironment", "VignetteIndexEntry",
    "VignetteEngine",
)
_SECTION = re.compile(r"\\(?:part|chapter|section|subsection|subsubsection|paragraph|subparagraph)\*?\s*(?:\[[^\]]*\])?\s*\{")
_COMMAND_WITH_ARG = re.compile(r"\\[A-Za-z@]+\*?\s*(?:\[[^\[\]{}]*\])?\s*\{([^{}]*)\}")
_DIMEN = r"(?:\s*=\s*-?[\d.]+|\s*-?[\d.]+\s*(?:true)?(?:cm|mm|pt|in|em|ex|bp|sp|pc|dd)\b)"
_BARE_COMMAND = re.compile(rf"\\[A-Za-z@]+\*?(?:\[[^\[\]{{}}]*\])?{_DIMEN}?")  # \vskip2cm, \chapno=0 in plain TeX
_ENV_MARK = re.compile(r"\\(?:begin|end)\s*\{[^{}]*\}(?:\[[^\]]*\])?")
_ITEM = re.compile(r"\\item\b\s*(?:\[([^\]]*)\])?")
_ESCAPES = {r"\%": "%", r"\&": "&", r"\_": "_", r"\#": "#", r"\$": "$", r"\{": "{", r"\}": "}", "~": " ", "``": '"', "''": '"'}
_ESCAPE = re.compile("|".join(re.escape(k) for k in _ESCAPES))
_LINEBREAK = re.compile(r"\\\\(?:\[[^\]]*\])?")
_SPACES = re.compile(r"[ \t]+")
_BLANKS = re.compile(r"\n\s*\n\s*(?:\n\s*)+")


def strip_comments(source: str) -> str:
    """Remove ``%`` comments (an escaped ``\\%`` stays), and lines that held only a comment."""
    return "\n".join(_COMMENT.sub("", line) for line in source.splitlines() if not line.lstrip().startswith("%"))


def _braced(text: str, open_at: int) -> int:
    """Index just past the group whose ``{`` is at ``open_at`` (the text's end if it never closes)."""
    depth = 0
    i = open_at
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(text)


def inline_inputs(source: str, resolve: Resolver, depth: int = 0) -> str:
    """Replace ``\\input``/``\\include`` by the (comment-stripped) file they name, recursively; unknown files vanish."""
    if depth >= MAX_INPUT_DEPTH:
        return source

    def repl(m: re.Match[str]) -> str:
        included = resolve((m.group(1) or m.group(2)).strip())
        return "" if included is None else inline_inputs(strip_comments(included), resolve, depth + 1)

    return _INPUT.sub(repl, source)


def expand_macros(source: str) -> str:
    """Remove macro definitions; expand those without arguments (``\\newcommand{\\R}{\\mathbb{R}}``) where used."""
    macros: dict[str, str] = {}
    out: list[str] = []
    pos = 0
    for m in _MACRO_DEF.finditer(source):
        if m.start() < pos:
            continue
        end = _braced(source, m.end() - 1)
        name, args = m.group(1) or m.group(2), m.group(3)
        if not args or args.startswith("[0]"):
            macros[name] = source[m.end() : end - 1]
        out.append(source[pos : m.start()])
        pos = end
    out.append(source[pos:])
    text = "".join(out)
    if not macros:
        return text
    use = re.compile(r"\\(" + "|".join(re.escape(n) for n in sorted(macros, key=len, reverse=True)) + r")(?![A-Za-z@])")
    for _ in range(4):  # macros defined through other macros
        expanded = use.sub(lambda m: macros[m.group(1)], text)
        if expanded == text:
            break
        text = expanded
    return text


def _drop_commands(text: str) -> str:
    names = "|".join(sorted(DROPPED_COMMANDS, key=len, reverse=True))
    pattern = re.compile(rf"\\(?:{names})(?![A-Za-z@])\*?\s*(?:\[[^\]]*\]\s*)*")
    out: list[str] = []
    pos = 0
    for m in pattern.finditer(text):
        if m.start() < pos:
            continue
        out.append(text[pos : m.start()])
        end = m.end()
        while end < len(text) and text[end] == "{":  # every braced argument goes too
            end = _braced(text, end)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _drop_envs(text: str) -> str:
    for env in DROPPED_ENVS:
        e = re.escape(env)
        text = re.sub(rf"\\begin\{{{e}\}}.*?(\\end\{{{e}\}}|$)", "", text, flags=re.DOTALL)
    return text


def _sections(text: str) -> str:
    out: list[str] = []
    pos = 0
    for m in _SECTION.finditer(text):
        if m.start() < pos:
            continue
        end = _braced(text, m.end() - 1)
        out.append(text[pos : m.start()] + "\n\n" + text[m.end() : end - 1] + "\n\n")
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _plain(text: str) -> str:
    """Text markup to text, for a stretch without math or verbatim."""
    text = _drop_commands(_drop_envs(text))
    text = _ITEM.sub(lambda m: "\n- " + (m.group(1) + " " if m.group(1) else ""), _sections(text))
    text = _ENV_MARK.sub("\n", _LINEBREAK.sub("\n", text))
    for _ in range(10):  # innermost \cmd{arg} -> arg, outwards
        stripped = _COMMAND_WITH_ARG.sub(r"\1", text)
        if stripped == text:
            break
        text = stripped
    text = _ESCAPE.sub(lambda m: _ESCAPES[m.group(0)], _BARE_COMMAND.sub(lambda m: m.group(0) if m.group(0) in _ESCAPES else "", text))
    return text.replace("{", "").replace("}", "")


def _title(source: str) -> str | None:
    m = _TITLE.search(source)
    if not m:
        return None
    title = " ".join(_plain(source[m.end() : _braced(source, m.end() - 1) - 1]).split())
    return title or None


def latex_to_text(source: str, resolve: Resolver | None = None) -> Extracted:
    """Plain text of a LaTeX (or Sweave) document, math kept as LaTeX; ``resolve`` maps ``\\input`` names to sources."""
    source = strip_comments(source)
    if resolve is not None:
        source = inline_inputs(source, resolve)
    source = _SWEAVE_CHUNK.sub("", source)
    source = expand_macros(source)
    title = _title(source)
    source = _INLINE_CODE.sub(lambda m: re.sub(r"(?<!\\)\$", r"\\$", m.group(0)), source)
    begin = _DOC_BEGIN.search(source)
    if begin:
        end = _DOC_END.search(source, begin.end())
        source = source[begin.end() : end.start() if end else len(source)]
    source = _BIBLIOGRAPHY.sub("", source)
    parts: list[str] = []
    pos = 0
    for m in _PROTECTED.finditer(source):
        parts.append(_plain(source[pos : m.start()]))
        block = m.group(0)
        verbatim = _VERBATIM_BLOCK.fullmatch(block)
        if verbatim:
            code = verbatim.group(2) if verbatim.group(2) is not None else verbatim.group(4) or ""
            block = f"\n{code.strip(chr(10))}\n"
        parts.append(block)
        pos = m.end()
    parts.append(_plain(source[pos:]))
    lines = [_SPACES.sub(" ", line).strip() for line in "".join(parts).splitlines()]
    return Extracted(_BLANKS.sub("\n\n", "\n".join(lines)).strip(), title=title)


def read_latex(path: str, limits: Limits = DEFAULT_LIMITS) -> Iterator[RawRecord]:
    """One record per root document of a .tex/.Rnw file, a directory or a tarball, its ``\\input``s inlined.

    The reader yields the flattened source; the source's ``markup: latex`` (the default for this
    format) converts it. ``row`` is the root's position in the sorted file list of the project; the
    sources left out for size follow as ``record_too_large`` entries.
    """
    project = project_files(path, limits)
    files = project.files
    roots = root_files(files)
    for row, name in enumerate(roots):
        base = PurePosixPath(name).parent

        def resolve(ref: str, base: PurePosixPath = base) -> str | None:
            for candidate in (ref, ref + ".tex"):
                key = str(base / candidate) if str(base) != "." else candidate
                if key in files:
                    return files[key]
            return None

        try:
            text = inline_inputs(strip_comments(files[name]), resolve)
        except RecursionError as exc:
            yield RawRecord(row, None, f"{name}: {exc}")
            continue
        member = Path(path).name if len(files) == 1 else f"{Path(path).name}/{name}"
        yield RawRecord(row, {"text": text, "title": None, "url": None, "member": member})
    for row, (name, why) in enumerate(project.skipped, start=len(roots)):
        yield RawRecord(row, None, f"{Path(path).name}/{name}: {why}", reason="record_too_large")


def from_markup(text: str, html_extractor: str) -> Extracted:
    """The ``latex`` markup converter (``massiveds.core.formats.MARKUPS``); ``html_extractor`` does not apply."""
    return latex_to_text(text)
