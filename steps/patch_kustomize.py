"""Render the candidate's version-specific manifests from the app's kustomize config.

    python -m steps.patch_kustomize --kustomize-dir DIR --version VER --image IMAGE [--output FILE]

Works on a copy of DIR, in one of two modes:
  placeholder: some file in DIR contains the word VERSION (the seed's convention, e.g. a
               JSON6902 patch setting /metadata/name to reviews-VERSION); it is replaced.
  overlay:     otherwise an overlay gives every Deployment, ConfigMap and Secret the name
               suffix -VER (kustomize updates the references), and the Deployments the
               label version: VER (metadata, pod template and selector). Services untouched.
In both modes the Deployments' image is set to IMAGE and every object whose name now
carries the version gets the label iter8-tekton.dev/version: VER, so cleanup can find it.

DIR comes from the pushed commit, so it may only use files inside itself: a reference to
a URL, a git repository or a path outside DIR is refused before kustomize runs (kustomize
has no switch to stop it from fetching them), kustomize runs with its root-only load
restrictor, and the VERSION substitution never writes through a symbolic link.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import yaml

from .candidate import APPLIED_KINDS, versioned
from .common import VERSION_LABEL, BadInput, add_results_dir, check_name, check_version, log, parser, run, write_results

PLACEHOLDER = re.compile(r"\bVERSION\b")
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_TEXT_SUFFIXES = {".yaml", ".yml", ".json"}
# registry[:port]/path[:tag][@sha256:digest]; lowercase path components as in the OCI distribution spec.
_IMAGE = re.compile(
    r"^(?P<name>(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


def parse_image(image: str) -> dict:
    match = _IMAGE.match(image)
    if not match:
        raise BadInput(f"image {image!r} is not a valid image reference such as registry.example.com/app@sha256:<64 hex>")
    return match.groupdict()


# Files are loaded only from inside the kustomization's own folder (explicit, though it is
# kustomize's default); no plugins, no helm, no exec functions (their flags are not given).
RESTRICTOR = "--load-restrictor=LoadRestrictionsRootOnly"


def kustomize_command(directory: Path) -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build", RESTRICTOR, str(directory)]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize", RESTRICTOR, str(directory)]
    raise BadInput("neither kustomize nor kubectl is on PATH; install kustomize (or kubectl >= 1.14)")


# Every kustomization field that names a file, a folder or (to kustomize) a URL or git repo
# (kustomize api v0.18 types/kustomization.go). helmCharts always need the network.
_PATH_FIELDS = ("resources", "bases", "components", "crds", "configurations", "generators", "transformers", "validators")
_GENERATORS = ("configMapGenerator", "secretGenerator")


def _references(kustomization: dict) -> Iterator[tuple[str, str]]:
    """(field, reference) for every file or folder a kustomization loads."""
    for key in _PATH_FIELDS:
        for entry in kustomization.get(key) or []:
            if isinstance(entry, str):
                yield key, entry
    for entry in kustomization.get("patchesStrategicMerge") or []:
        if isinstance(entry, str) and "\n" not in entry:  # else an inline patch
            yield "patchesStrategicMerge", entry
    for key in ("patches", "patchesJson6902", "replacements"):
        for entry in kustomization.get(key) or []:
            if isinstance(entry, dict) and entry.get("path"):
                yield key, entry["path"]
    for key in _GENERATORS:
        for generator in kustomization.get(key) or []:
            for field in ("files", "envs"):
                for entry in generator.get(field) or []:
                    yield key, entry.split("=", 1)[-1]  # files: [key=]path
            if generator.get("env"):
                yield key, generator["env"]
    if isinstance(kustomization.get("openapi"), dict) and kustomization["openapi"].get("path"):
        yield "openapi", kustomization["openapi"]["path"]


def check_local_only(directory: Path) -> None:
    """Refuse a kustomization (or one it includes) that loads anything from outside `directory`."""
    root = directory.resolve()
    pending, seen = [root], set()
    while pending:
        folder = pending.pop()
        if folder in seen:
            continue
        seen.add(folder)
        kustomization = _load_kustomization(folder)
        if kustomization.get("helmCharts") or kustomization.get("helmChartInflationGenerator"):
            raise BadInput(f"{folder.relative_to(root) if folder != root else 'the kustomization'} uses helmCharts, which "
                           "kustomize fetches from the network; render the chart into the repository instead")
        for key, ref in _references(kustomization):
            target = (folder / ref).resolve()
            if "://" in ref or ref.startswith("git@") or os.path.isabs(ref) or not target.is_relative_to(root) or not target.exists():
                raise BadInput(
                    f"{key} entry {ref!r} is not a file or folder inside {directory}: kustomize would fetch it from the "
                    "network or read outside the app's folder; copy what it needs into the kustomize folder"
                )
            if key in ("resources", "bases", "components") and target.is_dir():
                pending.append(target)


def _load_kustomization(folder: Path) -> dict:
    for name in KUSTOMIZATION_FILES:
        path = folder / name
        if path.is_file():
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError):
                raise BadInput(f"{path} is not valid YAML; fix the kustomization") from None
            return loaded if isinstance(loaded, dict) else {}
    return {}


def build(directory: Path) -> list[dict]:
    proc = subprocess.run(kustomize_command(directory), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        detail = next((line for line in lines if line.startswith("Error:")), lines[-1] if lines else "no output")
        raise BadInput(f"kustomize build failed: {detail}; fix the kustomize config")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def find_kustomization(directory: Path) -> Path:
    if not directory.is_dir():
        raise BadInput(f"kustomize directory {directory} does not exist; pass the app's kustomize folder")
    for name in KUSTOMIZATION_FILES:
        if (directory / name).is_file():
            return directory / name
    raise BadInput(f"no kustomization.yaml in {directory}; pass the folder that holds the app's kustomization")


def substitute_placeholder(directory: Path, version: str) -> list[Path]:
    """Replace the word VERSION in the YAML/JSON files under directory; the files changed.
    Symbolic links are neither followed nor written through."""
    changed = []
    for folder, dirs, files in os.walk(directory, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file() or not (path.suffix in _TEXT_SUFFIXES or name == "Kustomization"):
                continue
            text = path.read_text(encoding="utf-8")
            if any(PLACEHOLDER.search(line.split("#", 1)[0]) for line in text.splitlines()):  # not in comments
                path.write_text(PLACEHOLDER.sub(version, text), encoding="utf-8")
                changed.append(path)
    return changed


def image_override(deployments: list[dict], image: str) -> dict:
    """The kustomize `images:` entry that points the Deployments' app container at image."""
    new = parse_image(image)
    names = sorted(
        {
            parse_image(c["image"])["name"]
            for d in deployments
            for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
            if c.get("image") and _IMAGE.match(c["image"])
        }
    )
    if len(names) > 1:  # several images: take the one whose repository has the same last path part
        names = [n for n in names if n.rsplit("/", 1)[-1] == new["name"].rsplit("/", 1)[-1]]
    if len(names) != 1:
        raise BadInput(
            f"cannot tell which container image to replace with {image}: the Deployments use "
            f"{', '.join(names) or 'no image'}; give the app container an image with the same repository name"
        )
    entry = {"name": names[0], "newName": new["name"]}
    if new["digest"]:
        entry["digest"] = new["digest"]
    elif new["tag"]:
        entry["newTag"] = new["tag"]
    return entry


