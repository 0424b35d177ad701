"""The step image: it builds (hack/build-images.py through podman's Docker API, from a
local Debian base made by hack/make-base.sh), and every step works inside it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import APPS, ROOT, need_tool
from fakeregistry import Registry
from gitserver import serve
from test_load import App

REPORT: list[str] = []  # printed at the end of the run (conftest)
RUN = ["podman", "--runtime", "runc", "run", "--rm", "--network", "host",
       "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]


@dataclass
class Built:
    image: str  # the step image as built, version tag
    git: str  # the git image (fetch-source), version tag
    output: str  # what hack/build-images.py printed
    registry: Registry
    repo: Path  # the repository copy it ran in


def kubectl_binary() -> Path:
    """The host's real kubectl (a cloud SDK installs a version dispatcher next to real ones)."""
    path = Path(shutil.which("kubectl")).resolve()
    for sibling in sorted(path.parent.glob("kubectl.1.32*")):
        return sibling
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build with hack/build-images.py through podman's Docker API, push to a local registry."""
    need_tool("podman")
    need_tool("debootstrap")
    need_tool("kubectl")
    base = subprocess.run([str(ROOT / "hack" / "make-base.sh")], capture_output=True, text=True)
    assert base.returncode == 0, base.stderr
    # No registry here: registry.k8s.io/kubectl is stood in for by the host's kubectl binary.
    scratch = tmp_path_factory.mktemp("image")
    shutil.copy2(kubectl_binary(), scratch / "kubectl")
    (scratch / "Dockerfile").write_text('FROM scratch\nCOPY kubectl /bin/kubectl\nENTRYPOINT ["/bin/kubectl"]\n')
    subprocess.run(["podman", "build", "--isolation", "chroot", "-q", "-t", "localhost/kubectl:host", str(scratch)],
                   check=True, capture_output=True)
    # A copy of the repository (with its .git, for the SHA tag): --set-images edits its triggers/settings.env.
    repo = scratch / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".venv", ".cache", "node_modules", "__pycache__"))
    registry = Registry()
    (scratch / "registries.conf").write_text(f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
    socket = scratch / "podman.sock"
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket}"],
                               env={**os.environ, "CONTAINERS_REGISTRIES_CONF": str(scratch / "registries.conf")},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not socket.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, str(repo / "hack" / "build-images.py"), "--docker-host", f"unix://{socket}",
             "--registry", f"{registry.host}/iter8-tekton", "--push", "--set-images",
             "--base", "localhost/debian:bookworm-slim", "--kubectl-image", "localhost/kubectl:host",
             "--ca-bundle", "/etc/ssl/certs/ca-certificates.crt"],
            capture_output=True, text=True, timeout=1800,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        REPORT.append(f"build and push: {time.monotonic() - started:.0f} s")
        yield Built(f"{registry.host}/iter8-tekton/steps:0.1.0", f"{registry.host}/iter8-tekton/git:0.1.0", proc.stdout, registry, repo)
    finally:
        service.terminate()
        service.wait(timeout=30)
        registry.stop()


@pytest.fixture(scope="module")
def image(built):
    return built.image


def run(image_name: str, *args: str, volumes: dict | None = None, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    mounts = [a for host, guest in (volumes or {}).items() for a in ("-v", f"{host}:{guest}:Z")]
    envs = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
    return subprocess.run([*RUN, *mounts, *envs, image_name, *args], capture_output=True, text=True, timeout=timeout)


def test_build_pushes_both_tags_and_points_the_bundle_at_the_digest(built):
    sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=built.repo, capture_output=True, text=True).stdout.strip()
    built_tags = {line.split()[1].rsplit(":", 1)[1] for line in built.output.splitlines() if line.startswith("built ")}
    assert built_tags <= {"0.1.0", sha, f"{sha}-dirty"} and "0.1.0" in built_tags, built_tags  # -dirty: built from a changed tree
    sha = next(tag for tag in built_tags if tag != "0.1.0")
    settings = (built.repo / "triggers" / "settings.env").read_text().splitlines()
    pushed = dict(line.split()[1:3] for line in built.output.splitlines() if line.startswith("pushed "))
    for image in (built.image, built.git):
        repository = image.rsplit(":", 1)[0]
        assert {f"{repository}:0.1.0", f"{repository}:{sha}"} <= set(pushed)
        digest = pushed[f"{repository}:0.1.0"].split("@")[1]
        name = repository.split("/", 1)[1]
        assert (name, "0.1.0") in built.registry.manifests and (name, sha) in built.registry.manifests
        assert (name, digest) in built.registry.manifests, "the printed digest is the registry's"
        assert f"{name.rsplit('/', 1)[1]}-image={repository}@{digest}" in settings


