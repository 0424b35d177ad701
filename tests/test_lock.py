"""The per-service rollout lock: runs serialize, supersede takes over, stale locks are
taken over, different services do not wait for each other."""

from __future__ import annotations

import pytest

from cluster import NS, V1, V2, FakeIter8, deployment, experiment_v1, experiment_v2, pipeline_run, service, v2_running
from conftest import wait_for

LEASE = "canary-rollout-reviews"


def holder(api, lease=LEASE):
    obj = api.get("coordination.k8s.io/v1", "leases", NS, lease)
    return (obj or {}).get("spec", {}).get("holderIdentity")


def acquire(run, *extra, service="reviews"):
    return ("acquire", "--namespace", NS, "--service", service, "--run", run, "--poll", "0.1", *extra)


def release(run, service="reviews"):
    return ("release", "--namespace", NS, "--service", service, "--run", run)


@pytest.fixture
def iter8(fake_api):
    controller = FakeIter8(fake_api)
    yield controller
    controller.stop()


def test_two_runs_for_one_service_take_turns(fake_api, step, start_step):
    fake_api.put("pipelineruns", pipeline_run("run-a"))
    fake_api.put("pipelineruns", pipeline_run("run-b"))
    assert step("lock", *acquire("run-a")).code == 0
    assert holder(fake_api) == "run-a"
    second = start_step("lock", *acquire("run-b"))
    # Each run first reads its own PipelineRun (to label it); run-b then reads run-a's, finds it
    # running and says it waits.
    wait_for(lambda: len([r for r in fake_api.calls("get", "pipelineruns") if r.name == "run-a"]) >= 2, what="run-b checking on run-a")
    assert second.poll() is None and holder(fake_api) == "run-a", "run-b must wait"
    assert step("lock", *release("run-a")).code == 0
    out, err = second.communicate(timeout=20)
    assert second.returncode == 0, err
    assert "waiting: run-a is rolling out reviews" in out and "run-b holds the rollout lock" in out
    assert holder(fake_api) == "run-b"


def test_concurrent_acquires_give_the_lock_to_exactly_one(fake_api, start_step, step):
    for run in ("run-a", "run-b"):
        fake_api.put("pipelineruns", pipeline_run(run))
    procs = {run: start_step("lock", *acquire(run)) for run in ("run-a", "run-b")}
    first = wait_for(lambda: holder(fake_api), what="a holder")
    other = "run-b" if first == "run-a" else "run-a"
    wait_for(lambda: procs[first].poll() is not None, what="the first to finish")
    assert procs[first].returncode == 0 and procs[other].poll() is None
    assert step("lock", *release(first)).code == 0
    procs[other].communicate(timeout=20)
    assert procs[other].returncode == 0 and holder(fake_api) == other


def test_different_services_do_not_wait(fake_api, step):
    fake_api.put("pipelineruns", pipeline_run("run-a"))
    assert step("lock", *acquire("run-a")).code == 0
    assert step("lock", *acquire("run-b", service="ratings")).code == 0
    assert holder(fake_api) == "run-a" and holder(fake_api, "canary-rollout-ratings") == "run-b"


@pytest.mark.parametrize("state", ["gone", "True", "False"])
def test_stale_lock_is_taken_over(fake_api, step, state):
    if state != "gone":
        fake_api.put("pipelineruns", pipeline_run("run-a", state))
    assert step("lock", *acquire("run-a")).code == 0
    result = step("lock", *acquire("run-b"))
    assert result.code == 0, result.err
    assert "taking over the rollout lock of reviews from run-a" in result.out
    assert holder(fake_api) == "run-b"


