"""Read a file from the pushed commit: bounded, and decoded the same way by Python and Go.

Everything in the app's repository (its settings file, its kustomize folder, its experiment
template) is written by whoever can push. Reading it must never hang, exhaust memory, end
in a traceback, or mean one thing to this Python code and another to kustomize (Go). So:

- a file must be a regular file (a FIFO would block, a folder is not a file), at most
  MAX_FILE bytes, and UTF-8;
- YAML is read event by event (never composed recursively): at most MAX_DEPTH nested
  collections; no anchors or aliases (an alias bomb expands to gigabytes, in PyYAML and
  in kustomize alike), no explicit tags (`!!binary` turns base64 into a string Python
  never saw), no directives, no merge keys (`<<`), no duplicate keys, keys are text;
- a plain (unquoted) scalar is accepted only where PyYAML (YAML 1.1) and Go's decoders
  agree on it: text to both, or true/false, null, a decimal integer that fits int64, or a
  finite decimal number. Anything else (`yes`, `0b101`, `1234e56`, `017`, `.nan`, a
  timestamp ...) must be quoted. kustomize reads a kustomization with sigs.k8s.io/yaml
  v1.4.0 (goyaml.v2 resolve.go `resolve`), and every value v2 reads as text is text to
  yaml.v3 (kyaml) too, so agreeing with v2 agrees with both.
"""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path

import yaml

from .common import BadInput

MAX_FILE = 256 * 1024  # a settings file or a template; a kustomization too
MAX_DEPTH = 64  # nested mappings and sequences
# The kustomize folder: what kustomize and the VERSION substitution may read.
FOLDER_MAX_FILE = 1024 * 1024  # a ConfigMap holds at most 1 MiB anyway
FOLDER_MAX_TOTAL = 8 * 1024 * 1024
FOLDER_MAX_ENTRIES = 1000  # files, folders and links

_STR = "tag:yaml.org,2002:str"
_RESOLVER = yaml.resolver.Resolver()
_DECIMAL_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_DECIMAL_FLOAT = re.compile(r"-?(0|[1-9][0-9]*)\.[0-9]+")
# goyaml.v2 resolve.go (sigs.k8s.io/yaml v1.4.0): resolveMap, and what its 'D'/'S'/'.'
# hints turn into numbers or timestamps (a superset: refusing too much is safe).
_GO_NOT_TEXT = {
    "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
    "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
    "", "~", "null", "Null", "NULL", ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF",
    "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF", "<<",
}
_GO_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ].*)?", re.S)  # parseTimestamp's formats
_GO_INT = re.compile(r"[-+]?(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|[0-9]+)")  # strconv.ParseInt(s, 0, 64)
_GO_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")  # yamlStyleFloat


def go_reads_as_text(value: str) -> bool:
    """Whether goyaml.v2's resolve() leaves this plain scalar a string."""
    if value in _GO_NOT_TEXT:
        return False
    if value[0] == ".":
        return not _GO_FLOAT.fullmatch(value.replace("_", ""))  # strconv.ParseFloat
    if value[0] in "+-0123456789":
        plain = value.replace("_", "")  # resolve() drops underscores before parsing
        return not (_GO_TIMESTAMP.fullmatch(value) or _GO_INT.fullmatch(plain) or _GO_FLOAT.fullmatch(plain))
    return True


def plain_scalar(value: str, where: str):
    """The value of a plain scalar, if PyYAML and Go read it the same; else BadInput."""
    if _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) == _STR and go_reads_as_text(value):
        return value
    if value in ("true", "false"):
        return value == "true"
    if value in ("", "~", "null", "Null", "NULL"):
        return None
    if _DECIMAL_INT.fullmatch(value) and -(2**63) <= int(value) < 2**63:
        return int(value)
    if _DECIMAL_FLOAT.fullmatch(value) and math.isfinite(float(value)):
        return float(value)
    if value == "<<":
        raise BadInput(f"{where}: merge keys (<<) are not allowed; write the values out")
    if value.lower().lstrip("+-") in (".nan", ".inf"):
        raise BadInput(f"{where}: {value} is not a finite number; use a finite number")
    raise BadInput(f"{where}: the unquoted value {value!r} reads differently in YAML 1.1 (Python) and in Go; "
                   "quote it if it is text, or write true/false, null or a plain decimal number")