def overlay_transformers(version: str) -> list[dict]:
    """The version suffix on the kinds a candidate applies (kustomize rewrites the references
    to them, an autoscaler's scaleTargetRef included); the version label on Deployments and
    on a disruption budget's selector, so it covers the candidate's pods only. Never on Services."""
    on_deployment = lambda path: {"kind": "Deployment", "path": path, "create": True}  # noqa: E731
    return [
        {
            "apiVersion": "builtin",
            "kind": "PrefixSuffixTransformer",
            "metadata": {"name": "candidate-name-suffix"},
            "suffix": f"-{version}",
            "fieldSpecs": [{"kind": kind, "path": "metadata/name"} for kind in APPLIED_KINDS],
        },
        {
            "apiVersion": "builtin",
            "kind": "LabelTransformer",
            "metadata": {"name": "candidate-version-label"},
            "labels": {"version": version},
            "fieldSpecs": [
                on_deployment("metadata/labels"),
                on_deployment("spec/selector/matchLabels"),
                on_deployment("spec/template/metadata/labels"),
                {"kind": "PodDisruptionBudget", "path": "spec/selector/matchLabels", "create": True},
            ],
        },
    ]


def render(directory: Path, version: str, image: str) -> tuple[str, list[dict]]:
    """The mode used and the candidate's objects, rendered in a scratch copy of directory."""
    find_kustomization(directory)
    check_local_only(directory)
    with tempfile.TemporaryDirectory(prefix="patch-kustomize-") as scratch:
        base = Path(scratch) / "base"
        shutil.copytree(directory, base, symlinks=True)
        mode = "placeholder" if substitute_placeholder(base, version) else "overlay"
        deployments = [d for d in build(base) if d.get("kind") == "Deployment"]
        if mode == "placeholder":
            unchanged = {d["metadata"]["name"] for d in deployments} & {
                d["metadata"]["name"] for d in build(directory) if d.get("kind") == "Deployment"
            }
            if unchanged:
                raise BadInput(
                    f"the VERSION placeholder does not rename Deployment {', '.join(sorted(unchanged))}, so applying "
                    "it would replace the running version; make the patch set /metadata/name to e.g. reviews-VERSION"
                )
        if not deployments:
            raise BadInput(f"kustomize output of {directory} has no Deployment; the config must define the app's Deployment")
        overlay = Path(scratch) / "overlay"
        overlay.mkdir()
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": ["../base"],
            "images": [image_override(deployments, image)],
        }
        if mode == "overlay":
            (overlay / "candidate-version.yaml").write_text(yaml.safe_dump_all(overlay_transformers(version)))
            kustomization["transformers"] = ["candidate-version.yaml"]
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
        objects = build(overlay)
    for obj in objects:
        if versioned(obj.get("metadata", {}).get("name", ""), version):
            obj["metadata"].setdefault("labels", {})[VERSION_LABEL] = version
    return mode, objects


