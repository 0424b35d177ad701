"""hack/quickstart.sh with a stubbed PATH: fake kind, kubectl, docker, curl, git and python3
record their calls, so the order of operations, the pinned versions and the idempotency
are checked here (the script itself needs Docker and the internet)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, need_tool

FAKES = ROOT / "tests" / "fakebin"
SHA = "3f2a1bc9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f"
# Every existence check the script makes, as the fake kubectl names them.
EXISTING = [
    "get deployment tekton-pipelines-controller -n tekton-pipelines",
    "get deployment tekton-triggers-controller -n tekton-pipelines",
    "get deployment istiod -n istio-system",
    "get deployment prometheus -n istio-system",
    "get crd experiments.iter8.tools",
    "get deployment productpage-v1 -n bookinfo",
    "get secret github-webhook -n bookinfo",
    "get secret registry-credentials -n bookinfo",
    f"get pipelineruns -n bookinfo -l iter8-tekton.dev/commit={SHA} -o name",
]


@pytest.fixture
def sandbox(tmp_path):
    """A copy of the repository (the script writes under .cache/) and the fake tools' state."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".git", ".venv", ".cache", "node_modules", "__pycache__"))
    state = tmp_path / "state"
    (state / "exists").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sh", "tar", "gzip", "cat", "cut", "grep", "mkdir", "cp", "rm", "sleep", "base64",
                 "dirname", "basename", "tr", "mktemp", "chmod", "env", "printf", "sed", "head", "touch", "ls"):
        if shutil.which(tool):
            os.symlink(shutil.which(tool), bin_dir / tool)
    env = {"PATH": f"{FAKES}:{bin_dir}", "QUICKSTART_LOG": str(tmp_path / "calls.log"), "QUICKSTART_STATE": str(state),
           "QUICKSTART_REAL_PYTHON": sys.executable, "HOME": str(tmp_path)}
    return repo, state, env, tmp_path / "calls.log"


def quickstart(repo, env, *args):
    return subprocess.run([str(repo / "hack" / "quickstart.sh"), *args], capture_output=True, text=True, env=env, timeout=120)


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def index(lines, fragment):
    matches = [i for i, line in enumerate(lines) if fragment in line]
    assert matches, f"no call with {fragment!r}"
    return matches[0]


def test_a_fresh_run_sets_everything_up_in_order(sandbox):
    repo, state, env, log = sandbox
    proc = quickstart(repo, env)
    assert proc.returncode == 0, proc.stderr
    lines = calls(log)
    order = [
        "docker run -d --restart=always --name kind-registry registry:2.8.3",
        "kind create cluster --name iter8-tekton --image kindest/node:v1.32.8",
        "kubectl apply -f https://infra.tekton.dev/tekton-releases/pipeline/previous/v1.15.0/release.yaml",
        "kubectl apply -f https://infra.tekton.dev/tekton-releases/triggers/previous/v0.37.0/release.yaml",
        "kubectl apply -f https://infra.tekton.dev/tekton-releases/triggers/previous/v0.37.0/interceptors.yaml",
        "curl -fsSL -o .cache/quickstart/istio.tar.gz https://github.com/istio/istio/releases/download/1.30.3/istio-1.30.3-linux-amd64.tar.gz",
        "istioctl install --set profile=demo -y",
        "samples/addons/prometheus.yaml",
        "iter8-controller/v1.0.1/install/iter8-controller-telemetry-v2-17.yaml",
        "iter8-analytics/v1.0.0/install/kubernetes/iter8-analytics.yaml",
        "samples/bookinfo/platform/kube/bookinfo.yaml",
        "kubectl delete deployment reviews-v2 reviews-v3 -n bookinfo",
        "docker build -f images/steps/Dockerfile -t localhost/iter8-tekton/steps:0.1.0 .",
        "kind load docker-image localhost/iter8-tekton/steps:0.1.0 --name iter8-tekton",
        "kubectl apply -k ",
        "kubectl create secret generic github-webhook -n bookinfo",
        f"venv-python hack/send-webhook.py --url http://localhost:18080 --repository example/reviews --branch main --commit {SHA}",
    ]
    positions = [index(lines, fragment) for fragment in order]
    assert positions == sorted(positions), "the steps ran out of order"
    config = (state / "kind-config.yaml").read_text()
    assert 'registry.mirrors."kind-registry:5000"' in config and "http://kind-registry:5000" in config
    assert "A canary rollout of reviews-3f2a1bc is running" in proc.stdout


