"""Whole canary-rollout runs through the bundle's YAML (tests/pipelinerun.py), against the
fake API server with the fake Deployment controller and the iter8 1.0.1 stand-in
(tests/fakecontrollers.py), the real step programs and the real hey."""

from __future__ import annotations

import re
import shutil
import threading
import time

import pytest

from cluster import NS, V2, deployment, prerequisites, service
from conftest import APPS, need, need_tool
from crdschema import crds_dir
from fakecontrollers import Deployments, Iter8
from pipelinerun import PipelineRun
from tekton import bundle
from test_load import App

SHORT = "3f2a1bc"
RUN = "canary-rollout-x7k2p"


@pytest.fixture
def app():
    need_tool("hey")
    server = App()
    yield server
    server.server.shutdown()


def settings(app) -> dict[str, str]:
    return {"image-registry": "registry.example.com/bookinfo", "default-load-url": app.url, "load-hosts": "127.0.0.1",
            "max-experiment-timeout": "3600"}


@pytest.fixture
def cluster(fake_api, app):
    """A cluster with what the README's prerequisites install, and reviews-v1 serving."""
    need_tool("kubectl")
    need(crds_dir(), "the upstream CRDs (../shared/crds, or run hack/fetch-crds.py)")
    fake_api.custom_resource_schemas = True
    prerequisites(fake_api, settings(app))
    fake_api.put("services", service())
    fake_api.put("deployments", deployment("reviews", "v1"))
    controllers = []

    def start(**iter8):
        controllers.append(Deployments(fake_api, ready_after=iter8.pop("ready_after", None)))
        controllers.append(Iter8(fake_api, **{"window": 1.0, "poll": 0.2, "traffic": lambda: app.count, **iter8}))
        return controllers[-1]

    yield fake_api, start
    for controller in controllers:
        controller.stop()
        assert controller.errors == [], controller.errors


def rollout(api, tmp_path, app, name=RUN, short=SHORT, app_dir="reviews", **params) -> PipelineRun:
    return PipelineRun(bundle(), api, tmp_path, name=name, app=app_dir, short=short, namespace=NS,
                       params={"load-url": app.url, **params})


