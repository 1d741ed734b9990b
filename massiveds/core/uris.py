"""Source URIs checked by syntax alone (no network): what ``massiveds validate`` asks of a remote source."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

#: A hub dataset: ``hf://datasets/<owner>/<name>[@revision][/<path>]``.
HF_DATASET = re.compile(r"^hf://datasets/(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[^/]+))?(?:/(?P<path>.*))?$")


def scheme_of(uri: str) -> str:
    """The URI's scheme, or '' for a local path."""
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def check_uri(uri: str, fmt: str, *, builder: str | None = None, uri_list: bool = False) -> None:
    """Raise ValueError (one line) if a source URI is malformed for its format; never touches the network."""
    from fsspec.registry import known_implementations

    scheme = scheme_of(uri)
    if uri_list and fmt == "hf":
        raise ValueError("uri_list does not apply to format hf")
    if not scheme or scheme == "file":
        return
    if scheme not in known_implementations:
        raise ValueError(f"unknown URL scheme {scheme!r} in {uri!r}; use a path, http(s)://, s3:// or hf://datasets/...")
    if scheme == "hf":
        m = HF_DATASET.match(uri)
        if m is None:
            raise ValueError(f"{uri!r}: hf URIs must look like hf://datasets/<owner>/<name>[@revision]/<path>")
        if fmt == "hf" and m.group("path") and builder is None:
            raise ValueError(f"{uri!r}: format hf reads a whole dataset (hf://datasets/<owner>/<name>); set config/split, not a path")
        if (fmt != "hf" or builder is not None) and not m.group("path"):
            raise ValueError(f"{uri!r}: name the file(s) in the dataset (hf://datasets/<owner>/<name>/<path or glob>), or use format: hf")
        return
    if fmt == "hf" and builder is None:
        raise ValueError(f"{uri!r}: format hf reads hf://datasets/<owner>/<name> or a save_to_disk folder (or data files with a builder)")
    parts = urlsplit(uri)
    if not parts.netloc:
        raise ValueError(f"{uri!r}: missing host or bucket after {scheme}://")
    if scheme in ("http", "https") and any(c in parts.path for c in "*["):
        raise ValueError(f"{uri!r}: http(s) URLs cannot be globbed (no listing); list the files one by one")
    if not parts.path.strip("/"):
        raise ValueError(f"{uri!r}: names no file")


def hf_dataset(uri: str) -> tuple[str, str | None]:
    """``(repo_id, revision)`` of an ``hf://datasets/...`` URI."""
    m = HF_DATASET.match(uri)
    if m is None:
        raise ValueError(f"{uri!r} is not an hf://datasets/ URI")
    return m.group("repo"), m.group("revision")
