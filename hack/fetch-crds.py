#!/usr/bin/env python3
"""Download the upstream CRDs the tests validate against, into .cache/crds/.

    python hack/fetch-crds.py [--dest DIR] [--mirror URL]

The files, versions and git blob ids are those of ../shared/crds/SOURCES.md (Tekton
Pipelines v1.15.0, Triggers v0.37.0, iter8 v0.2.1 and v1.0.1, Istio 1.30.3). Each
download is checked against its upstream git blob id, so a changed file is an error,
not a silently different schema. For Istio, three documents (DestinationRule, Gateway,
VirtualService) are taken from the chart's crd-all.gen.yaml. Tests look in .cache/crds
when ../shared/crds is absent; CRDS_DIR overrides both.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
RAW = "https://raw.githubusercontent.com"
PIPELINE = "tektoncd/pipeline/v1.15.0/config/300-crds"
TRIGGERS = "tektoncd/triggers/v0.37.0/config"
ITER8 = "iter8-tools/iter8-controller"

# local path -> (upstream path under RAW, git blob id of the file)
FILES = {
    "tekton-pipeline/300-task.yaml": (f"{PIPELINE}/300-task.yaml", "17dc802c5f2afb01deb4427829d88c3c96a60cda"),
    "tekton-pipeline/300-pipeline.yaml": (f"{PIPELINE}/300-pipeline.yaml", "8da0f19f93433e16591335833bade51919c4429a"),
    "tekton-pipeline/300-pipelinerun.yaml": (f"{PIPELINE}/300-pipelinerun.yaml", "6fb4a1797389d973887b6bba7c0e5ade8188cf87"),
    "tekton-pipeline/300-taskrun.yaml": (f"{PIPELINE}/300-taskrun.yaml", "1aa0dc328340271614703f97e514dcb13ca29a58"),
    "tekton-pipeline/300-stepaction.yaml": (f"{PIPELINE}/300-stepaction.yaml", "c61fe6a378200faff9235b5ab88e1115e0e822a0"),
    "tekton-triggers/300-eventlistener.yaml": (f"{TRIGGERS}/300-eventlistener.yaml", "47ef6e50eb6ba2c54d8de8db4a7fa8698a44cd91"),
    "tekton-triggers/300-trigger.yaml": (f"{TRIGGERS}/300-trigger.yaml", "a4fc28d35f318c295b083d389e6d44b236533990"),
    "tekton-triggers/300-triggerbinding.yaml": (f"{TRIGGERS}/300-triggerbinding.yaml", "9ed1e1555a74823f52a4736ce79bd7cd92a84c7f"),
    "tekton-triggers/300-clustertriggerbinding.yaml": (f"{TRIGGERS}/300-clustertriggerbinding.yaml", "aa67d08bd161d1e0aab69194d1c1d8b977c9875f"),
    "tekton-triggers/300-triggertemplate.yaml": (f"{TRIGGERS}/300-triggertemplate.yaml", "c5b3b190de2cf5c979ce4cb5e1b618a656b2679f"),
    "tekton-triggers/300-interceptor.yaml": (f"{TRIGGERS}/300-interceptor.yaml", "9d9368513ec75b4d82d1ea84ad7c59895e4873cf"),
    "tekton-triggers/300-clusterinterceptor.yaml": (f"{TRIGGERS}/300-clusterinterceptor.yaml", "c87cdcd569f675340bdfc9bebec7a68930a431a6"),
    "iter8/v1alpha1/iter8.tools_experiments.yaml": (
        f"{ITER8}/v0.2.1/install/helm/iter8-controller/templates/crds/iter8.tools_experiments.yaml",
        "21e11a11b24187ab206e61697bffd99c084fe36b"),
    "iter8/v1alpha2/iter8.tools_experiments.yaml": (
        f"{ITER8}/v1.0.1/install/helm/iter8-controller/templates/crds/v1alpha2/iter8.tools_experiments.yaml",
        "11c95c4ed34242619624e44961d7c178b9308749"),
}
ISTIO = ("istio/istio/1.30.3/manifests/charts/base/files/crd-all.gen.yaml", "7318e07ffdaca66dbbfdc4e27e93da74eabdd3a2")
ISTIO_LOCAL = "istio/networking.yaml"
ISTIO_CRDS = ("destinationrules.networking.istio.io", "gateways.networking.istio.io", "virtualservices.networking.istio.io")


def git_blob_id(data: bytes) -> str:
    """What `git hash-object` prints for a file with these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def download(session: requests.Session, url: str, blob: str) -> bytes:
    resp = session.get(url, timeout=60)
    resp.raise_for_status()
    if git_blob_id(resp.content) != blob:
        raise ValueError(f"{url} is not the pinned upstream file (git blob {git_blob_id(resp.content)}, expected {blob})")
    return resp.content


def istio_networking(all_crds: bytes) -> bytes:
    """The DestinationRule, Gateway and VirtualService CRDs, in upstream order, split and
    joined on lines that are exactly `---`."""
    docs, current = [], []
    for line in all_crds.decode().splitlines(keepends=True):
        if line.rstrip("\n") == "---":
            docs.append("".join(current))
            current = []
        else:
            current.append(line)
    docs.append("".join(current))
    wanted = [d for d in docs if any(f"\n  name: {name}\n" in d for name in ISTIO_CRDS)]
    if len(wanted) != len(ISTIO_CRDS):
        raise ValueError(f"expected {len(ISTIO_CRDS)} Istio networking CRDs in crd-all.gen.yaml, found {len(wanted)}")
    return "---\n".join(wanted).encode()


def main() -> int:
    p = argparse.ArgumentParser(description="Download the upstream CRDs the tests validate against.")
    p.add_argument("--dest", type=Path, default=ROOT / ".cache" / "crds")
    p.add_argument("--mirror", default=RAW, help=f"serves the same paths as {RAW}")
    args = p.parse_args()
    session = requests.Session()
    try:
        for local, (path, blob) in FILES.items():
            target = args.dest / local
            if target.is_file() and git_blob_id(target.read_bytes()) == blob:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(download(session, f"{args.mirror}/{path}", blob))
            print(f"fetched {local}")
        target = args.dest / ISTIO_LOCAL
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(istio_networking(download(session, f"{args.mirror}/{ISTIO[0]}", ISTIO[1])))
            print(f"fetched {ISTIO_LOCAL}")
    except (requests.RequestException, ValueError) as err:
        print(f"error: {err}; check the network (or --mirror) and re-run", file=sys.stderr)
        return 1
    print(f"CRDs are in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
