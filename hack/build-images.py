#!/usr/bin/env python3
"""Build (and push) the bundle's images with the docker SDK, tagged with the version and git SHA.

    hack/build-images.py [--registry REGISTRY] [--push] [--set-images] [--image steps|git ...]
                         [--base IMAGE] [--kubectl-image IMAGE] [--ca-bundle FILE] [--docker-host URL]

Builds images/<name>/Dockerfile for each image (steps: the step programs; git: for
fetch-source) from a clean context as REGISTRY/<name>:<version> and REGISTRY/<name>:<git sha>,
and prints the image IDs; with --push, pushes both tags and prints the registry digest.
With --set-images, points the bundle at what was built (steps-image and git-image in
triggers/settings.env, the one place the bundle's images are set): by digest when pushed,
else by the git SHA tag. Works with any Docker-API engine (Docker, or podman's `podman system
service`), found through DOCKER_HOST or --docker-host.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import docker
from docker.errors import APIError, BuildError, DockerException

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = Path("triggers") / "settings.env"  # steps-image=..., git-image=... (replacements.yaml)
# What each image's build context holds (nothing else: no .venv, .git or node_modules).
CONTEXT_FILES = {
    "steps": ["pyproject.toml", "README.md", "steps", "images/steps/Dockerfile", "images/steps/requirements.txt"],
    "git": ["images/git/Dockerfile"],
}


def version() -> str:
    text = (ROOT / "steps" / "__init__.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def git_sha() -> str:
    sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout
    return f"{sha}-dirty" if dirty.strip() else sha


def context(scratch: Path, image: str, ca_bundle: Path | None) -> Path:
    """Only what the image needs."""
    for name in CONTEXT_FILES[image]:
        source, target = ROOT / name, scratch / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target)
    if ca_bundle and image == "steps":
        shutil.copy2(ca_bundle, scratch / "images" / "steps" / "extra-ca.crt")
    return scratch


def build(client, name: str, repository: str, tags: list[str], buildargs: dict, ca_bundle: Path | None):
    with tempfile.TemporaryDirectory(prefix=f"{name}-image-") as scratch:
        path = context(Path(scratch), name, ca_bundle)
        image, logs = client.images.build(
            path=str(path), dockerfile=f"images/{name}/Dockerfile", tag=f"{repository}:{tags[0]}",
            buildargs=buildargs, rm=True, forcerm=True,
        )
    for entry in logs:
        if "stream" in entry and entry["stream"].strip().startswith("STEP"):
            print(entry["stream"].strip(), file=sys.stderr)
    for tag in tags[1:]:
        image.tag(repository, tag)
    return image


def push(client, repository: str, tag: str) -> str:
    """Push one tag; the registry's digest (Docker reports it in `aux`, podman in a status line)."""
    digest = ""
    for line in client.images.push(repository, tag=tag, stream=True, decode=True):
        if "error" in line:
            raise APIError(line["error"])
        found = re.search(r"digest: (sha256:[0-9a-f]{64})", line.get("status", ""))
        digest = (line.get("aux") or {}).get("Digest") or (found.group(1) if found else digest)
    if not digest:
        raise APIError(f"the engine reported no digest for {repository}:{tag}")
    return digest


def set_image(reference: str, image: str = "steps") -> None:
    """Point the install's settings at the built image (the line `<image>-image=`)."""
    path = ROOT / SETTINGS
    text, count = re.subn(rf"^{re.escape(image)}-image=.*$", f"{image}-image={reference}", path.read_text(), flags=re.M)
    if count != 1:
        raise SystemExit(f"error: no line {image}-image= in {SETTINGS}")
    path.write_text(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--registry", default="ghcr.io/iter8-tekton", help="where the image goes (default: %(default)s)")
    p.add_argument("--push", action="store_true", help="push both tags and print the digest")
    p.add_argument("--set-images", action="store_true", help=f"point the bundle at the built images ({SETTINGS})")
    p.add_argument("--image", action="append", choices=sorted(CONTEXT_FILES), help="build only this image (default: all)")
    p.add_argument("--base", help="the Debian base image (default: the Dockerfiles' debian:bookworm-slim)")
    p.add_argument("--kubectl-image", help="where kubectl comes from (default: the Dockerfile's registry.k8s.io/kubectl)")
    p.add_argument("--ca-bundle", type=Path, help="a CA bundle pip needs behind a TLS-intercepting proxy (build stage only)")
    p.add_argument("--docker-host", help="the engine's API, e.g. unix:///run/podman/podman.sock (default: DOCKER_HOST)")
    args = p.parse_args()

    tags = [version(), git_sha()]
    try:
        client = docker.DockerClient(base_url=args.docker_host) if args.docker_host else docker.from_env()
        references = {}
        for name in args.image or sorted(CONTEXT_FILES, reverse=True):
            repository = f"{args.registry.rstrip('/')}/{name}"
            buildargs = {"VERSION": tags[0], **({"BASE": args.base} if args.base else {})}
            if name == "steps" and args.kubectl_image:
                buildargs["KUBECTL_IMAGE"] = args.kubectl_image
            image = build(client, name, repository, tags, buildargs, args.ca_bundle)
            for tag in tags:
                print(f"built {repository}:{tag} {image.id}")
            references[name] = f"{repository}:{tags[1]}"
            if args.push:
                for tag in tags:
                    digest = push(client, repository, tag)
                    print(f"pushed {repository}:{tag} {repository}@{digest}")
                references[name] = f"{repository}@{digest}"
    except BuildError as err:
        print(f"error: the build failed: {err.msg}", file=sys.stderr)
        return 1
    except (DockerException, APIError) as err:
        print(f"error: {err}; is the engine running (DOCKER_HOST, or --docker-host)?", file=sys.stderr)
        return 1
    if args.set_images:
        for name, reference in references.items():
            set_image(reference, name)
            print(f"{SETTINGS}: {name}-image={reference}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
