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

DIR comes from the pushed commit, so it is bounded (steps.untrusted.check_folder), every
kustomization in it must pass the allowlist (steps.kustomization: local files only, no
plugins), kustomize runs behind a closed proxy without git (steps.kustomize), and the
VERSION substitution (steps.placeholder) never writes through a symbolic link. Every
version value is written as a quoted string, so a SHA such as 1234e56 stays text.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import yaml

from . import kustomize, placeholder, untrusted
from .candidate import APPLIED_KINDS, metadata_type_problems, shape_problems, versioned
from .common import POD_VERSION_LABEL, VERSION_LABEL, BadInput, Problems, add_results_dir, check_name, check_version, log, parser, run, write_results
from .kustomization import FILES as KUSTOMIZATION_FILES
from .kustomization import check_tree


class _Quoted(yaml.SafeDumper):
    """Every string double-quoted: a version such as 1234e56 or 0b10101 is a number to
    Go's YAML readers when bare (sigs.k8s.io/yaml YAMLToJSON, goyaml.v2 resolve)."""


_Quoted.add_representer(str, lambda dumper, s: dumper.represent_scalar("tag:yaml.org,2002:str", s, style='"'))


class _GoSafe(yaml.SafeDumper):
    """Plain where Go reads the same text, else double-quoted (for kubectl apply -f)."""


_GoSafe.add_representer(str, lambda dumper, s: dumper.represent_scalar(
    "tag:yaml.org,2002:str", s, style=None if s and untrusted.go_reads_as_text(s) else '"'))


def build(directory: Path) -> list[dict]:
    """kustomize's objects; names, labels and annotations must be text (else the API server refuses them)."""
    objects = kustomize.build(directory)
    if problems := metadata_type_problems(objects) or shape_problems(objects):
        raise Problems(problems, f"kustomize renders objects the API server would refuse ({len(problems)} problem(s) above); "
                       "fix them in the kustomize config (quote a value that must be text)")
    return objects
# registry[:port]/path[:tag][@sha256:digest]; lowercase path components as in the OCI distribution spec.
_IMAGE = re.compile(
    r"^(?P<name>(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


def parse_image(image: str) -> dict:
    match = _IMAGE.fullmatch(image)
    if not match:
        raise BadInput(f"image {image!r} is not a valid image reference such as registry.example.com/app@sha256:<64 hex>")
    return match.groupdict()


def find_kustomization(directory: Path) -> Path:
    if not directory.is_dir():
        raise BadInput(f"kustomize directory {directory} does not exist; pass the app's kustomize folder")
    for name in KUSTOMIZATION_FILES:
        if (directory / name).is_file():
            return directory / name
    raise BadInput(f"no kustomization.yaml in {directory}; pass the folder that holds the app's kustomization")


def image_override(deployments: list[dict], image: str) -> dict:
    """The kustomize `images:` entry that points the Deployments' app container at image."""
    new = parse_image(image)
    names = sorted(
        {
            parse_image(c["image"])["name"]
            for d in deployments
            for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
            if isinstance(c.get("image"), str) and _IMAGE.fullmatch(c["image"])
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
            "labels": {POD_VERSION_LABEL: version},
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
    untrusted.check_folder(directory)
    check_tree(directory)
    with tempfile.TemporaryDirectory(prefix="patch-kustomize-") as scratch:
        base = Path(scratch) / "base"
        shutil.copytree(directory, base, symlinks=True)
        mode = "placeholder" if placeholder.substitute(base, version) else "overlay"
        if mode == "placeholder":
            check_tree(base)  # as kustomize reads it now
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
            (overlay / "candidate-version.yaml").write_text(yaml.dump_all(overlay_transformers(version), Dumper=_Quoted))
            kustomization["transformers"] = ["candidate-version.yaml"]
        (overlay / "kustomization.yaml").write_text(yaml.dump(kustomization, Dumper=_Quoted, sort_keys=False))
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
    manifest = yaml.dump_all(objects, Dumper=_GoSafe, sort_keys=False)
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