def at_once(runs: list[PipelineRun]) -> dict[str, str]:
    """Run PipelineRuns concurrently, as Tekton would; their outcomes by name."""
    outcomes = {}
    threads = [threading.Thread(target=lambda r=r: outcomes.__setitem__(r.name, r.execute())) for r in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def report(*runs: PipelineRun) -> str:
    """What each task said, for an assertion's message."""
    return "\n".join(f"== {run.name} {k}: {run.status.get(k)}\n{v}" for run in runs for k, v in run.logs.items())


def deployments(api) -> dict[str, dict]:
    return {key[4]: obj for key, obj in api.objects.items() if key[2] == "deployments" and key[3] == NS}


def test_promotion(cluster, tmp_path, app):
    api, start = cluster
    start(judge=lambda exp: "candidate")
    run = rollout(api, tmp_path, app)
    assert run.execute() == "Succeeded", report(run)
    exp = api.get(V2, "experiments", NS, f"reviews-{SHORT}")
    assert exp["spec"]["service"] == {"name": "reviews", "baseline": "reviews", "candidates": [f"reviews-{SHORT}"]}
    assert exp["metadata"]["labels"]["iter8-tekton.dev/run"] == RUN
    assert exp["status"]["message"] == "ExperimentCompleted: Traffic To Winner"
    candidate = deployments(api)[f"reviews-{SHORT}"]
    assert candidate["spec"]["template"]["spec"]["containers"][0]["image"] == f"registry.example.com/bookinfo/reviews@sha256:{'c0' * 32}"
    assert run.results["wait-completion"]["outcome"] == "promoted"
    assert set(deployments(api)) == {f"reviews-{SHORT}"}, "cleanup deletes the old version"
    assert deployments(api)[f"reviews-{SHORT}"]["metadata"]["labels"]["iter8-tekton.dev/stable"] == "true"
    assert api.get("v1", "configmaps", NS, f"reviews-settings-{SHORT}"), "the candidate's own ConfigMap"
    # Load stops on the completion, seen by its own watch or through the stop file that
    # wait-completion touches when it sees it: two processes, either may be first.
    assert re.search(r"stopping: (experiment \S+ completed|the stop file appeared)", run.logs["generate-load"]), report(run)
    assert app.count > 0, "load reached the app"
    # iter8's own routing rules, now stable with all traffic on the winner.
    vs = api.get("networking.istio.io/v1alpha3", "virtualservices", NS, f"reviews.{NS}.svc.cluster.local.iter8router")
    assert [d["weight"] for d in vs["spec"]["http"][0]["route"]] == [0, 100]
    # The shared Service was never applied; the run is labelled with its service.
    assert not [r for r in api.calls("patch", "services")]
    assert api.get("tekton.dev/v1", "pipelineruns", NS, RUN)["metadata"]["labels"]["iter8-tekton.dev/service"] == "reviews"


def test_rollback_fails_the_run_and_still_removes_the_candidate(cluster, tmp_path, app):
    api, start = cluster
    start(judge=lambda exp: "baseline")
    run = rollout(api, tmp_path, app)
    assert run.execute() == "Failed", report(run)
    assert run.status["wait-completion"] == "Failed" and run.status["cleanup"] == "Succeeded", run.logs.get("cleanup")
    assert run.results["wait-completion"]["outcome"] == "rolled-back"
    assert set(deployments(api)) == {"reviews"}
    assert deployments(api)["reviews"]["metadata"]["labels"]["iter8-tekton.dev/stable"] == "true"
    assert not api.get("v1", "configmaps", NS, f"reviews-settings-{SHORT}"), "the loser's ConfigMap goes with it"


def test_a_candidate_ready_after_30_seconds_is_promoted(cluster, tmp_path, app):
    """iter8 1.0.1 waits 15 s for a new candidate (targets/helpers.go waitForState), then
    pauses for good; deploy waits until the candidate is available and resumes it
    (manualOverride resume: experiment_controller.go proceed). Real iter8 timings."""
    api, start = cluster
    iter8 = start(judge=lambda exp: "candidate", window=15.0, poll=3.0, ready_after={f"reviews-{SHORT}": 30.0})
    run = rollout(api, tmp_path, app)
    started = time.monotonic()
    assert run.execute() == "Succeeded", run.logs
    assert time.monotonic() - started > 30
    assert "TargetsError: Candidate Not Ready" in run.logs["deploy"] or "Not Ready" in run.logs["deploy"], run.logs["deploy"]
    assert "resuming it (1/3)" in run.logs["deploy"]
    assert run.results["wait-completion"]["outcome"] == "promoted"
    assert iter8.errors == []


def test_an_analytics_outage_ends_the_run_within_seconds_of_the_pause(cluster, tmp_path, app):
    """An analytics error pauses iter8 1.0.1 for good (status.go MarkAnalyticsServiceError,
    proceed()); wait-completion reports it at once, with iter8's message."""
    api, start = cluster
    iter8 = start(judge=lambda exp: None)
    iter8.analytics_error = "Post \"http://iter8-analytics:8080/assessment\": connection refused"
    run = rollout(api, tmp_path, app)
    assert run.execute() == "Failed", report(run)
    assert run.results["wait-completion"]["outcome"] == "paused"
    assert "AnalyticsServiceError: Post" in run.results["wait-completion"]["summary"]
    reported = run.finished_at["wait-completion"] - iter8.paused_at[(NS, f"reviews-{SHORT}")]
    assert 0 < reported < 10, f"the run noticed the pause {reported:.1f}s after it"
    assert set(deployments(api)) == {"reviews"}, "cleanup rolled it back and removed the candidate"
    exp = api.get(V2, "experiments", NS, f"reviews-{SHORT}")
    assert exp["status"]["message"] == "ExperimentCompleted: Traffic User Specified (Abort)"


def test_a_bad_settings_file_fails_before_the_build(cluster, tmp_path, app):
    api, start = cluster
    start()
    run = rollout(api, tmp_path, app, **{"load-url": "http://evil.example.com/", "load-rate": "5000"})
    assert run.execute() == "Failed"
    assert run.status["read-settings"] == "Failed" and "build" not in run.status and "cleanup" not in run.status
    assert "nor on the install's load-hosts allowlist" in run.logs["read-settings"]
    assert "load.rate: 5000 is greater than the maximum of 100" in run.logs["read-settings"]
    assert api.calls("create", "experiments") == [] and set(deployments(api)) == {"reviews"}


def test_a_failed_deploy_rolls_the_experiment_back_and_releases_the_lock(cluster, tmp_path, app):
    api, start = cluster
    start()
    run = rollout(api, tmp_path, app)
    api.inject("patch", "deployments", status=403, times=None, user="canary-deploy")  # the apply is refused
    assert run.execute() == "Failed"
    api.clear_faults()
    assert run.status["deploy"] == "Failed"
    assert "generate-load" not in run.status and "wait-completion" not in run.status
    assert run.status["cleanup"] == "Succeeded", run.logs["cleanup"]
    exp = api.get(V2, "experiments", NS, f"reviews-{SHORT}")
    assert exp["spec"]["manualOverride"]["action"] == "terminate", "the unfinished experiment goes back to the baseline"
    assert api.get("coordination.k8s.io/v1", "leases", NS, "canary-rollout-reviews")["spec"].get("holderIdentity") is None


def test_two_services_roll_out_at_once_without_touching_each_other(cluster, tmp_path, app):
    """One install, two apps each configured by its own .iter8-tekton.yaml, concurrently."""
    api, start = cluster
    api.put("services", service("ratings", {"app": "ratings"}))
    api.put("deployments", deployment("ratings", "v1", app="ratings"))
    start(judge=lambda exp: "candidate" if exp["spec"]["service"]["name"] == "reviews" else "baseline")
    runs = [rollout(api, tmp_path, app, name="run-reviews", short="1111111"),
            rollout(api, tmp_path, app, name="run-ratings", short="2222222", app_dir="ratings")]
    outcomes = at_once(runs)
    assert outcomes == {"run-reviews": "Succeeded", "run-ratings": "Failed"}, report(*runs)
    assert set(deployments(api)) == {"reviews-1111111", "ratings"}, report(*runs)
    leases = {k[4] for k in api.objects if k[2] == "leases"}
    assert leases == {"canary-rollout-reviews", "canary-rollout-ratings"}
    assert api.get(V2, "experiments", NS, "reviews-1111111")["metadata"]["labels"]["iter8-tekton.dev/run"] == "run-reviews"
    assert api.get(V2, "experiments", NS, "ratings-2222222")["metadata"]["labels"]["iter8-tekton.dev/run"] == "run-ratings"
    for run in runs:  # neither waited for the other's lock
        assert "waiting:" not in run.logs["acquire-lock"]
    deleted = {(r.user, r.name) for r in api.calls("delete", "deployments")}
    assert deleted == {("canary-cleanup", "reviews"), ("canary-cleanup", "ratings-2222222")}


@pytest.mark.parametrize("winner", ["ratings", "reviews"])
def test_two_services_from_one_commit_clean_up_only_their_own(cluster, tmp_path, app, winner):
    """One push to a monorepo holding both apps starts one run per app; both candidates are
    version 1234abc. One is promoted, the other rolled back: the rolled-back run's cleanup
    deletes its own candidate and ConfigMap, never the other service's of the same version
    (cleanup selects by service and version)."""
    api, start = cluster
    api.put("services", service("ratings", {"app": "ratings"}))
    api.put("deployments", deployment("ratings", "v1", app="ratings"))
    monorepo = tmp_path / "shop"
    for name in ("reviews", "ratings"):
        shutil.copytree(APPS / name, monorepo / name)
    (monorepo / "ratings" / "kustomize" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ratings-settings}\ndata: {LOG_LEVEL: info}\n")
    with open(monorepo / "ratings" / "kustomize" / "kustomization.yaml", "a") as f:
        f.write("  - configmap.yaml\n")
    start(judge=lambda exp: "candidate" if exp["spec"]["service"]["name"] == winner else "baseline")
    runs = [rollout(api, tmp_path, app, name=f"run-{name}", short="1234abc", app_dir=monorepo,
                    **{"settings-file": f"{name}/.iter8-tekton.yaml", "bound-service": name}) for name in ("reviews", "ratings")]
    outcomes = at_once(runs)
    loser = ({"reviews", "ratings"} - {winner}).pop()
    assert outcomes == {f"run-{winner}": "Succeeded", f"run-{loser}": "Failed"}, {r.name: r.logs for r in runs}
    assert runs[0].status["cleanup"] == runs[1].status["cleanup"] == "Succeeded"
    assert set(deployments(api)) == {f"{winner}-1234abc", loser}, "each run deleted only its own loser"
    configmaps = {k[4] for k in api.objects if k[2] == "configmaps" and k[3] == NS}
    assert f"{winner}-settings-1234abc" in configmaps and f"{loser}-settings-1234abc" not in configmaps
    for key, obj in api.objects.items():
        if key[2] in ("deployments", "configmaps") and (obj["metadata"].get("labels") or {}).get("iter8-tekton.dev/version") == "1234abc":
            assert obj["metadata"]["labels"]["iter8-tekton.dev/service"] == key[4].split("-")[0]


def test_old_runs_of_a_service_are_pruned_and_others_kept(cluster, tmp_path, app):
    api, start = cluster
    start()
    for i in range(6):  # finished runs: 6 of reviews, 2 of ratings
        for svc in ("reviews",) + (("ratings",) if i < 2 else ()):
            api.put("pipelineruns", {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
                                     "metadata": {"name": f"old-{svc}-{i}", "namespace": NS,
                                                  "labels": {"iter8-tekton.dev/service": svc}},
                                     "status": {"completionTime": f"2026-11-0{i + 1}T00:00:00Z",
                                                "conditions": [{"type": "Succeeded", "status": "True"}]}})
    api.put("pipelineruns", {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",  # still running: never pruned
                             "metadata": {"name": "running-reviews", "namespace": NS, "labels": {"iter8-tekton.dev/service": "reviews"}},
                             "status": {"conditions": [{"type": "Succeeded", "status": "Unknown"}]}})
    run = rollout(api, tmp_path, app, **{"keep-runs": "3"})
    assert run.execute() == "Succeeded", run.logs
    left = {k[4] for k in api.objects if k[2] == "pipelineruns"}
    assert left == {RUN, "running-reviews", "old-reviews-5", "old-reviews-4", "old-ratings-0", "old-ratings-1"}
