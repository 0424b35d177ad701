"""Fault injection: every API call of every step, with 500, 429 + Retry-After, a dropped
connection and (for watches) 410 Gone and a broken stream; once (the step must succeed)
and on every attempt (the step must exit 4 with one clear line). The matrix is printed
at the end of the test run."""

from __future__ import annotations

import threading
import time

import pytest

from cluster import NS, V2, configmap, deployment, experiment_v2, pipeline_run, prerequisites, service, v2_completed, v2_running
from conftest import APPS, wait_for

B, C = "reviews-v1", "reviews-3f2a1bc"
MATRIX: list[tuple[str, str, str, str, str]] = []  # step, call, fault, times, outcome
FAULTS = {
    "500": {"action": "status", "status": 500},
    "429+Retry-After": {"action": "status", "status": 429, "headers": {"Retry-After": "0"}},
    "dropped": {"action": "drop"},
}
WATCH_FAULTS = {**FAULTS, "410 Gone": {"action": "gone"}, "broken stream": {"action": "cut"}}


def seed_create(api):
    api.put("services", service())
    api.put("deployments", deployment(B, "v1"))


def seed_running(api):
    api.put("experiments", experiment_v2(C, B, C, v2_running(B, C, 1, 20)))


def seed_cleanup(api):
    api.put("services", service())
    api.put("deployments", deployment(B, "v1", labels={"iter8-tekton.dev/version": "v1", "iter8-tekton.dev/service": "reviews"}))
    api.put("deployments", deployment(C, "3f2a1bc", labels={"iter8-tekton.dev/stable": "false"}))
    api.put("configmaps", configmap("reviews-v1-settings", {"iter8-tekton.dev/version": "v1", "iter8-tekton.dev/service": "reviews"}))
    api.put("experiments", experiment_v2(C, B, C, v2_completed(B, C, "Traffic To Winner", C, (0, 100))))


def seed_stale_lock(api):
    api.put("leases", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                       "metadata": {"name": "canary-rollout-reviews", "namespace": NS}, "spec": {"holderIdentity": "r0"}})


def seed_held_lock(api):
    api.put("leases", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                       "metadata": {"name": "canary-rollout-reviews", "namespace": NS}, "spec": {"holderIdentity": "r1"}})


def seed_finished_run(api):
    exp = experiment_v2(C, B, C, v2_completed(B, C, "Traffic To Winner", C, (0, 100)))
    exp["metadata"]["labels"] = {"iter8-tekton.dev/run": "r1"}
    api.put("experiments", exp)


def seed_settings(api):
    seed_create(api)  # the serving version the candidate is compared with
    api.put("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "canary-rollout-settings", "namespace": NS},
                           "data": {"image-registry": "registry.example.com/bookinfo", "load-hosts": "istio-ingressgateway.istio-system"}})


def seed_doctor(api):
    prerequisites(api, {})
    seed_create(api)


def seed_deploy(api):
    from fakecontrollers import Deployments

    seed_running(api)
    seed_settings(api)
    # The candidate's pods start only once deploy has read it and begun watching it, as
    # they would take seconds on a cluster: each run then makes the same calls, the watch included.
    api.controllers = [Deployments(api, available_when=lambda dep: api.calls("watch", "deployments"))]


def seed_prune(api):
    for i in range(3):
        old = pipeline_run(f"old-{i}", "True")
        old["metadata"]["labels"] = {"iter8-tekton.dev/service": "reviews"}
        api.put("pipelineruns", old)


LOCK = ("--namespace", NS, "--service", "reviews", "--run", "r1")
IMAGE = "registry.example.com/bookinfo/reviews@sha256:" + "ab" * 32
# scenario -> (step module, seed, args, exit code when the fault never clears)
STEPS = {
    "create_experiment": ("create_experiment", seed_create, ("--namespace", NS, "--service", "reviews", "--candidate", C), 4),
    "wait_completion": ("wait_completion", seed_running, ("--namespace", NS, "--experiment", C, "--timeout", "30"), 4),
    "cleanup": ("cleanup", seed_cleanup, ("--namespace", NS, "--experiment", C), 4),
    "lock acquire": ("lock", lambda api: None, ("acquire", *LOCK), 4),
    "lock take-over": ("lock", seed_stale_lock, ("acquire", *LOCK), 4),
    "lock release": ("lock", seed_held_lock, ("release", *LOCK), 4),
    "settings": ("settings", seed_settings, ("--namespace", NS, "--checkout", str(APPS / "reviews"), "--version", "3f2a1bc"), 4),
    "doctor": ("doctor", seed_doctor, ("--namespace", NS, "--service", "reviews", "--prometheus-url", "http://127.0.0.1:9"), 4),
    "deploy": ("deploy", seed_deploy, ("--namespace", NS, "--service", "reviews", "--deployment", "reviews", "--kustomize-dir",
                                       str(APPS / "reviews" / "kustomize"), "--version", "3f2a1bc", "--image", IMAGE,
                                       "--baseline", B, "--experiment", C, "--rollout-timeout", "30"), 4),
    "prune": ("prune", seed_prune, ("--namespace", NS, "--service", "reviews", "--run", "r9", "--keep", "2"), 4),
    # Reporting never fails the rollout: it posts state "error" and exits 0.
    "commit_status": ("commit_status", seed_finished_run, ("--repo-url", "https://github.com/example/reviews", "--commit", "0" * 40,
                                                          "--namespace", NS, "--run", "r1", "--phase", "end",
                                                          "--api-url", "http://127.0.0.1:9"), 0),
}


