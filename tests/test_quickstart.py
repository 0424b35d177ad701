"""hack/quickstart.sh with a stubbed PATH: fake kind, kubectl, docker, curl, git, python3,
sleep and uname record their calls and behave as the real ones do where it matters (a
Deployment that appears late, a listener that answers after a while, a stopped registry,
`kind load docker-image` failing as with Docker 29's containerd store), so the order of
operations, the pinned versions, the waits and the idempotency are checked here (the
script itself needs Docker and the internet)."""

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
    for tool in ("bash", "sh", "tar", "gzip", "cat", "cut", "grep", "mkdir", "cp", "rm", "base64", "sort",
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
        "docker info",
        "kind version",
        "docker run -d --restart=always -p 127.0.0.1:5001:5000 --network bridge --name kind-registry registry:2.8.3",
        "kind create cluster --name iter8-tekton --image kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5",
        "docker exec -i iter8-tekton-control-plane cp /dev/stdin /etc/containerd/certs.d/localhost:5001/hosts.toml",
        "docker exec -i iter8-tekton-control-plane cp /dev/stdin /etc/containerd/certs.d/kind-registry:5000/hosts.toml",
        "docker network connect kind kind-registry",
        "kubectl apply -f https://infra.tekton.dev/tekton-releases/pipeline/previous/v1.15.0/release.yaml",
        "kubectl rollout status deployment/tekton-pipelines-controller -n tekton-pipelines",
        "kubectl apply -f https://infra.tekton.dev/tekton-releases/triggers/previous/v0.37.0/release.yaml",
        "kubectl apply -f https://infra.tekton.dev/tekton-releases/triggers/previous/v0.37.0/interceptors.yaml",
        "kubectl rollout status deployment/tekton-triggers-core-interceptors -n tekton-pipelines",
        "curl -fsSL -o .cache/quickstart/istio.tar.gz https://github.com/istio/istio/releases/download/1.30.3/istio-1.30.3-linux-amd64.tar.gz",
        "istioctl install --set profile=demo -y",
        "samples/addons/prometheus.yaml",
        "iter8-controller/v1.0.1/install/iter8-controller-telemetry-v2-17.yaml",
        "iter8-analytics/v1.0.1/install/kubernetes/iter8-analytics.yaml",
        "kubectl patch crd experiments.iter8.tools --type json",
        "kubectl rollout status deployment/iter8-analytics -n iter8",
        "samples/bookinfo/platform/kube/bookinfo.yaml",
        "kubectl delete deployment reviews-v2 reviews-v3 -n bookinfo",
        "kubectl rollout status deployment/reviews-v1 -n bookinfo",
        "docker build -f images/git/Dockerfile -t localhost:5001/iter8-tekton/git:0.1.0 .",
        "docker push localhost:5001/iter8-tekton/git:0.1.0",
        "kubectl apply -k ",
        "venv-python -m steps.doctor --namespace bookinfo --service reviews --prometheus-url http://127.0.0.1:19090",
        "kubectl create secret generic github-webhook -n bookinfo",
        "kubectl rollout status deployment/el-canary-rollout -n bookinfo",
        "/live",
        "venv-python hack/send-webhook.py --url http://127.0.0.1:",
    ]
    positions = [index(lines, fragment) for fragment in order]
    assert positions == sorted(positions), "the steps ran out of order"
    assert "patch" in lines[index(lines, "kubectl patch crd")] and "x-kubernetes-preserve-unknown-fields" in lines[index(lines, "kubectl patch crd")]
    config = (state / "kind-config.yaml").read_text()
    assert 'config_path = "/etc/containerd/certs.d"' in config and "registry.mirrors" not in config
    assert not any(line.startswith("kind load") for line in lines), "kind load docker-image fails with Docker 29"
    send = lines[index(lines, "hack/send-webhook.py")]
    assert f"--namespace bookinfo --wait 60 --repository example/reviews --branch main --commit {SHA}" in send
    assert "A canary rollout of reviews-3f2a1bc has started" in proc.stdout


