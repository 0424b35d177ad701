"""The app's settings file (.iter8-tekton.yaml): its schema, and `settings`, which checks it
against the install's settings before anything is built. The file is untrusted: anyone
who can push controls it."""

from __future__ import annotations

import json
import shutil

import jsonschema
import pytest
import yaml

import cluster
from conftest import APPS, ROOT, checkout, need_tool

SCHEMA = json.loads((ROOT / "steps" / "schemas" / "rollout-settings.schema.json").read_text())
INSTALL = ("image-registry=registry.example.com/bookinfo\ndefault-load-url=http://istio-ingressgateway.istio-system/productpage\n"
           "load-hosts=istio-ingressgateway.istio-system,load.example.com\nmax-load-rate=100\nmax-experiment-timeout=3600\n")


@pytest.fixture(autouse=True)
def serving(fake_api):
    """The cluster read-settings reads: the serving versions of reviews and ratings, which
    the candidate is compared with, and their Services."""
    need_tool("kubectl")
    cluster.serving(fake_api, "reviews", "ratings")
    return fake_api


@pytest.mark.parametrize("app", ["reviews", "reviews-seed", "ratings"])
def test_each_sample_file_is_valid(app):
    document = yaml.safe_load((APPS / app / ".iter8-tekton.yaml").read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(document)


def test_every_field_but_service_has_a_default():
    assert SCHEMA["required"] == ["apiVersion", "kind", "service"]
    for name, prop in SCHEMA["properties"].items():
        if name not in SCHEMA["required"]:
            described = prop.get("description", "") + "".join(p.get("description", "") for p in (prop.get("properties") or {}).values())
            assert "Default" in described, name


def settings_checkout(tmp_path, app="reviews", change=None) -> str:
    target = checkout(tmp_path, app)
    if change:
        document = yaml.safe_load((target / ".iter8-tekton.yaml").read_text())
        change(document)
        (target / ".iter8-tekton.yaml").write_text(yaml.safe_dump(document))
    return str(target)


def settings(run_step, tmp_path, co, *extra):
    (tmp_path / "install.env").write_text(INSTALL)
    return run_step("settings", "--namespace", "bookinfo", "--checkout", co, "--version", "3f2a1bc",
                    "--install-settings-file", str(tmp_path / "install.env"), "--results-dir", str(tmp_path / "results"), *extra)


def results(tmp_path) -> dict:
    return {p.name: p.read_text() for p in (tmp_path / "results").iterdir()}


def test_the_bookinfo_reviews_file_resolves(run_step, tmp_path):
    proc = settings(run_step, tmp_path, settings_checkout(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert results(tmp_path) == {
        "service": "reviews", "deployment": "reviews", "candidate": "reviews-3f2a1bc", "kustomize-dir": "kustomize",
        "experiment-template": "", "context": ".", "dockerfile": "Dockerfile", "image-repository": "registry.example.com/bookinfo/reviews",
        "insecure-registry": "false", "load-url": "http://istio-ingressgateway.istio-system/productpage", "load-host": "bookinfo.example.com",
        "load-rate": "10", "load-concurrency": "2", "experiment-timeout": "3600", "rollout-timeout": "600", "rollout-policy": "wait",
        "keep-runs": "5", "dashboard-url": "", "github-api-url": "https://api.github.com",
        "builder-args": "[]"}


def test_params_override_the_file(run_step, tmp_path):
    proc = settings(run_step, tmp_path, settings_checkout(tmp_path), "--load-rate", "20", "--keep-runs", "2", "--image-repository", "r.example/x")
    assert proc.returncode == 0, proc.stderr
    assert results(tmp_path)["load-rate"] == "20" and results(tmp_path)["keep-runs"] == "2"
    assert results(tmp_path)["image-repository"] == "r.example/x"


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update({"kustomize-dir": "../../etc"}), "kustomize-dir: '../../etc' must be a path inside the repository"),
    (lambda d: d.update({"kustomize-dir": "/etc"}), "kustomize-dir: '/etc' must be a path inside the repository"),
    (lambda d: d.update({"experiment-template": "iter8/../../x.yaml"}), "experiment-template: 'iter8/../../x.yaml' must be a path inside"),
    (lambda d: d.update({"dockerfile": "../Dockerfile"}), "dockerfile: '../Dockerfile' must be a path inside the repository"),
    (lambda d: d["load"].update(rate=5000), "load.rate: 5000 is greater than the maximum of 100"),
    (lambda d: d["load"].update(concurrency=500), "load.concurrency: 500 is greater than the maximum of 16"),
    (lambda d: d["timeouts"].update(experiment=7200), "timeouts.experiment: 7200 is greater than the maximum of 3600"),
    (lambda d: d.update({"keep-runs": 0}), "keep-runs: 0 is less than the minimum of 1"),
    (lambda d: d["load"].update(url="http://evil.example.com/"), "load.url host 'evil.example.com' is neither a cluster-internal"),
    (lambda d: d["load"].update(url="http://10.0.0.8/"), "load.url host '10.0.0.8' is neither a cluster-internal"),
    (lambda d: d["load"].update(url="http://example.com./"), "is neither a cluster-internal"),
    (lambda d: d["load"].update(url="http://user:pw@reviews/"), "load.url must not carry credentials"),
    (lambda d: d["load"].update(url="file:///etc/passwd"), "load.url: 'file:///etc/passwd' does not match"),
    (lambda d: d.update(service="Reviews"), "service: 'Reviews' is not a DNS label"),
    (lambda d: d.update(deployment="reviews_v2"), "deployment: 'reviews_v2' is not a DNS label"),
    (lambda d: d.update(deployment="d" * 60), "is too long"),
    (lambda d: d.update(namespace="kube-system"), "unknown field(s) namespace (the namespace is always the PipelineRun's own)"),
    (lambda d: d.update(kind="Deployment"), "kind: 'RolloutSettings' was expected"),
    (lambda d: d.pop("service"), "'service' is a required property"),
])
def test_bad_files_fail_with_one_line_per_problem(run_step, tmp_path, change, message):
    proc = settings(run_step, tmp_path, settings_checkout(tmp_path, change=change))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert any(message in line for line in lines), proc.stderr
    assert lines[-1].startswith("error: the rollout settings are not valid") and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