def test_a_crashed_runs_experiment_is_rolled_back_before_taking_over(fake_api, step, iter8):
    fake_api.put("services", service())
    fake_api.put("deployments", deployment("reviews-v1", "v1"))
    fake_api.put("deployments", deployment("reviews-aaaaaaa", "aaaaaaa"))
    exp = experiment_v1("reviews-aaaaaaa", "reviews-v1", "reviews-aaaaaaa")
    exp["metadata"]["labels"] = {"iter8-tekton.dev/run": "run-a"}
    fake_api.put("experiments", exp)
    assert step("lock", *acquire("run-a")).code == 0  # run-a then crashed: its PipelineRun is gone
    result = step("lock", *acquire("run-b"))
    assert result.code == 0, result.err
    assert fake_api.get(V1, "experiments", NS, "reviews-aaaaaaa")["action"] == "override_failure"
    assert fake_api.get("apps/v1", "deployments", NS, "reviews-aaaaaaa") is None, "the crashed run's candidate is removed"
    assert fake_api.get("apps/v1", "deployments", NS, "reviews-v1") is not None
    assert holder(fake_api) == "run-b"


def test_supersede_cancels_the_older_run_and_rolls_it_back(fake_api, step, iter8):
    fake_api.put("services", service())
    fake_api.put("deployments", deployment("reviews-v1", "v1"))
    fake_api.put("deployments", deployment("reviews-aaaaaaa", "aaaaaaa"))
    exp = experiment_v2("reviews-aaaaaaa", "reviews-v1", "reviews-aaaaaaa", v2_running("reviews-v1", "reviews-aaaaaaa", 3, 40))
    exp["metadata"]["labels"] = {"iter8-tekton.dev/run": "run-a"}
    fake_api.put("experiments", exp)
    fake_api.put("pipelineruns", pipeline_run("run-a"))
    fake_api.put("pipelineruns", pipeline_run("run-b"))
    assert step("lock", *acquire("run-a")).code == 0
    result = step("lock", *acquire("run-b", "--policy", "supersede"))
    assert result.code == 0, result.err
    assert fake_api.get("tekton.dev/v1", "pipelineruns", NS, "run-a")["spec"]["status"] == "CancelledRunFinally"
    override = fake_api.get(V2, "experiments", NS, "reviews-aaaaaaa")["spec"]["manualOverride"]
    assert override == {"action": "terminate", "trafficSplit": {"reviews-v1": 100, "reviews-aaaaaaa": 0}}
    assert fake_api.get("apps/v1", "deployments", NS, "reviews-aaaaaaa") is None
    assert holder(fake_api) == "run-b"


def test_supersede_refuses_when_the_rollback_does_not_finish(fake_api, step):
    exp = experiment_v2("reviews-aaaaaaa", "reviews-v1", "reviews-aaaaaaa", v2_running("reviews-v1", "reviews-aaaaaaa", 3, 40))
    exp["metadata"]["labels"] = {"iter8-tekton.dev/run": "run-a"}
    fake_api.put("experiments", exp)
    fake_api.put("pipelineruns", pipeline_run("run-a"))
    assert step("lock", *acquire("run-a")).code == 0
    result = step("lock", *acquire("run-b", "--policy", "supersede", "--rollback-wait", "1"))  # no iter8 here
    assert result.code == 1 and "did not finish within 1s of the rollback" in result.err
    assert holder(fake_api) == "run-a"


def test_waiting_times_out(fake_api, step):
    fake_api.put("pipelineruns", pipeline_run("run-a"))
    assert step("lock", *acquire("run-a")).code == 0
    result = step("lock", *acquire("run-b", "--timeout", "0.5"))
    assert result.code == 3 and "run-a still holds the rollout lock of reviews" in result.err
    assert holder(fake_api) == "run-a"


def test_release_by_another_run_leaves_the_lock(fake_api, step):
    fake_api.put("pipelineruns", pipeline_run("run-a"))
    assert step("lock", *acquire("run-a")).code == 0
    result = step("lock", *release("run-b"))
    assert result.code == 0 and "held by run-a, not run-b: leaving it" in result.out
    assert holder(fake_api) == "run-a"
    assert step("lock", *release("run-a")).code == 0 and holder(fake_api) is None
    assert step("lock", *release("run-a")).code == 0  # twice is fine
