"""Which kustomizations the pipeline lets kustomize build: an allowlist, decoded as kustomize does.

kustomize 5.5 (api v0.18.0, in kubectl 1.32) fetches http(s) URLs and git repositories
named almost anywhere in a kustomization, and has no switch to stop it. So before it runs,
every kustomization it would read (the root's, and those of the folders named under
`resources` and `components`) is decoded the way kustomize decodes it and checked against
the fields a candidate needs, each with its Go type; anything else is refused with one
line naming the file and the field. Every file or folder a field names must be inside the
kustomize folder (no URL, no git repository, no absolute path, no link out of it).

How kustomize reads one (api/types/kustomization.go `Unmarshal`, api/internal/target/
kusttarget.go `Load`, `LoadKustFile`): the one file of konfig's
RecognizedKustomizationFileNames, sigs.k8s.io/yaml `YAMLToJSON` (goyaml.v2, YAML 1.1,
first document only, duplicate keys allowed), then encoding/json with
DisallowUnknownFields but not strict: a key matches a struct field case-insensitively
(Unicode simple folding: `reſources` and `RESOURCES` are `resources`), and of two keys for
one field the last wins. Here the YAML is read with steps.untrusted (no anchors, tags or
ambiguous plain scalars), keys are matched by the same folding, and two keys for one field
are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from . import untrusted
from .common import BadInput

FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")  # api/konfig/general.go
API_VERSIONS = {"Kustomization": "kustomize.config.k8s.io/v1beta1", "Component": "kustomize.config.k8s.io/v1alpha1"}
# A path inside the folder: plain names only, so nothing can read as a URL (scheme:),
# a git repository (git@host:org/repo) or an option.
_LOCAL = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/?")


@dataclass(frozen=True)
class ListOf:
    item: object


@dataclass(frozen=True)
class MapOf:
    value: type  # str or bool: Go's map[string]string or map[string]bool


@dataclass(frozen=True)
class Ref:
    """A file or folder the field names: resource (file or kustomization folder),
    component (Component folder), file, file-source ([key=]file), smp (file or inline patch)."""

    what: str


INLINE = "inline"  # an inline patch: YAML text kustomize parses


# The allowed part of each upstream type (api/types/*.go, kyaml/resid), Go type by Go type.
SELECTOR = dict.fromkeys(("group", "version", "kind", "name", "namespace", "annotationSelector", "labelSelector"), str)
GENERATOR_OPTIONS = {"labels": MapOf(str), "annotations": MapOf(str), "disableNameSuffixHash": bool, "immutable": bool}
GENERATOR = {"name": str, "behavior": str, "literals": ListOf(str), "files": ListOf(Ref("file-source")),
             "envs": ListOf(Ref("file")), "env": Ref("file"), "options": GENERATOR_OPTIONS}
PATCH = {"path": Ref("file"), "patch": INLINE, "target": SELECTOR, "options": MapOf(bool)}
FIELD_OPTIONS = {"delimiter": str, "index": int, "encoding": str, "create": bool}
REPLACEMENT = {
    "path": Ref("file"),
    "source": {**dict.fromkeys(("group", "version", "kind", "name", "namespace", "fieldPath"), str), "options": FIELD_OPTIONS},
    "targets": ListOf({"select": SELECTOR, "reject": ListOf(SELECTOR), "fieldPaths": ListOf(str), "options": FIELD_OPTIONS}),
}
KUSTOMIZATION = {
    "apiVersion": str, "kind": str, "metadata": {"name": str},
    "resources": ListOf(Ref("resource")), "components": ListOf(Ref("component")),
    "namespace": str, "namePrefix": str, "nameSuffix": str,
    "labels": ListOf({"pairs": MapOf(str), "includeSelectors": bool, "includeTemplates": bool}),
    "commonLabels": MapOf(str), "commonAnnotations": MapOf(str),
    "images": ListOf(dict.fromkeys(("name", "newName", "newTag", "digest"), str)),
    "replicas": ListOf({"name": str, "count": int}),
    "patches": ListOf(PATCH), "patchesJson6902": ListOf(PATCH), "patchesStrategicMerge": ListOf(Ref("smp")),
    "configMapGenerator": ListOf(GENERATOR), "secretGenerator": ListOf({**GENERATOR, "type": str}),
    "generatorOptions": GENERATOR_OPTIONS, "replacements": ListOf(REPLACEMENT),
}
# Why some upstream fields are refused (the rest: not needed for a candidate).
HINTS = {
    "bases": "list the folder under resources",
    "imageTags": "use images",
    "vars": "use replacements",
    "generators": "builtin and plugin generators read their own files and URLs; use configMapGenerator or secretGenerator",
    "transformers": "builtin and plugin transformers read their own files and URLs; use patches or replacements",
    "validators": "validators are plugins; validate in CI",
    "helmCharts": "kustomize fetches charts from the network; render the chart into the repository",
    "helmChartInflationGenerator": "kustomize fetches charts from the network; render the chart into the repository",
    "helmGlobals": "render the chart into the repository",
    "openapi": "the built-in schema is enough for a candidate",
    "crds": "a candidate has no custom resources",
    "configurations": "a candidate needs no transformer configurations",
}
_TYPE_NAMES = {str: "text", bool: "true or false", int: "a whole number"}


def fold(name: str) -> str:
    """encoding/json's key folding (fold.go foldName): ASCII letters by case, other runes
    by simple case folding, so U+212A KELVIN SIGN is k and U+017F LONG S is s. Folding
    more than Go does only refuses more (every allowed name is ASCII)."""
    out = []
    for c in name:
        if c.isascii():
            out.append(c.upper())
        else:
            orbit = {c, c.lower(), c.upper(), c.lower().upper(), c.upper().lower()}
            out.append(min(r for r in orbit if len(r) == 1))
    return "".join(out)


class _Kustomization:
    """One kustomization file, checked; the folders it names go to `pending`."""

    def __init__(self, root: Path, folder: Path, kind: str, pending: list):
        self.root, self.folder, self.kind, self.pending = root, folder, kind, pending
        found = [folder / name for name in FILES if (folder / name).exists() or (folder / name).is_symlink()]
        where = self._shown(folder) or "the kustomize folder"
        if not found:
            raise BadInput(f"{where} has no kustomization.yaml; kustomize needs one in every folder it builds")
        if len(found) > 1:
            raise BadInput(f"{where} has several kustomization files ({', '.join(p.name for p in found)}); keep one")
        self.name = self._shown(found[0])
        self.path = self._inside(found[0], "the kustomization", found[0].name)

    def _shown(self, path: Path) -> str:
        relative = path.relative_to(self.root) if path != self.root else Path("")
        return str(Path(self.root.name) / relative) if str(relative) != "." else self.root.name

    def _inside(self, path: Path | None, field: str, ref: str) -> Path:
        target = path.resolve() if path is not None else None
        if target is None or not target.is_relative_to(self.root) or not target.exists():
            raise BadInput(f"{self.name}: {field} entry {ref!r} is not a file or folder inside {self.root.name}: kustomize "
                           "would fetch it from the network or read outside the app's folder; copy what it needs into "
                           "the kustomize folder")
        return target

    def check(self) -> None:
        doc = untrusted.load_mapping(self.path, self.name, "a Kustomization")
        self._struct(doc, KUSTOMIZATION, "")
        fields = {fold(k): v for k, v in doc.items()}
        kind = fields.get(fold("kind"), "Kustomization")
        if kind != self.kind:
            raise BadInput(f"{self.name}: kind is {kind!r}, but {'components' if self.kind == 'Component' else 'the root and resources'} "
                           f"must be a {self.kind}; set kind: {self.kind}")
        api_version = fields.get(fold("apiVersion"), API_VERSIONS[kind])
        if api_version != API_VERSIONS[kind]:
            raise BadInput(f"{self.name}: apiVersion {api_version!r} is not {API_VERSIONS[kind]}; fix it")

    def _value(self, value, spec, where: str) -> None:
        if value is None:
            raise BadInput(f"{self.name}: {where} is empty; give it a value or remove it")
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise BadInput(f"{self.name}: {where} must be a mapping")
            self._struct(value, spec, where)
        elif isinstance(spec, ListOf):
            if not isinstance(value, list):
                raise BadInput(f"{self.name}: {where} must be a list")
            for i, item in enumerate(value):
                self._value(item, spec.item, f"{where}[{i}]")
        elif isinstance(spec, MapOf):
            if not isinstance(value, dict):
                raise BadInput(f"{self.name}: {where} must be a mapping")
            for key, item in value.items():
                if type(item) is not spec.value:
                    raise BadInput(f"{self.name}: {where}.{key} must be {_TYPE_NAMES[spec.value]} (quote it if it is text)")
        elif spec in (str, bool, int):
            if type(value) is not spec:
                raise BadInput(f"{self.name}: {where} must be {_TYPE_NAMES[spec]} (quote it if it is text)")
        else:  # a reference, or an inline patch
            if type(value) is not str:
                raise BadInput(f"{self.name}: {where} must be text")
            self._reference(value, spec, where)

    def _struct(self, doc: dict, spec: dict, where: str) -> None:
        names = {fold(name): name for name in spec}
        seen: dict[str, str] = {}
        for key, value in doc.items():
            at = f"{where}.{key}" if where else key
            name = names.get(fold(key))
            if name is None:
                hint = HINTS.get(next((h for h in HINTS if fold(h) == fold(key)), ""), "")
                raise BadInput(f"{self.name}: {at} is not allowed in a kustomization the pipeline builds"
                               f"{f' ({hint})' if hint else ''}; see docs/security.md for the fields it allows")
            if name in seen:
                raise BadInput(f"{self.name}: {seen[name]!r} and {key!r} are the same field to kustomize; keep one")
            seen[name] = key
            self._value(value, spec[name], at)

    def _reference(self, ref: str, spec, where: str) -> None:
        if spec == INLINE:
            untrusted.check_yaml(ref, f"{self.name}: {where}")
            return
        if spec.what == "smp" and "\n" in ref:  # an inline patch (one line of text is a path to kustomize)
            self._reference(ref, INLINE, where)
            return
        path = ref
        if spec.what == "file-source":  # api/internal/generators/utils.go ParseFileSource: [key=]path
            if ref.count("=") > 1 or ref.startswith("=") or ref.endswith("="):
                raise BadInput(f"{self.name}: {where} {ref!r} must be a file or key=file; fix it")
            path = ref.split("=", 1)[-1]
        field = where.split(".")[-1].split("[")[0]
        target = self._inside(self.folder / path if _LOCAL.fullmatch(path) else None, field, ref)
        if spec.what == "component":
            if not target.is_dir():
                raise BadInput(f"{self.name}: {where} {ref!r} must be a folder holding a Component")
            self.pending.append((target, "Component"))
        elif spec.what == "resource" and target.is_dir():
            self.pending.append((target, "Kustomization"))
        elif not target.is_file():
            raise BadInput(f"{self.name}: {where} {ref!r} must be a file")
        elif spec.what in ("resource", "smp") or field == "path":
            # kustomize parses these as YAML: refuse what would blow it up (an alias bomb
            # takes kubectl 1.32's kustomize to gigabytes) or that it reads differently.
            shown = self._shown(target)
            untrusted.check_yaml(untrusted.read_text(target, shown, untrusted.FOLDER_MAX_FILE), shown)


def check_tree(directory: Path) -> None:
    """Refuse the kustomize folder unless every kustomization kustomize would read is allowed."""
    root = directory.resolve()
    pending, seen = [(root, "Kustomization")], set()
    while pending:
        folder, kind = pending.pop()
        if folder in seen:
            continue
        seen.add(folder)
        _Kustomization(root, folder, kind, pending).check()