def test_all_problems_are_reported_at_once(run_step, tmp_path):
    def bad(d):
        d.update({"kustomize-dir": "../x", "namespace": "other"})
        d["load"].update(rate=5000, url="http://evil.example.com/")

    proc = settings(run_step, tmp_path, settings_checkout(tmp_path, change=bad))
    assert proc.returncode == 2
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 5


def test_allowed_load_hosts(run_step, tmp_path):
    for i, url in enumerate(("http://reviews:9080/", "http://reviews.bookinfo.svc:9080/", "http://reviews.bookinfo.svc.cluster.local/x",
                             "https://load.example.com/", "http://istio-ingressgateway.istio-system/productpage")):
        proc = settings(run_step, tmp_path, settings_checkout(tmp_path / str(i), change=lambda d, u=url: d["load"].update(url=u)))
        assert proc.returncode == 0, (url, proc.stderr)


def test_a_symlink_out_of_the_checkout_is_refused(run_step, tmp_path):
    co = settings_checkout(tmp_path)
    outside = tmp_path / "outside"
    shutil.copytree(APPS / "reviews" / "kustomize", outside)
    (tmp_path / "checkout" / "deploy").symlink_to(outside)
    proc = settings(run_step, tmp_path, co, "--kustomize-dir", "deploy")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: kustomize-dir 'deploy' leads outside the repository (through a symbolic link)"


def test_names_too_long_for_iter8s_labels(run_step, tmp_path):
    """iter8 1.0.1 puts <service>.<namespace>.svc.cluster.local in a label value (router.go)."""
    proc = settings(run_step, tmp_path, settings_checkout(tmp_path, change=lambda d: d.update(service="s" * 40)))
    assert proc.returncode == 2 and "is too long for iter8" in proc.stderr


