"""The pipeline's Role grants exactly the API calls its steps make, nothing wider.

The calls are recorded from runs of every step against the fake API server, through the
paths that make the most calls (Istio routing present, a 410 re-list, a reused
experiment). kubectl's server-side apply in the deploy Task cannot run here; its needs
are declared below.
"""

from __future__ import annotations

import threading

import pytest

from cluster import (NS, V2, FakeIter8, configmap, deployment, destination_rule, experiment_v2, pipeline_run, service,
                     v2_completed, v2_running, virtual_service)
from conftest import wait_for
from tekton import bundle, by_kind

B, C = "reviews-v1", "reviews-3f2a1bc"
# deploy: `kubectl apply --server-side` patches each rendered object, creating the missing
# ones, for the kinds the app's kustomize config renders (tests/apps/reviews).
KUBECTL_APPLY = {(group, resource, verb) for group, resource in (("apps", "deployments"), ("", "services"), ("", "configmaps"))
                 for verb in ("create", "patch")}


def record(api) -> set[tuple[str, str, str]]:
    return {(r.group, r.plural, r.verb) for r in api.requests}


def routing(api):
    api.put("virtualservices", virtual_service({"baseline": 100, "candidate": 0}))
    api.put("destinationrules", destination_rule({"baseline": "v1", "candidate": "3f2a1bc"}))


@pytest.fixture
def calls(fake_api, step, tmp_path, monkeypatch):
    """Run every step once through its widest path; return the calls made."""
    api = fake_api
    monkeypatch.setenv("GITHUB_TOKEN", "t")  # commit_status reads the run's experiments
    api.put("services", service())
    api.put("deployments", deployment(B, "v1", labels={"iter8-tekton.dev/version": "v1"}))
    api.put("configmaps", configmap("reviews-v1-settings", {"iter8-tekton.dev/version": "v1"}))
    routing(api)
    assert step("create_experiment", "--namespace", NS, "--service", "reviews", "--candidate", C, "--run", "r1").code == 0
    assert step("create_experiment", "--namespace", NS, "--service", "reviews", "--candidate", C, "--run", "r1").code == 0
    api.put("deployments", deployment(C, "3f2a1bc", labels={"iter8-tekton.dev/version": "3f2a1bc"}))
    api.put("configmaps", configmap("other", {}))
    api.compact()
    api.inject("watch", "experiments", action="cut", times=1)

    def finish():
        wait_for(lambda: len(api.calls("watch")) >= 3)
        api.patch_status(V2, "experiments", NS, C, v2_completed(B, C, "Traffic To Winner", C, (0, 100)))

    threading.Thread(target=finish, daemon=True).start()
    result = step("wait_completion", "--namespace", NS, "--experiment", C, "--results-dir", str(tmp_path))
    assert result.code == 0, result.err
    api.put("virtualservices", virtual_service({"baseline": 0, "candidate": 100}))
    assert step("cleanup", "--namespace", NS, "--experiment", C).code == 0
    # The lock: taken, superseded by a second run (rolling back run r1's unfinished
    # experiment), released; the end of a run: cleanup by run label with a rollback.
    iter8 = FakeIter8(api)
    try:
        api.put("pipelineruns", pipeline_run("r1"))
        api.put("deployments", deployment("reviews-1111111", "1111111"))
        unfinished = experiment_v2("reviews-1111111", C, "reviews-1111111", v2_running(C, "reviews-1111111", 2, 20))
        unfinished["metadata"]["labels"] = {"iter8-tekton.dev/run": "r1"}
        api.put("experiments", unfinished)
        assert step("lock", "acquire", "--namespace", NS, "--service", "reviews", "--run", "r1").code == 0
        result = step("lock", "acquire", "--namespace", NS, "--service", "reviews", "--run", "r2", "--policy", "supersede")
        assert result.code == 0, result.err
        assert step("lock", "release", "--namespace", NS, "--service", "reviews", "--run", "r2").code == 0
        api.put("deployments", deployment("reviews-2222222", "2222222"))
        running = experiment_v2("reviews-2222222", C, "reviews-2222222", v2_running(C, "reviews-2222222", 2, 20))
        running["metadata"]["labels"] = {"iter8-tekton.dev/run": "r2"}
        api.put("experiments", running)
        result = step("cleanup", "--namespace", NS, "--run", "r2", "--roll-back-unfinished", "30")
        assert result.code == 0, result.err
    finally:
        iter8.stop()
    assert step("commit_status", "--repo-url", "https://github.com/example/reviews", "--commit", "0" * 40, "--namespace", NS,
                "--run", "r2", "--phase", "end", "--api-url", "http://127.0.0.1:9").code == 0
    return record(api)


def test_load_needs_only_to_read_experiments(fake_api, start_step, tmp_path):
    fake_api.put("experiments", experiment_v2(C, B, C, v2_running(B, C, 1, 20)))
    proc = start_step("load", "--url", "http://127.0.0.1:9/", "--namespace", NS, "--experiment", C, "--max-duration", "2", "--hey", "true")
    wait_for(lambda: fake_api.calls("watch"))
    proc.communicate(timeout=30)
    assert record(fake_api) <= {("iter8.tools", "experiments", v) for v in ("get", "list", "watch")}


def role_rules() -> set[tuple[str, str, str]]:
    role = by_kind(bundle(), "Role")["canary-pipeline"]
    granted = set()
    for rule in role["rules"]:
        for value in rule.get("apiGroups", []) + rule.get("resources", []) + rule.get("verbs", []):
            assert value != "*", f"wildcard in {rule}"
        assert not rule.get("nonResourceURLs") and not rule.get("resourceNames")
        granted |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return granted


def test_role_allows_exactly_what_the_steps_use(calls):
    needed = calls | KUBECTL_APPLY
    granted = role_rules()
    assert needed - granted == set(), "the Role lacks these"
    assert granted - needed == set(), "the Role grants more than the steps use"
