"""The seed's VERSION placeholder: replaced by the version in a copy of the kustomize folder.

A short SHA can look like a number: `1234567` is an integer and `1234e56` a float to Go
(goyaml.v2 and yaml.v3 resolve), `0b10101` an integer to both. Written bare into a YAML
value, it would reach the Deployment's labels as a number, which the API server refuses.
So in YAML files the placeholder is replaced scalar by scalar: a plain or quoted scalar
that holds VERSION is written back double-quoted (always text, to every YAML reader), a
block scalar (always text) is edited in place. JSON files are edited as text: there
VERSION can only stand inside a string. Comments are left alone.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from . import untrusted

PLACEHOLDER = re.compile(r"\bVERSION\b")
_YAML_SUFFIXES = {".yaml", ".yml"}


def _in_yaml(text: str, version: str, what: str) -> str:
    """text with VERSION replaced in its scalars (positions from PyYAML's marks, in characters)."""
    spans = []
    for event in untrusted.events(text, what, strict=False):
        if isinstance(event, yaml.ScalarEvent) and PLACEHOLDER.search(event.value):
            start, end = event.start_mark.index, event.end_mark.index
            if event.style in ("|", ">"):
                spans.append((start, end, PLACEHOLDER.sub(version, text[start:end])))
            else:
                spans.append((start, end, json.dumps(PLACEHOLDER.sub(version, event.value), ensure_ascii=False)))
    for start, end, new in reversed(spans):
        text = text[:start] + new + text[end:]
    return text


def substitute(directory: Path, version: str) -> list[Path]:
    """Replace VERSION in the YAML and JSON files under directory; the files changed.
    Symbolic links are neither followed nor written through."""
    changed = []
    for folder, dirs, files in os.walk(directory, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            is_yaml = path.suffix in _YAML_SUFFIXES or name == "Kustomization"
            if path.is_symlink() or not path.is_file() or not (is_yaml or path.suffix == ".json"):
                continue
            what = str(path.relative_to(directory))
            text = untrusted.read_text(path, what, untrusted.FOLDER_MAX_FILE)
            if not PLACEHOLDER.search(text):
                continue
            new = _in_yaml(text, version, what) if is_yaml else PLACEHOLDER.sub(version, text)
            if new != text:
                path.write_text(new, encoding="utf-8")
                changed.append(path)
    return changed