def test_without_a_file_the_params_are_enough(run_step, tmp_path):
    co = settings_checkout(tmp_path)
    (tmp_path / "checkout" / ".iter8-tekton.yaml").unlink()
    proc = settings(run_step, tmp_path, co)
    assert proc.returncode == 2 and "no service: add .iter8-tekton.yaml" in proc.stderr
    proc = settings(run_step, tmp_path, co, "--service", "reviews")
    assert proc.returncode == 0, proc.stderr
    assert results(tmp_path)["load-url"] == "http://istio-ingressgateway.istio-system/productpage"  # the install's default


def test_a_bad_candidate_or_template_fails_here_too(run_step, tmp_path):
    """The same checks deploy and create_experiment make, before the build."""
    co = settings_checkout(tmp_path)
    (tmp_path / "checkout" / "kustomize" / "crb.yaml").write_text(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: x}\n"
        "roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\nsubjects: []\n")
    with open(tmp_path / "checkout" / "kustomize" / "kustomization.yaml", "a") as f:
        f.write("  - crb.yaml\n")
    proc = settings(run_step, tmp_path, co)
    assert proc.returncode == 2 and "ClusterRoleBinding x is cluster-scoped" in proc.stderr
    co2 = settings_checkout(tmp_path / "2", app="reviews-seed")
    template = tmp_path / "2" / "checkout" / "iter8" / "experiment.yaml"
    exp = yaml.safe_load(template.read_text())
    exp["action"] = "override_success"
    template.write_text(yaml.safe_dump(exp))
    proc = settings(run_step, tmp_path / "2", co2)
    assert proc.returncode == 2 and "action may not be set by the app's template" in proc.stderr


