"""cleanup over every experiment outcome: it deletes exactly the loser when that is definite, else nothing."""

from __future__ import annotations

import pytest

from cluster import (
    NS, configmap, deployment, destination_rule, experiment_v1, experiment_v2, service,
    v1_2019, v2_completed, v2_running, virtual_service,
)

B, C = "reviews-v1", "reviews-3f2a1bc"
TRACK = "iter8-tekton.dev/version"


def own(version: str, service: str = "reviews") -> dict:
    """The labels deploy puts on what it applies for one service's candidate."""
    return {TRACK: version, "iter8-tekton.dev/service": service}


EVERYTHING = {("deployments", B), ("deployments", C), ("configmaps", "reviews-v1-settings"),
              ("configmaps", "reviews-3f2a1bc-settings"), ("configmaps", "shared-settings")}
BASELINE_GONE = EVERYTHING - {("deployments", B), ("configmaps", "reviews-v1-settings")}
CANDIDATE_GONE = EVERYTHING - {("deployments", C), ("configmaps", "reviews-3f2a1bc-settings")}


def cluster(fake_api, exp, *, candidate_ready=True, weights=None):
    fake_api.put("services", service())
    fake_api.put("deployments", deployment(B, "v1", labels={**own("v1"), "iter8-tekton.dev/stable": "true"}))
    fake_api.put("deployments", deployment(C, "3f2a1bc", ready=None if candidate_ready else 1, labels=own("3f2a1bc")))
    fake_api.put("configmaps", configmap("reviews-v1-settings", own("v1")))
    fake_api.put("configmaps", configmap("reviews-3f2a1bc-settings", own("3f2a1bc")))
    fake_api.put("configmaps", configmap("shared-settings", {"app": "reviews"}))
    if weights:
        fake_api.put("virtualservices", virtual_service({"baseline": weights[0], "candidate": weights[1]}))
        fake_api.put("destinationrules", destination_rule({"baseline": "v1", "candidate": "3f2a1bc"}))
    fake_api.put("experiments", exp)


def remaining(fake_api) -> set:
    return {(key[2], key[4]) for key in fake_api.objects if key[2] in ("deployments", "configmaps")}


def v2(status):
    return experiment_v2(C, B, C, status)


CASES = {
    "promoted": (v2(v2_completed(B, C, "Traffic To Winner", C, (0, 100))), {}, 0, BASELINE_GONE),
    "rolled back": (v2(v2_completed(B, C, "Traffic To Winner", B, (100, 0), breached=True)), {}, 0, CANDIDATE_GONE),
    "aborted": (v2(v2_completed(B, C, "Traffic To Baseline (Abort)", None, (100, 0))), {}, 0, CANDIDATE_GONE),
    "seed v1alpha1 failed": (experiment_v1(C, B, C, v1_2019("Failed", (100, 0))), {}, 0, CANDIDATE_GONE),
    "still running": (v2(v2_running(B, C, 4, 40)), {}, 1, EVERYTHING),
    "timed out (never finished)": (v2(v2_running(B, C, 12, 60)), {}, 1, EVERYTHING),
    "unknown status": (v2(None), {}, 1, EVERYTHING),
    "split traffic": (v2(v2_completed(B, C, "Keep Last Traffic", None, (50, 50))), {}, 1, EVERYTHING),
    "winner not ready": (v2(v2_completed(B, C, "Traffic To Winner", C, (0, 100))), {"candidate_ready": False}, 1, EVERYTHING),
    "traffic still on the loser": (v2(v2_completed(B, C, "Traffic To Winner", C, (0, 100))), {"weights": (20, 80)}, 1, EVERYTHING),
    "routing settled": (v2(v2_completed(B, C, "Traffic To Winner", C, (0, 100))), {"weights": (0, 100)}, 0, BASELINE_GONE),
    "baseline == candidate": (experiment_v2(C, C, C, v2_completed(C, C, "Traffic To Winner", C, (0, 100))), {}, 2, EVERYTHING),
}


@pytest.mark.parametrize("case", list(CASES))
def test_outcome_table(fake_api, step, case):
    exp, options, code, expected = CASES[case]
    cluster(fake_api, exp, **options)
    result = step("cleanup", "--namespace", NS, "--experiment", C)
    assert result.code == code, result.err
    assert remaining(fake_api) == expected
    if code:
        assert len(result.err.strip().splitlines()) == 1 and "deleting nothing" in result.err
        assert fake_api.calls("delete") == [] and fake_api.calls("patch") == []


def test_winner_is_marked_stable_and_the_old_mark_removed(fake_api, step):
    cluster(fake_api, v2(v2_completed(B, C, "Traffic To Winner", C, (0, 100))))
    fake_api.put("deployments", deployment("reviews-v0", "v0", labels={"iter8-tekton.dev/stable": "true"}))
    assert step("cleanup", "--namespace", NS, "--experiment", C).code == 0
    assert fake_api.get("apps/v1", "deployments", NS, C)["metadata"]["labels"]["iter8-tekton.dev/stable"] == "true"
    assert "iter8-tekton.dev/stable" not in fake_api.get("apps/v1", "deployments", NS, "reviews-v0")["metadata"]["labels"]


def test_rerun_after_deletion_is_fine(fake_api, step, tmp_path):
    cluster(fake_api, v2(v2_completed(B, C, "Traffic To Winner", C, (0, 100))))
    assert step("cleanup", "--namespace", NS, "--experiment", C).code == 0
    again = step("cleanup", "--namespace", NS, "--experiment", C, "--results-dir", str(tmp_path))
    assert again.code == 0 and f"{B} is already gone" in again.out
    assert remaining(fake_api) == BASELINE_GONE


def test_dry_run_prints_and_deletes_nothing(fake_api, step):
    cluster(fake_api, v2(v2_completed(B, C, "Traffic To Winner", B, (100, 0))))
    result = step("cleanup", "--namespace", NS, "--experiment", C, "--dry-run")
    assert result.code == 0, result.err
    assert f"would delete deployments.apps {NS}/{C}" in result.out
    assert f"would delete configmaps {NS}/reviews-3f2a1bc-settings" in result.out
    assert remaining(fake_api) == EVERYTHING and fake_api.calls("patch") == []


def test_missing_experiment(fake_api, step):
    result = step("cleanup", "--namespace", NS, "--experiment", "nope")
    assert result.code == 2 and "does not exist" in result.err


def test_the_loser_of_one_service_is_not_another_services_object(fake_api, step):
    """Two services rolled out from one commit share the version (the short SHA): rolling
    reviews back deletes reviews' objects of that version, never ratings' (which won)."""
    cluster(fake_api, v2(v2_completed(B, C, "Traffic To Winner", B, (100, 0), breached=True)))
    fake_api.put("services", service("ratings", {"app": "ratings"}))
    fake_api.put("deployments", deployment("ratings-3f2a1bc", "3f2a1bc", app="ratings", labels=own("3f2a1bc", "ratings")))
    fake_api.put("configmaps", configmap("ratings-settings-3f2a1bc", own("3f2a1bc", "ratings")))
    result = step("cleanup", "--namespace", NS, "--experiment", C)
    assert result.code == 0, result.err
    assert remaining(fake_api) == CANDIDATE_GONE | {("deployments", "ratings-3f2a1bc"), ("configmaps", "ratings-settings-3f2a1bc")}
    selectors = {r.query.get("labelSelector") for r in fake_api.calls("list") if r.plural == "configmaps"}
    assert selectors == {"iter8-tekton.dev/service=reviews,iter8-tekton.dev/version=3f2a1bc"}
