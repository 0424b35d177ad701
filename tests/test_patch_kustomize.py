"""patch_kustomize against the real kustomize (kubectl kustomize), in both modes."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import APPS, need_tool
from crdschema import core_errors

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"registry.example.com/team/reviews@{DIGEST}"


@pytest.fixture(autouse=True)
def _kustomize():
    if not shutil.which("kustomize"):
        need_tool("kubectl")


def tree_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        digest.update(str(path.relative_to(directory)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def render(run_step, tmp_path, app: str, version: str, image: str = IMAGE):
    out = tmp_path / "out.yaml"
    before = tree_hash(APPS / app)
    proc = run_step("patch_kustomize", "--kustomize-dir", str(APPS / app), "--version", version,
                    "--image", image, "--output", str(out), "--results-dir", str(tmp_path / "results"))
    assert tree_hash(APPS / app) == before, "the kustomize dir must never be edited in place"
    docs = [d for d in yaml.safe_load_all(out.read_text())] if proc.returncode == 0 else []
    return proc, docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def test_overlay_mode_renames_labels_and_sets_image(run_step, tmp_path):
    proc, docs = render(run_step, tmp_path, "reviews/kustomize", "3f2a1bc")
    assert proc.returncode == 0, proc.stderr
    (dep,) = by_kind(docs, "Deployment")
    assert dep["metadata"]["name"] == "reviews-3f2a1bc"
    assert dep["metadata"]["labels"]["version"] == "3f2a1bc"
    assert dep["metadata"]["labels"]["iter8-tekton.dev/version"] == "3f2a1bc"
    assert dep["spec"]["selector"]["matchLabels"] == {"app": "reviews", "version": "3f2a1bc"}
    assert dep["spec"]["template"]["metadata"]["labels"] == {"app": "reviews", "version": "3f2a1bc"}
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    # The Service keeps its name and gets no version label; the ConfigMap becomes the
    # candidate's own copy, and kustomize points the Deployment at it.
    (svc,) = by_kind(docs, "Service")
    assert svc["metadata"]["name"] == "reviews"
    assert "version" not in svc["metadata"].get("labels", {}) and svc["spec"]["selector"] == {"app": "reviews"}
    assert "iter8-tekton.dev/version" not in svc["metadata"].get("labels", {})
    (cm,) = by_kind(docs, "ConfigMap")
    assert cm["metadata"]["name"] == "reviews-settings-3f2a1bc"
    assert cm["metadata"]["labels"]["iter8-tekton.dev/version"] == "3f2a1bc"
    assert dep["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"configMapRef": {"name": "reviews-settings-3f2a1bc"}}]
    assert "deployment: reviews-3f2a1bc" in proc.stdout
    assert (tmp_path / "results" / "deployment").read_text() == "reviews-3f2a1bc"
    for doc in docs:
        assert core_errors(doc) == [], doc["kind"]


def test_placeholder_mode_substitutes_version(run_step, tmp_path):
    proc, docs = render(run_step, tmp_path, "reviews-seed/kustomize", "v2", "registry.example.com/reviews:2.0.1")
    assert proc.returncode == 0, proc.stderr
    (dep,) = docs
    assert dep["metadata"]["name"] == "reviews-v2"
    assert dep["metadata"]["labels"]["version"] == "v2"
    assert dep["spec"]["selector"]["matchLabels"]["version"] == "v2"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/reviews:2.0.1"
    assert "placeholder mode" in proc.stdout
    assert core_errors(dep) == []


def test_writes_to_stdout_and_logs_to_stderr(run_step):
    proc = run_step("patch_kustomize", "--kustomize-dir", str(APPS / "reviews/kustomize"), "--version", "v3", "--image", IMAGE)
    assert proc.returncode == 0, proc.stderr
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(proc.stdout)]
    assert names == ["reviews-settings-v3", "reviews", "reviews-v3"]
    assert "deployment: reviews-v3" in proc.stderr


def copy_app(tmp_path, app="reviews/kustomize") -> Path:
    target = tmp_path / "app"
    shutil.copytree(APPS / app, target)
    return target


@pytest.mark.parametrize(
    ("version", "image", "message"),
    [
        ("V2", IMAGE, "not a DNS-1123 label"),
        ("v2_rc", IMAGE, "not a DNS-1123 label"),
        ("a" * 64, IMAGE, "not a DNS-1123 label"),
        ("3f2a1bg", IMAGE, "looks like a commit SHA but is not hexadecimal"),
        ("deadbeefz", IMAGE, "looks like a commit SHA but is not hexadecimal"),
        ("v2", "Registry/UPPER case", "not a valid image reference"),
        ("v2", "reviews@sha256:123", "not a valid image reference"),
        ("a" * 60, IMAGE, "candidate Deployment name 'reviews-aaaa"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(run_step, tmp_path, version, image, message):
    proc, _ = render(run_step, tmp_path, "reviews/kustomize", version, image)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_versions_that_are_not_commits_are_fine(run_step, tmp_path):
    for version in ("v1alpha2", "build1234567", "release-2026", "3f2a1bc9d0e1"):
        proc, _ = render(run_step, tmp_path, "reviews/kustomize", version)
        assert proc.returncode == 0, (version, proc.stderr)


def run_on(run_step, directory: Path, version="v2"):
    return run_step("patch_kustomize", "--kustomize-dir", str(directory), "--version", version, "--image", IMAGE)


def test_missing_kustomization(run_step, tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_on(run_step, tmp_path / "empty")
    assert proc.returncode == 2 and "no kustomization.yaml in" in proc.stderr
    proc = run_on(run_step, tmp_path / "nowhere")
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_kustomize_error_shows_its_stderr(run_step, tmp_path):
    app = copy_app(tmp_path)
    (app / "broken.yaml").write_text("apiVersion: v1\nmetadata: {name: x}\n")  # no kind
    (app / "kustomization.yaml").write_text("resources:\n  - broken.yaml\n")
    proc = run_on(run_step, app)
    assert proc.returncode == 2
    assert "kustomize build failed:" in proc.stderr and "kind" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# kustomize api v0.18 (kustomize 5.5, kubectl 1.32) fetches http(s) files and git repositories
# named in resources, bases, components, patches ... and has no switch to stop it
# (api/internal/loader/fileloader.go, api/internal/git/repospec.go NewRepoSpecFromURL).
@pytest.mark.parametrize(
    ("kustomization", "extra"),
    [
        ("resources:\n  - https://raw.githubusercontent.com/example/evil/main/rbac.yaml\n", None),
        ("resources:\n  - github.com/example/evil//deploy?ref=main\n", None),
        ("resources:\n  - git@github.com:example/evil.git\n", None),
        ("resources:\n  - missing.yaml\n", None),
        ("resources:\n  - deployment.yaml\ncomponents:\n  - ../outside\n", "outside"),
        ("resources:\n  - deployment.yaml\npatches:\n  - path: https://example.com/patch.yaml\n", None),
        ("resources:\n  - deployment.yaml\nconfigMapGenerator:\n  - name: c\n    files: [k=/etc/passwd]\n", None),
        ("resources:\n  - sub\n", "sub"),
    ],
)
def test_remote_and_outside_references_are_refused(run_step, tmp_path, kustomization, extra):
    app = copy_app(tmp_path)
    (app / "kustomization.yaml").write_text(kustomization)
    if extra == "outside":
        (tmp_path / "outside").mkdir()
        (tmp_path / "outside" / "kustomization.yaml").write_text("kind: Component\n")
    if extra == "sub":  # a local folder is fine, but what it references is checked too
        (app / "sub").mkdir()
        (app / "sub" / "kustomization.yaml").write_text("resources:\n  - https://example.com/x.yaml\n")
    proc = run_on(run_step, app)
    assert proc.returncode == 2, proc.stdout
    assert "is not a file or folder inside" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_helm_charts_are_refused(run_step, tmp_path):
    app = copy_app(tmp_path)
    (app / "kustomization.yaml").write_text("helmCharts:\n  - name: x\n    repo: https://charts.example.com\n")
    proc = run_on(run_step, app)
    assert proc.returncode == 2 and "helmCharts" in proc.stderr


def test_kustomize_runs_root_only(run_step, tmp_path):
    """A symlink to a file outside the folder is refused by kustomize's root-only restrictor
    (api/filesys/confirmeddir.go, loader restrictor RootOnly), which we pass explicitly."""
    app = copy_app(tmp_path)
    secret = tmp_path / "secret.yaml"
    secret.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stolen}\n")
    (app / "link.yaml").symlink_to(secret)
    (app / "kustomization.yaml").write_text("resources:\n  - deployment.yaml\n  - link.yaml\n")
    proc = run_on(run_step, app)
    assert proc.returncode == 2, proc.stdout
    assert "stolen" not in proc.stdout


def test_placeholder_substitution_does_not_write_through_symlinks(run_step, tmp_path):
    """The VERSION substitution works on a copy, and never follows a link out of it."""
    app = copy_app(tmp_path, "reviews-seed/kustomize")
    victim = tmp_path / "victim.yaml"
    victim.write_text("name: VERSION\n")
    (app / "victim.yaml").symlink_to(victim)
    proc = run_on(run_step, app)
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "name: VERSION\n"


def test_no_deployment_in_output(run_step, tmp_path):
    app = copy_app(tmp_path)
    (app / "kustomization.yaml").write_text("resources:\n  - service.yaml\n")
    proc = run_on(run_step, app)
    assert proc.returncode == 2 and "has no Deployment" in proc.stderr


def test_placeholder_that_does_not_rename_is_refused(run_step, tmp_path):
    app = copy_app(tmp_path, "reviews-seed/kustomize")
    patch = yaml.safe_load((app / "patch.yaml").read_text())
    (app / "patch.yaml").write_text(yaml.safe_dump([op for op in patch if op["path"] != "/metadata/name"]))
    proc = run_on(run_step, app)
    assert proc.returncode == 2 and "would replace the running version" in proc.stderr


def test_placeholder_in_a_comment_does_not_switch_mode(run_step, tmp_path):
    app = copy_app(tmp_path)
    text = (app / "kustomization.yaml").read_text()
    (app / "kustomization.yaml").write_text("# no VERSION placeholder here\n" + text)
    proc = run_on(run_step, app)
    assert proc.returncode == 0, proc.stderr
    assert "overlay mode" in proc.stderr


def test_two_images_pick_the_same_repository(run_step, tmp_path):
    app = copy_app(tmp_path)
    dep = yaml.safe_load((app / "deployment.yaml").read_text())
    dep["spec"]["template"]["spec"]["containers"].append({"name": "proxy", "image": "docker.io/envoyproxy/envoy:v1.31.0"})
    (app / "deployment.yaml").write_text(yaml.safe_dump(dep))
    proc = run_step("patch_kustomize", "--kustomize-dir", str(app), "--version", "v2",
                    "--image", "registry.example.com/examples-bookinfo-reviews-v1:2.0")
    assert proc.returncode == 0, proc.stderr
    (out,) = [d for d in yaml.safe_load_all(proc.stdout) if d["kind"] == "Deployment"]
    images = [c["image"] for c in out["spec"]["template"]["spec"]["containers"]]
    assert images == ["registry.example.com/examples-bookinfo-reviews-v1:2.0", "docker.io/envoyproxy/envoy:v1.31.0"]
    proc = run_step("patch_kustomize", "--kustomize-dir", str(app), "--version", "v2", "--image", IMAGE)
    assert proc.returncode == 2 and "cannot tell which container image" in proc.stderr


def test_missing_kustomize_and_kubectl(run_step, tmp_path):
    proc = run_step("patch_kustomize", "--kustomize-dir", str(APPS / "reviews/kustomize"), "--version", "v2",
                    "--image", IMAGE, env={"PATH": str(tmp_path)})
    assert proc.returncode == 2 and "neither kustomize nor kubectl is on PATH" in proc.stderr