def candidate_deployments(objects: list[dict], version: str) -> list[str]:
    names = [o["metadata"]["name"] for o in objects if o.get("kind") == "Deployment"]
    for name in names:
        check_name(name, "candidate Deployment name")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("patch_kustomize", "Render the candidate's version-specific manifests with kustomize.")
    p.add_argument("--kustomize-dir", required=True, type=Path, help="the app's kustomize folder (not modified)")
    p.add_argument("--version", required=True, help="the candidate's version, e.g. the short commit SHA")
    p.add_argument("--image", required=True, help="the candidate's image, preferably by digest")
    p.add_argument("--output", help="write the manifests here (default: stdout)")
    p.add_argument("--expect-deployment", help="fail unless the candidate Deployment gets this name (the experiment's)")
    add_results_dir(p)
    args = p.parse_args(argv)

    version = check_version(args.version)
    parse_image(args.image)
    mode, objects = render(args.kustomize_dir, version, args.image)
    names = candidate_deployments(objects, version)
    if args.expect_deployment and args.expect_deployment not in names:
        raise BadInput(
            f"the candidate Deployment is {', '.join(names)}, but the experiment expects {args.expect_deployment}; "
            "make the pipeline's `deployment` param the base name of the app's Deployment"
        )
    manifest = yaml.safe_dump_all(objects, sort_keys=False)
    if args.output:
        Path(args.output).write_text(manifest, encoding="utf-8")
    else:
        sys.stdout.write(manifest)
    messages = sys.stderr if not args.output else sys.stdout
    log(f"rendered {len(objects)} objects ({mode} mode) from {args.kustomize_dir}", stream=messages)
    for name in names:
        print(f"deployment: {name}", file=messages, flush=True)
    write_results(args.results_dir, deployment=names[0])
    return 0


def entry() -> None:
    run(main)


if __name__ == "__main__":
    entry()
