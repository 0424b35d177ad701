"""Validate objects against upstream CRD schemas the way a structural API server would.

The CRDs come from ../shared/crds (developers and CI), $CRDS_DIR, or the cache that
hack/fetch-crds.py fills on a user's machine. Unknown fields are errors (structural
schemas prune them; for us a misspelt field is a bug), except where the schema says
x-kubernetes-preserve-unknown-fields.
"""

from __future__ import annotations

import copy
import os
from functools import cache
from pathlib import Path

import jsonschema
import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
ROOT = Path(__file__).resolve().parent.parent
CANDIDATE_DIRS = [
    Path(os.environ["CRDS_DIR"]) if os.environ.get("CRDS_DIR") else None,
    ROOT.parent / "shared" / "crds",
    ROOT / ".cache" / "crds",
]


def crds_dir() -> Path | None:
    for directory in CANDIDATE_DIRS:
        if directory and (directory / "tekton-pipeline" / "300-task.yaml").is_file():
            return directory
    return None


def _strict(schema: dict) -> dict:
    """OpenAPI v3 (Kubernetes flavour) to JSON Schema that rejects unknown fields."""
    out = copy.deepcopy(schema)

    def walk(node: dict) -> None:
        if node.get("x-kubernetes-int-or-string"):
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if node.get("nullable"):
            node["type"] = [node["type"], "null"] if "type" in node else None
        for child in (node.get("properties") or {}).values():
            walk(child)
        if isinstance(node.get("items"), dict):
            walk(node["items"])
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"])
        for key in ("anyOf", "allOf", "oneOf"):
            for child in node.get(key) or []:
                if isinstance(child, dict) and child is not node:
                    walk(child)
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False

    walk(out)
    return out


@cache
def _schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict JSON schema, from every CRD found."""
    directory = crds_dir()
    found: dict[tuple[str, str], dict] = {}
    if directory is None:
        return found
    for path in sorted(directory.rglob("*.yaml")):
        if "v1alpha1-2019" in path.parts:  # not structural; the final v1alpha1 (v0.2.1) CRD stands for it
            continue
        for doc in yaml.load_all(path.read_text(), Loader=_LOADER):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            group, kind = spec["group"], spec["names"]["kind"]
            if "versions" in spec:
                versions = [(v["name"], (v.get("schema") or spec.get("validation") or {}).get("openAPIV3Schema")) for v in spec["versions"]]
            else:
                versions = [(spec["version"], (spec.get("validation") or {}).get("openAPIV3Schema"))]
            for version, schema in versions:
                if schema:
                    found[(f"{group}/{version}", kind)] = schema
    return found


@cache
def _strict_schema(api_version: str, kind: str) -> dict | None:
    schema = _schemas().get((api_version, kind))
    return _strict(schema) if schema else None


def schema_for(api_version: str, kind: str) -> dict | None:
    return _strict_schema(api_version, kind)


def errors(obj: dict) -> list[str]:
    """Schema errors of obj (empty when valid); raises LookupError when no CRD is known."""
    schema = schema_for(obj.get("apiVersion", ""), obj.get("kind", ""))
    if schema is None:
        raise LookupError(f"no CRD schema for {obj.get('apiVersion')} {obj.get('kind')}")
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(obj)]


KUBERNETES_VERSION = "1.32"  # the kubectl on the development machines


def core_errors(obj: dict) -> list[str]:
    """Strict kubernetes-validate errors for a built-in kind (empty when valid)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        path = "/".join(map(str, err.path)) if getattr(err, "path", None) else "<root>"
        return [f"{path}: {str(err).splitlines()[0]}"]
    return []


# --- what a structural API server does to a custom resource on every write -----------------
def openapi_schema(api_version: str, kind: str) -> dict | None:
    """The CRD's own openAPIV3Schema for (apiVersion, kind), as the API server holds it."""
    return _schemas().get((api_version, kind))


def prune(value, schema: dict, root: bool = True):
    """Drop what the schema does not declare, as apiextensions-apiserver does for a
    structural (apiextensions.k8s.io/v1) CRD (pkg/apiserver/schema/pruning/algorithm.go):
    unknown fields go, unless x-kubernetes-preserve-unknown-fields or additionalProperties
    keeps them. An object declared with no properties keeps nothing. metadata is the API
    server's own and is not pruned."""
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
            return value
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        out = {}
        for key, child in value.items():
            if root and key in ("apiVersion", "kind", "metadata"):
                out[key] = child
            elif properties is not None and key in properties:
                out[key] = prune(child, properties[key], False)
            elif isinstance(extra, dict):
                out[key] = prune(child, extra, False)
            elif extra is True or schema.get("x-kubernetes-preserve-unknown-fields"):
                out[key] = child
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(item, schema["items"], False) for item in value]
    return value


def version_schema(crd: dict, version: str) -> dict | None:
    """The openAPIV3Schema of one version of a CustomResourceDefinition object."""
    for served in (crd.get("spec") or {}).get("versions") or []:
        if served.get("name") == version:
            return (served.get("schema") or {}).get("openAPIV3Schema")
    return None


def admit(obj: dict, schema: dict | None = None) -> tuple[dict, list[str]]:
    """The object as stored (pruned) and the schema errors that would make the write a 422;
    with the given schema (an installed CRD's), else the upstream CRD's."""
    schema = schema or openapi_schema(obj.get("apiVersion", ""), obj.get("kind", ""))
    if schema is None:
        return obj, []
    stored = prune(copy.deepcopy(obj), schema)
    lenient = _strict(schema)
    _allow_unknown(lenient)
    errs = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in jsonschema.Draft7Validator(lenient).iter_errors(stored)]
    return stored, errs


def _allow_unknown(node) -> None:
    """Undo _strict's additionalProperties: False (the object is already pruned)."""
    if isinstance(node, dict):
        if node.get("additionalProperties") is False:
            del node["additionalProperties"]
        for value in node.values():
            _allow_unknown(value)
    elif isinstance(node, list):
        for value in node:
            _allow_unknown(value)