def complete_when_watched(api, watches: int) -> threading.Thread:
    """Finish the experiment once the step watches it (after `watches` attempts); the watch
    starts from the resourceVersion the step read, so the fake API sends it the change
    however soon after the request it is made."""

    def finish():
        try:
            wait_for(lambda: len(api.calls("watch", "experiments")) >= watches, timeout=30)
        except AssertionError:
            return
        api.patch_status(V2, "experiments", NS, C, v2_completed(B, C, "Traffic To Winner", C, (0, 100)))

    thread = threading.Thread(target=finish, daemon=True)
    thread.start()
    return thread


def calls_of(name, fake_factory, step):
    """The (verb, resource) pairs a clean run of the step makes."""
    api = fake_factory()
    module, seed, args, _ = STEPS[name]
    seed(api)
    if name == "wait_completion":
        complete_when_watched(api, 1)
    result = step(module, *args)
    assert result.code == 0, result.err
    return sorted({(r.verb, r.plural) for r in api.requests if not r.implied})


@pytest.fixture
def fresh_api(fake_api, monkeypatch, tmp_path):
    """A factory of new, empty fake API servers, each the one KUBECONFIG points at
    (fake_api provides the fast-retry settings)."""
    from fakeapi import FakeApi

    servers = []

    def make():
        api = FakeApi().start()
        servers.append(api)
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path / f"kubeconfig-{len(servers)}")))
        return api

    yield make
    for api in servers:
        for controller in getattr(api, "controllers", []):
            controller.stop()
        api.stop()


@pytest.mark.parametrize("name", list(STEPS))
def test_fault_matrix(name, fresh_api, step, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "t")  # commit_status reads the experiment before it posts
    module, seed, args, repeated_code = STEPS[name]
    for verb, plural in calls_of(name, fresh_api, step):
        faults = WATCH_FAULTS if verb == "watch" else FAULTS
        for fault, spec in faults.items():
            for times in (1, None):
                api = fresh_api()
                seed(api)
                api.inject(verb, plural, times=times, **spec)
                if name == "wait_completion" and times == 1:
                    complete_when_watched(api, 2 if verb == "watch" else 1)
                result = step(module, *args)
                label = "once" if times == 1 else "always"
                call = f"{verb} {plural}"
                if times == 1:
                    assert result.code == 0, (call, fault, result.err)
                    MATRIX.append((name, call, fault, label, "recovered"))
                elif fault == "410 Gone" and result.code == 0:  # each re-list showed what the step waited for
                    MATRIX.append((name, call, fault, label, "recovered by re-listing"))
                elif repeated_code == 4:
                    assert result.code == 4, (call, fault, result.code, result.err)
                    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
                    MATRIX.append((name, call, fault, label, "exit 4: " + result.err.strip()[:60]))
                else:
                    assert result.code == repeated_code and "Traceback" not in result.err, (call, fault, result.err)
                    MATRIX.append((name, call, fault, label, f"exit {result.code}: reported, the rollout goes on"))


def test_retry_after_is_honoured(fake_api, step):
    seed_create(fake_api)
    fake_api.inject("get", "services", action="status", status=429, headers={"Retry-After": "1"}, times=1)
    started = time.monotonic()
    result = step("create_experiment", *STEPS["create_experiment"][2])
    assert result.code == 0, result.err
    assert time.monotonic() - started >= 1.0
    assert "429" in result.out and "retrying in 1.0s" in result.out


def test_non_retryable_errors_are_not_retried(fake_api, step):
    seed_create(fake_api)
    fake_api.inject("create", "experiments", action="status", status=422, times=None)
    result = step("create_experiment", *STEPS["create_experiment"][2])
    assert result.code == 2 and "the API server rejected the experiment" in result.err
    assert len(fake_api.calls("create")) == 1


def test_forbidden_is_an_api_failure_naming_rbac(fake_api, step):
    seed_create(fake_api)
    fake_api.inject("list", "deployments", action="status", status=403, times=None)
    result = step("create_experiment", *STEPS["create_experiment"][2])
    assert result.code == 4 and "check the ServiceAccount and its Role" in result.err


def test_an_unexpected_api_answer_is_one_line_and_exit_4(fake_api, step):
    seed_cleanup(fake_api)
    fake_api.inject("delete", "configmaps", action="status", status=422, times=None)
    result = step("cleanup", "--namespace", NS, "--experiment", C)
    assert result.code == 4 and "Traceback" not in result.err
    assert result.err.strip().startswith("error: Kubernetes API answered 422 InjectedFault")
    assert len(result.err.strip().splitlines()) == 1