def test_it_waits_for_the_listener_triggers_creates_late_and_for_it_to_answer(sandbox):
    repo, state, env, log = sandbox
    assert quickstart(repo, env).returncode == 0
    lines = calls(log)
    looks = [i for i, line in enumerate(lines) if line == "kubectl get deployment el-canary-rollout -n bookinfo"]
    assert len(looks) == 4 and looks[-1] < index(lines, "kubectl rollout status deployment/el-canary-rollout")
    lives = [i for i, line in enumerate(lines) if line.startswith("curl") and line.endswith("/live")]
    assert len(lives) >= 3 and lives[-1] < index(lines, "hack/send-webhook.py")
    assert not any(line.startswith("sleep 3") for line in lines), "no fixed sleep in place of a readiness check"


def test_the_overlay_it_applies_renders(sandbox):
    need_tool("kubectl")
    repo, state, env, log = sandbox
    assert quickstart(repo, env).returncode == 0
    real = shutil.which("kubectl", path=os.environ["PATH"])
    out = subprocess.run([real, "kustomize", env["HOME"] + "/.cache/iter8-tekton-quickstart"],
                         capture_output=True, text=True, check=True).stdout
    objects = [d for d in yaml.safe_load_all(out) if d]
    settings = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "canary-rollout-settings")["data"]
    assert settings["repositories"] == "reviews=example/reviews@main:tests/apps/reviews/.iter8-tekton.yaml"
    assert settings["image-registry"] == "kind-registry:5000/bookinfo" and settings["insecure-registry"] == "true"
    filters = [p["value"] for o in objects if o["kind"] == "EventListener"
               for i in o["spec"]["triggerGroups"][0]["interceptors"] for p in i.get("params", []) if p["name"] == "filter"]
    assert any("'reviews=example/reviews@main:tests/apps/reviews/.iter8-tekton.yaml'.split(',')" in f for f in filters)
    images = {s["image"] for o in objects if o["kind"] == "Task" for s in o["spec"]["steps"]}
    assert {"localhost:5001/iter8-tekton/steps:0.1.0", "localhost:5001/iter8-tekton/git:0.1.0"} <= images


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
                or (line.startswith("kubectl apply") and " -k " not in line and line != "kubectl apply -f -")]
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


def test_a_stopped_registry_is_started_not_created_again(sandbox):
    repo, state, env, log = sandbox
    (state / "registry").write_text("false\n")
    assert quickstart(repo, env).returncode == 0
    lines = calls(log)
    assert "docker start kind-registry" in lines and not any(line.startswith("docker run") for line in lines)


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("FAKE_KIND_VERSION", "v0.24.0", "quickstart: kind v0.24.0 is older than v0.32.0; install kind v0.32.0 or newer"),
    ("FAKE_KUBECTL_VERSION", "v1.29.3", "quickstart: kubectl v1.29.3 is older than v1.32.0; install a newer kubectl"),
])
def test_tool_versions_are_checked_up_front(sandbox, variable, value, message):
    repo, state, env, log = sandbox
    proc = quickstart(repo, {**env, variable: value})
    assert proc.returncode == 2 and proc.stderr.strip() == message
    assert not any(line.startswith(("kind create", "docker run", "kubectl apply")) for line in calls(log))


@pytest.mark.parametrize(("system", "machine", "platform"), [("Linux", "aarch64", "linux-arm64"), ("Darwin", "arm64", "osx-arm64"),
                                                           ("Darwin", "x86_64", "osx")])
def test_istio_is_downloaded_for_this_platform(sandbox, system, machine, platform):
    repo, state, env, log = sandbox
    assert quickstart(repo, {**env, "FAKE_UNAME_S": system, "FAKE_UNAME_M": machine}).returncode == 0
    assert index(calls(log), f"istio-1.30.3-{platform}.tar.gz") >= 0