def test_the_overlay_it_applies_renders(sandbox):
    need_tool("kubectl")
    repo, state, env, log = sandbox
    assert quickstart(repo, env).returncode == 0
    out = subprocess.run([shutil.which("kubectl"), "kustomize", env["HOME"] + "/.cache/iter8-tekton-quickstart"],
                         capture_output=True, text=True, check=True).stdout
    objects = [d for d in yaml.safe_load_all(out) if d]
    filters = [p["value"] for o in objects if o["kind"] == "EventListener"
               for i in o["spec"]["triggers"][0]["interceptors"] for p in i.get("params", []) if p["name"] == "filter"]
    assert "body.repository.full_name == 'example/reviews'" in filters
    template = next(o for o in objects if o["kind"] == "TriggerTemplate")
    defaults = {p["name"]: p.get("default") for p in template["spec"]["params"]}
    assert defaults["image-repository"] == "kind-registry:5000/bookinfo/reviews"
    assert defaults["insecure-registry"] == "true" and defaults["kustomize-dir"] == "tests/apps/reviews/kustomize"
    images = {s["image"] for o in objects if o["kind"] == "Task" for s in o["spec"]["steps"]}
    assert "localhost/iter8-tekton/steps:0.1.0" in images


def test_a_second_run_skips_what_exists(sandbox):
    repo, state, env, log = sandbox
    assert quickstart(repo, env).returncode == 0
    for check in EXISTING:
        (state / "exists" / check.replace(" ", "_").replace("/", "_")).touch()
    log.unlink()
    proc = quickstart(repo, env)
    assert proc.returncode == 0, proc.stderr
    lines = calls(log)
    mutating = [line for line in lines if line.split()[:2] in (["kind", "create"], ["docker", "run"], ["istioctl", "install"])
                or line.startswith(("curl", "kubectl create", "kubectl delete", "kubectl label"))
                or (line.startswith("kubectl apply") and " -k " not in line)]
    assert mutating == []
    assert not any("send-webhook" in line for line in lines)
    assert "a run for 3f2a1bc9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f exists already" in proc.stdout


@pytest.mark.parametrize("missing", ["kind", "docker", "kubectl"])
def test_a_missing_tool_fails_fast(sandbox, tmp_path, missing):
    repo, state, env, log = sandbox
    partial = tmp_path / "partial"
    partial.mkdir()
    for fake in FAKES.iterdir():
        if fake.name != missing:
            os.symlink(fake, partial / fake.name)
    env = {**env, "PATH": env["PATH"].replace(str(FAKES), str(partial))}
    proc = quickstart(repo, env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"quickstart: {missing} is not installed; install it and re-run (see README, Quickstart)"
    assert calls(log) == []


def test_down_deletes_the_cluster_and_registry(sandbox):
    repo, state, env, log = sandbox
    assert quickstart(repo, env, "--down").returncode == 0
    assert calls(log) == ["kind delete cluster --name iter8-tekton", "docker rm -f kind-registry"]


def test_an_app_outside_github_is_refused(sandbox, tmp_path):
    repo, state, env, log = sandbox
    fake_git = tmp_path / "gitbin"
    fake_git.mkdir()
    (fake_git / "git").write_text("#!/usr/bin/env bash\necho git@gitlab.example.com:team/reviews.git\n")
    (fake_git / "git").chmod(0o755)
    proc = quickstart(repo, {**env, "PATH": f"{fake_git}:{env['PATH']}"})
    assert proc.returncode == 2 and "is not on GitHub: set APP_REPOSITORY=OWNER/NAME" in proc.stderr