def test_size_user_and_labels(image):
    info = json.loads(subprocess.run(["podman", "image", "inspect", image], capture_output=True, text=True, check=True).stdout)[0]
    size_mb = info["Size"] / 1e6
    REPORT.append(f"step image size: {size_mb:.0f} MB uncompressed (target < 250 MB)")
    assert size_mb < 250, "the step image is over its 250 MB budget; see images/steps/Dockerfile"
    assert info["Config"]["User"] == "10001"
    labels = info["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    proc = run(image, "sh", "-c", "id -u; command -v gcc cc pip pip3 || true; ls /opt/venv/bin")
    uid, *rest = proc.stdout.split("\n")
    assert uid == "10001"
    assert "gcc" not in proc.stdout and "/pip" not in proc.stdout, "no build tools in the final image"


def test_the_git_image_is_small_and_runs_as_10001(built):
    info = json.loads(subprocess.run(["podman", "image", "inspect", built.git], capture_output=True, text=True, check=True).stdout)[0]
    REPORT.append(f"git image size: {info['Size'] / 1e6:.0f} MB uncompressed")
    assert info["Config"]["User"] == "10001"
    proc = run(built.git, "sh", "-c", "id -u; git --version; command -v python3 perl ssh || true")
    assert proc.stdout.split()[0] == "10001" and "git version" in proc.stdout
    assert "python3" not in proc.stdout and "perl" not in proc.stdout and "/ssh" not in proc.stdout


@pytest.mark.parametrize("script", ["canary-settings", "canary-doctor", "canary-lock", "canary-create-experiment", "canary-deploy",
                                    "canary-patch-kustomize", "canary-load", "canary-wait-completion", "canary-cleanup", "canary-prune",
                                    "canary-commit-status"])
def test_every_step_starts(image, script):
    proc = run(image, script, "--help")
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr


def test_load_drives_hey_against_a_local_server(image):
    need_tool("hey")
    app = App()
    proc = run(image, "canary-load", "--url", app.url, "--rate", "20", "--max-duration", "3")
    app.server.shutdown()
    assert proc.returncode == 0, proc.stderr
    assert "total:" in proc.stdout and app.count >= 20


def test_patch_kustomize_renders_the_sample_app(image):
    proc = run(image, "canary-patch-kustomize", "--kustomize-dir", "/apps/reviews/kustomize", "--version", "3f2a1bc",
               "--image", "registry.example.com/reviews@sha256:" + "ab" * 32, volumes={APPS: "/apps"})
    assert proc.returncode == 0, proc.stderr
    names = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(proc.stdout)]
    assert ("Deployment", "reviews-3f2a1bc") in names


def test_create_experiment_dry_run(image):
    proc = run(image, "canary-create-experiment", "--namespace", "bookinfo", "--service", "reviews", "--candidate", "reviews-3f2a1bc",
               "--baseline", "reviews", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["spec"]["service"]["candidates"] == ["reviews-3f2a1bc"]


def test_fetch_source_script_clones_an_exact_commit(built, tmp_path):
    """The fetch-source Task's own script, in the git image, against a smart-HTTP git server."""
    repo = tmp_path / "repos" / "app.git"
    work = tmp_path / "work"
    git = lambda *a, cwd=work: subprocess.run(["git", *a], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()  # noqa: E731
    work.mkdir()
    git("init", "-q", "-b", "main")
    (work / "README").write_text("one\n")
    git("add", "README")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "one")
    first = git("rev-parse", "HEAD")
    (work / "README").write_text("two\n")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-am", "two")
    git("clone", "-q", "--bare", str(work), str(repo), cwd=tmp_path)
    git("config", "uploadpack.allowReachableSHA1InWant", "true", cwd=repo)
    server, url = serve(tmp_path / "repos")
    task = yaml.safe_load((ROOT / "tasks" / "fetch-source.yaml").read_text())
    script = task["spec"]["steps"][0]["script"]
    (tmp_path / "workspace").mkdir()
    (tmp_path / "results").mkdir()
    os.chmod(tmp_path / "workspace", 0o777)
    os.chmod(tmp_path / "results", 0o777)
    proc = run(built.git, "sh", "-c", script, volumes={tmp_path / "workspace": "/workspace/source", tmp_path / "results": "/tekton/results"},
               env={"REPO_URL": f"{url}/app.git", "REVISION": first, "WORKSPACE": "/workspace/source", "SUBDIRECTORY": "src",
                    "RESULT_COMMIT": "/tekton/results/commit", "RESULT_SHORT_SHA": "/tekton/results/short-sha", "HOME": "/tmp"})
    server.shutdown()
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "results" / "commit").read_text() == first
    assert (tmp_path / "results" / "short-sha").read_text() == first[:7]
    assert (tmp_path / "workspace" / "src" / "README").read_text() == "one\n"


@pytest.mark.parametrize("image", ["steps", "git"])
def test_dockerfile_passes_hadolint(image):
    hadolint = need_tool("hadolint")
    proc = subprocess.run([hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "images" / image / "Dockerfile")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_shell_scripts_pass_shellcheck():
    shellcheck = need_tool("shellcheck")
    scripts = [ROOT / ".ci" / "run", ROOT / "hack" / "test", *sorted((ROOT / "hack").glob("*.sh"))]
    proc = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_set_images_points_the_bundle_at_the_build(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_images", ROOT / "hack" / "build-images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "triggers").mkdir()
    shutil.copy2(ROOT / "triggers" / "settings.env", tmp_path / "triggers" / "settings.env")
    monkeypatch.setattr(module, "ROOT", tmp_path)
    module.set_image("registry.local/steps@sha256:" + "1" * 64)
    module.set_image("registry.local/git:6ebfc2065efb", "git")
    lines = (tmp_path / "triggers" / "settings.env").read_text().splitlines()
    assert "steps-image=registry.local/steps@sha256:" + "1" * 64 in lines
    assert "git-image=registry.local/git:6ebfc2065efb" in lines
    assert len(lines) == len((ROOT / "triggers" / "settings.env").read_text().splitlines())