def test_paths_are_relative_to_the_settings_files_folder(run_step, tmp_path):
    """Several apps in one repository, each with its own file (the quickstart's layout)."""
    repo = tmp_path / "repo"
    shutil.copytree(APPS, repo / "apps")
    (tmp_path / "install.env").write_text(INSTALL)
    proc = run_step("settings", "--namespace", "bookinfo", "--checkout", str(repo), "--version", "3f2a1bc",
                    "--file", "apps/reviews-seed/.iter8-tekton.yaml", "--install-settings-file", str(tmp_path / "install.env"),
                    "--results-dir", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stderr
    assert results(tmp_path)["kustomize-dir"] == "apps/reviews-seed/kustomize"
    assert results(tmp_path)["experiment-template"] == "apps/reviews-seed/iter8/experiment.yaml"
    assert results(tmp_path)["context"] == "apps/reviews-seed"
    assert run_step("settings", "--namespace", "bookinfo", "--checkout", str(repo), "--version", "3f2a1bc", "--file", "../x.yaml",
                    "--install-settings-file", str(tmp_path / "install.env")).stderr.strip() == (
        "error: the settings file '../x.yaml' must be a path inside the repository (relative, without '..')")


# --- the load's Host header comes with the URL it belongs to ---------------------------------
DEFAULT_URL, DEFAULT_HOST = "http://istio-ingressgateway.istio-system/productpage", "bookinfo.example.com"
APP_URL = "http://hello.bookinfo.svc.cluster.local:9080/"


@pytest.mark.parametrize(("file_load", "params", "expected"), [
    ({}, (), (DEFAULT_URL, DEFAULT_HOST)),  # the install's URL with the install's host
    ({"url": APP_URL}, (), (APP_URL, "")),  # the app's own URL: no Host override
    ({"url": APP_URL, "host": "hello.example.com"}, (), (APP_URL, "hello.example.com")),
    ({"host": "hello.example.com"}, (), (DEFAULT_URL, "hello.example.com")),  # the app's host on the install's gateway
    ({"url": APP_URL, "host": "hello.example.com"}, ("--load-url", "http://hello:9080/"), ("http://hello:9080/", "")),
    ({}, ("--load-url", "http://hello:9080/", "--load-host", "a.example.com"), ("http://hello:9080/", "a.example.com")),
    ({"url": APP_URL}, ("--load-host", "a.example.com"), (APP_URL, "a.example.com")),
    ({}, ("--load-host", "a.example.com"), (DEFAULT_URL, "a.example.com")),
])
def test_the_host_comes_with_its_url(run_step, tmp_path, file_load, params, expected):
    (tmp_path / "install.env").write_text(INSTALL + f"default-load-host={DEFAULT_HOST}\n")

    def change(document):
        document["load"] = {"rate": 10, **file_load}

    co = settings_checkout(tmp_path, change=change)
    proc = run_step("settings", "--namespace", "bookinfo", "--checkout", co, "--version", "3f2a1bc",
                    "--install-settings-file", str(tmp_path / "install.env"), "--results-dir", str(tmp_path / "results"), *params)
    assert proc.returncode == 0, proc.stderr
    assert (results(tmp_path)["load-url"], results(tmp_path)["load-host"]) == expected


def test_the_builders_extra_args_come_from_the_install(run_step, tmp_path):
    (tmp_path / "install.env").write_text(INSTALL + "builder-extra-args=--registry-mirror=mirror.gcr.io  --cache=true\n")
    proc = run_step("settings", "--namespace", "bookinfo", "--checkout", settings_checkout(tmp_path), "--version", "3f2a1bc",
                    "--install-settings-file", str(tmp_path / "install.env"), "--results-dir", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(results(tmp_path)["builder-args"]) == ["--registry-mirror=mirror.gcr.io", "--cache=true"]


# --- a listed repository may roll out only its own service --------------------------------------
def test_a_repository_may_roll_out_only_the_service_its_entry_binds(run_step, tmp_path):
    """The reviews repository's file names ratings, with supersede and keep-runs 1: taking
    over (and pruning) another team's service. The trigger passes the bound service."""
    co = settings_checkout(tmp_path, change=lambda d: d.update({"service": "ratings", "rollout-policy": "supersede", "keep-runs": 1}))
    proc = settings(run_step, tmp_path, co, "--bound-service", "reviews")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: .iter8-tekton.yaml rolls out service ratings, but the install binds this repository "
                                   "entry to reviews; a repository may roll out only its own service (the install's repositories list)")
    assert not (tmp_path / "results").exists()
    assert settings(run_step, tmp_path / "2", settings_checkout(tmp_path / "2"), "--bound-service", "reviews").returncode == 0


def test_the_install_list_binds_each_entry_to_one_service():
    from steps.install import Binding, parse_repositories

    bindings, problems = parse_repositories(
        " reviews=acme/shop@main:reviews/.iter8-tekton.yaml, ratings=acme/shop@main:ratings/.iter8-tekton.yaml,"
        "hello=acme/hello@release/2.x, acme/old@main, Bad=acme/x@main, x=acme/y@main:../z")
    assert bindings == [Binding("reviews", "acme/shop", "main", "reviews/.iter8-tekton.yaml"),
                        Binding("ratings", "acme/shop", "main", "ratings/.iter8-tekton.yaml"),
                        Binding("hello", "acme/hello", "release/2.x", ".iter8-tekton.yaml")]
    assert [b.folder for b in bindings] == ["reviews/", "ratings/", ""]
    assert len(problems) == 3 and "'acme/old@main' is not SERVICE=OWNER/NAME@BRANCH[:SETTINGS-FILE]" in problems[0]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "lots"])
def test_the_installs_caps_are_finite_numbers(run_step, tmp_path, value):
    (tmp_path / "install.env").write_text(INSTALL + f"max-load-rate={value}\n")
    proc = run_step("settings", "--namespace", "bookinfo", "--checkout", settings_checkout(tmp_path), "--version", "3f2a1bc",
                    "--install-settings-file", str(tmp_path / "install.env"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: install setting max-load-rate={value!r} is not a finite float; fix the ConfigMap canary-rollout-settings"