def read_text(path: Path, what: str, limit: int = MAX_FILE) -> str:
    """The file's text: a regular file of at most `limit` bytes, in UTF-8."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: opening a FIFO must not hang
    except OSError as err:
        raise BadInput(f"cannot read {what}: {err.strerror}; check the path") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadInput(f"{what} is not a regular file; point the setting at a file")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise BadInput(f"{what} is larger than {limit // 1024} KiB; keep it smaller")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadInput(f"{what} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None


def _line(event) -> str:
    return f" (line {event.start_mark.line + 1})" if event.start_mark else ""


def events(text: str, what: str, *, strict: bool = True):
    """The YAML events of text, refusing aliases, anchors and too deep nesting; with
    `strict`, also explicit tags and directives. Parse errors are one BadInput line."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):  # the pure-Python parser keeps its own stack
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise BadInput(f"{what}{_line(event)}: YAML anchors and aliases (& and *) are not allowed; write the values out")
            if strict and isinstance(event, yaml.DocumentStartEvent) and (event.version or event.tags):
                raise BadInput(f"{what}{_line(event)}: YAML directives (%YAML, %TAG) are not allowed; remove them")
            if strict and getattr(event, "tag", None) is not None:
                raise BadInput(f"{what}{_line(event)}: explicit YAML tags ({event.tag}) are not allowed; remove the tag")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise BadInput(f"{what}{_line(event)}: nested deeper than {MAX_DEPTH} levels; flatten it")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            yield event
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise BadInput(f"{what} is not valid YAML{f' at line {mark.line + 1}' if mark else ''}; fix the file") from None


def check_yaml(text: str, what: str) -> None:
    """Refuse YAML (a manifest kustomize reads) that is invalid, nests too deep or has aliases."""
    for _ in events(text, what, strict=False):
        pass


class _Key:
    """The mapping a key is pending in."""

    def __init__(self, mapping: dict):
        self.mapping, self.key = mapping, None


def load_yaml(text: str, what: str) -> list:
    """The documents of text, read strictly (see the module's docstring)."""
    docs, stack = [], []  # stack: lists and _Key(mapping) being filled

    def add(value, event) -> None:
        if not stack:
            docs.append(value)
            return
        top = stack[-1]
        if isinstance(top, list):
            top.append(value)
        elif top.key is None:
            if not isinstance(value, str):
                raise BadInput(f"{what}{_line(event)}: a mapping key must be text; quote it")
            if value == "<<":
                raise BadInput(f"{what}{_line(event)}: merge keys (<<) are not allowed; write the values out")
            if value in top.mapping:
                raise BadInput(f"{what}{_line(event)}: duplicate key {value!r}; keep one")
            top.key = value
        else:
            top.mapping[top.key], top.key = value, None

    for event in events(text, what):
        if isinstance(event, yaml.ScalarEvent):
            value = plain_scalar(event.value, f"{what}{_line(event)}") if event.implicit[0] else event.value
            add(value, event)
        elif isinstance(event, yaml.SequenceStartEvent):
            stack.append([])
        elif isinstance(event, yaml.MappingStartEvent):
            stack.append(_Key({}))
        elif isinstance(event, yaml.CollectionEndEvent):
            top = stack.pop()
            add(top if isinstance(top, list) else top.mapping, event)
    return docs


def load_mapping(path: Path, what: str, kind: str) -> dict:
    """The one YAML mapping in a file from the commit (e.g. kind 'a RolloutSettings')."""
    docs = [d for d in load_yaml(read_text(path, what), what) if d is not None]
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise BadInput(f"{what} must hold exactly one YAML mapping ({kind})")
    return docs[0]


def check_folder(directory: Path) -> None:
    """Bound what kustomize and the VERSION substitution read: file count and sizes, and
    only regular files, folders and symbolic links (a FIFO would block them)."""
    entries = total = 0
    for folder, dirs, files in os.walk(directory, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.lstat()
            entries += 1
            if entries > FOLDER_MAX_ENTRIES:
                raise BadInput(f"{directory} holds more than {FOLDER_MAX_ENTRIES} files and folders; keep only the app's config in it")
            if stat.S_ISREG(info.st_mode):
                if info.st_size > FOLDER_MAX_FILE:
                    raise BadInput(f"{path.relative_to(directory)} is larger than {FOLDER_MAX_FILE // 1024} KiB; "
                                   "keep the kustomize folder to manifests and small config files")
                total += info.st_size
            elif not (stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode)):
                raise BadInput(f"{path.relative_to(directory)} in {directory} is not a file, folder or link; remove it")
    if total > FOLDER_MAX_TOTAL:
        raise BadInput(f"the files in {directory} add up to more than {FOLDER_MAX_TOTAL // 1024 // 1024} MiB; "
                       "keep the kustomize folder to manifests and small config files")
