"""The webhook entry: hack/preview runs GitHub requests through the bundle's own
EventListener, TriggerBinding and TriggerTemplate; hack/send-webhook.py signs as GitHub."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, need, need_tool
from crdschema import crds_dir, errors
from tekton import bundle, by_kind, check_pipeline

EVENTS = ROOT / "tests" / "events"
SECRET = "It's a Secret to Everybody"
SHA = "3f2a1bc9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f"


def preview(*args: str) -> subprocess.CompletedProcess:
    need_tool("kubectl")
    return subprocess.run([sys.executable, str(ROOT / "hack" / "preview"), *args], capture_output=True, text=True, timeout=60)


def variant(tmp_path, name: str, change) -> str:
    body = json.loads((EVENTS / "push.json").read_text())
    change(body)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(body, indent=2))
    return str(path)


def test_signed_push_to_main_gives_a_valid_pipelinerun_for_that_commit():
    proc = preview("--payload", str(EVENTS / "push.json"), "--event", "push", "--secret", SECRET)
    assert proc.returncode == 0, proc.stderr
    (run,) = list(yaml.safe_load_all(proc.stdout))
    params = {p["name"]: p["value"] for p in run["spec"]["params"]}
    assert params["revision"] == SHA and params["repo-url"] == "https://github.com/example/reviews.git"
    assert run["metadata"]["generateName"] == "canary-rollout-3f2a1bc-"
    assert run["metadata"]["labels"]["iter8-tekton.dev/commit"] == SHA
    assert run["metadata"]["labels"]["iter8-tekton.dev/repository"] == "reviews"
    assert run["metadata"]["annotations"] == {"iter8-tekton.dev/repository": "example/reviews", "iter8-tekton.dev/branch": "main"}
    assert run["spec"]["workspaces"][0]["volumeClaimTemplate"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert run["spec"]["taskRunTemplate"]["serviceAccountName"] == "canary-pipeline"
    need(crds_dir(), "the upstream CRDs (../shared/crds, or run hack/fetch-crds.py)")
    assert errors(run) == []
    # It runs the bundle's Pipeline, giving every param that has no default.
    objects = bundle()
    pipeline = by_kind(objects, "Pipeline")[run["spec"]["pipelineRef"]["name"]]
    required = {p["name"] for p in pipeline["spec"]["params"] if "default" not in p}
    assert required <= set(params) <= {p["name"] for p in pipeline["spec"]["params"]}
    bound = {w["name"] for w in run["spec"]["workspaces"]}
    assert {w["name"] for w in pipeline["spec"]["workspaces"] if not w.get("optional")} <= bound


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("--secret", SECRET, "--signature", "sha256=" + "0" * 64), "signature does not match"),
        (("--secret", "another secret", "--signature", None), "signature does not match"),
        (("--unsigned",), "no X-Hub-Signature-256 header"),
    ],
)
def test_bad_or_missing_signature(args, reason, tmp_path):
    if None in args:  # signed correctly, but with a secret the listener does not have
        body = (EVENTS / "push.json").read_bytes()
        forged = "sha256=" + hmac.new(b"another secret", body, hashlib.sha256).hexdigest()
        args = ("--secret", SECRET, "--signature", forged)
    proc = preview("--payload", str(EVENTS / "push.json"), "--event", "push", *args)
    assert proc.returncode == 1 and proc.stdout == ""
    assert reason in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("event", "payload"), [("ping", "ping.json"), ("pull_request", "pull_request.json"), ("create", "create.json")])
def test_other_events_are_rejected(event, payload):
    proc = preview("--payload", str(EVENTS / payload), "--event", event, "--secret", SECRET)
    assert proc.returncode == 1
    assert f"event type {event} is not allowed (only push)" in proc.stderr


def test_tag_push_is_rejected(tmp_path):
    def tag(body):
        body["ref"] = "refs/tags/v1.4.0"
        body["base_ref"] = "refs/heads/main"

    proc = preview("--payload", variant(tmp_path, "tag", tag), "--event", "push", "--secret", SECRET)
    assert proc.returncode == 1 and "stopped by interceptor not-a-tag" in proc.stderr


def test_branch_deletion_is_rejected(tmp_path):
    def delete(body):
        body.update(after="0" * 40, deleted=True, commits=[], head_commit=None)

    proc = preview("--payload", variant(tmp_path, "delete", delete), "--event", "push", "--secret", SECRET)
    assert proc.returncode == 1 and "stopped by interceptor not-a-deletion" in proc.stderr


def test_push_to_another_branch_is_rejected(tmp_path):
    proc = preview("--payload", variant(tmp_path, "dev", lambda b: b.update(ref="refs/heads/dev")), "--event", "push", "--secret", SECRET)
    assert proc.returncode == 1 and "stopped by interceptor configured-branch" in proc.stderr


def test_push_from_another_repository_is_rejected(tmp_path):
    def fork(body):
        body["repository"].update(full_name="mallory/reviews", clone_url="https://github.com/mallory/reviews.git")

    proc = preview("--payload", variant(tmp_path, "fork", fork), "--event", "push", "--secret", SECRET)
    assert proc.returncode == 1 and "stopped by interceptor configured-repository" in proc.stderr


def test_configured_repository_and_branch_follow_the_settings(tmp_path):
    def release(body):
        body["ref"] = "refs/heads/release/2.x"
        body["repository"].update(name="shop", full_name="acme/shop", clone_url="https://github.com/acme/shop.git")

    payload = variant(tmp_path, "release", release)
    proc = preview("--payload", payload, "--event", "push", "--secret", SECRET, "--repository", "acme/shop", "--branch", "release/2.x")
    assert proc.returncode == 0, proc.stderr
    run = yaml.safe_load(proc.stdout)
    assert run["metadata"]["annotations"]["iter8-tekton.dev/branch"] == "release/2.x"
    assert {p["name"]: p["value"] for p in run["spec"]["params"]}["repo-url"] == "https://github.com/acme/shop.git"
    assert preview("--payload", payload, "--event", "push", "--secret", SECRET).returncode == 1  # not the bundle's default


def test_webhook_values_never_reach_a_script():
    """Branch, repository and commit flow only into PipelineRun params, which Tasks pass as args/env."""
    objects = bundle()
    template = by_kind(objects, "TriggerTemplate")["canary-rollout"]
    text = json.dumps(template["spec"]["resourcetemplates"])
    assert '"script"' not in text and "taskSpec" not in text and "pipelineSpec" not in text
    assert check_pipeline(by_kind(objects, "Pipeline")["canary-rollout"], by_kind(objects, "Task")) == []


def test_listener_uses_only_the_standard_triggers_roles():
    objects = bundle()
    listener = by_kind(objects, "EventListener")["canary-rollout"]
    account = listener["spec"]["serviceAccountName"]
    bindings = [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
                and any(s["name"] == account for s in o["subjects"])]
    assert {(b["kind"], b["roleRef"]["name"]) for b in bindings} == {
        ("RoleBinding", "tekton-triggers-eventlistener-roles"),
        ("ClusterRoleBinding", "tekton-triggers-eventlistener-clusterroles"),
    }
    assert all(s["namespace"] == "bookinfo" for b in bindings for s in b["subjects"])
    assert by_kind(objects, "ClusterRoleBinding")["iter8-tekton-triggers.bookinfo"]
    github = listener["spec"]["triggers"][0]["interceptors"][0]
    params = {p["name"]: p["value"] for p in github["params"]}
    assert github["ref"] == {"name": "github", "kind": "ClusterInterceptor"}
    assert params == {"secretRef": {"secretName": "github-webhook", "secretKey": "secret"}, "eventTypes": ["push"]}


def test_ingress_component_is_valid(tmp_path):
    from crdschema import core_errors

    need_tool("kubectl")
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(ROOT, tmp_path)],
        "components": [os.path.relpath(ROOT / "triggers" / "ingress", tmp_path)],
    }))
    ingress = by_kind(bundle(tmp_path), "Ingress")["canary-rollout-webhook"]
    assert core_errors(ingress) == []
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "el-canary-rollout", "port": {"number": 8080}}


def test_send_webhook_signs_the_exact_bytes(httpserver, tmp_path):
    received = {}

    def handler(request):
        from werkzeug import Response

        body = request.get_data()
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        received.update(headers=dict(request.headers), body=body, valid=hmac.compare_digest(expected, request.headers["X-Hub-Signature-256"]))
        return Response('{"eventListener":"canary-rollout","eventID":"e1"}', status=202)

    httpserver.expect_request("/", method="POST").respond_with_handler(handler)
    payload = EVENTS / "push.json"
    proc = subprocess.run([sys.executable, str(ROOT / "hack" / "send-webhook.py"), "--url", httpserver.url_for("/"), "--payload", str(payload)],
                          capture_output=True, text=True, env={"WEBHOOK_SECRET": SECRET, "PATH": "/usr/bin:/bin"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "202 ACCEPTED" in proc.stdout.upper()
    assert received["valid"] and received["body"] == payload.read_bytes()
    assert received["headers"]["X-Github-Event"] == "push" and received["headers"]["Content-Type"] == "application/json"
    assert len(received["headers"]["X-Github-Delivery"]) == 36


def test_send_webhook_builds_a_push_the_bundle_accepts(httpserver, tmp_path):
    bodies = []

    def handler(request):
        from werkzeug import Response

        bodies.append(request.get_data())
        return Response("", status=202)

    httpserver.expect_request("/").respond_with_handler(handler)
    proc = subprocess.run([sys.executable, str(ROOT / "hack" / "send-webhook.py"), "--url", httpserver.url_for("/"),
                           "--repository", "example/reviews", "--branch", "main", "--commit", SHA],
                          capture_output=True, text=True, env={"WEBHOOK_SECRET": SECRET, "PATH": "/usr/bin:/bin"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "sent.json").write_bytes(bodies[0])
    accepted = preview("--payload", str(tmp_path / "sent.json"), "--event", "push", "--secret", SECRET)
    assert accepted.returncode == 0, accepted.stderr


def test_send_webhook_reports_a_refusal(httpserver):
    httpserver.expect_request("/").respond_with_data("forbidden", status=403)
    proc = subprocess.run([sys.executable, str(ROOT / "hack" / "send-webhook.py"), "--url", httpserver.url_for("/"),
                           "--payload", str(EVENTS / "push.json"), "--secret", SECRET], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout.startswith("403")
