"""The iter8 1.0.1 stand-in (tests/fakecontrollers.py) does what iter8-controller v1.0.1's
code does, behind the fake API server's CRD pruning and validation, so that the steps are
tested against it and not against our reading of the docs."""

from __future__ import annotations

import time

import pytest

from cluster import NS, V2, deployment, experiment_v2, iter8_crd, service
from conftest import need, wait_for
from crdschema import crds_dir
from fakecontrollers import Deployments, Iter8

B, C = "reviews", "reviews-3f2a1bc"


@pytest.fixture
def api(fake_api):
    need(crds_dir(), "the upstream CRDs")
    fake_api.custom_resource_schemas = True
    fake_api.put("services", service())
    fake_api.put("deployments", deployment(B, "v1"))
    yield fake_api


def status(api):
    return api.get(V2, "experiments", NS, C).get("status") or {}


def condition(api, kind):
    return next((c for c in status(api).get("conditions") or [] if c["type"] == kind), {})


def test_a_missing_candidate_pauses_at_once_and_a_slow_one_stays_paused_until_resumed(api):
    """reconcile.go detectTargets; targets/helpers.go waitForState (a Get error ends the poll);
    experiment_controller.go: Deployment updates never wake a paused experiment."""
    iter8 = Iter8(api, window=0.6, poll=0.2)
    pods = Deployments(api, available_when=lambda dep: (NS, C) in iter8.gave_up)  # slower than iter8's window
    try:
        api.put("experiments", experiment_v2(C, B, C))
        wait_for(lambda: status(api).get("phase") == "Pause", what="the pause")
        assert status(api)["message"] == "TargetsError: Candidate Not Ready"
        assert condition(api, "TargetsProvided")["reason"] == "TargetsError"
        candidate = deployment(C, "3f2a1bc")
        del candidate["status"]
        api.put("deployments", candidate)  # created: iter8 detects once, polls 0.6 s, gives up
        wait_for(lambda: (api.get("apps/v1", "deployments", NS, C).get("status") or {}).get("availableReplicas"), what="the candidate")
        seen = iter8.rounds + 2  # a whole reconcile pass after the update
        wait_for(lambda: iter8.rounds >= seen, what="iter8 to see the update")
        assert status(api)["phase"] == "Pause", "a Deployment update does not wake it"
        exp = api.get(V2, "experiments", NS, C)
        exp["spec"]["manualOverride"] = {"action": "resume"}
        api.put("experiments", exp)
        wait_for(lambda: condition(api, "TargetsProvided").get("status") == "True", what="the targets")
        assert "manualOverride" not in api.get(V2, "experiments", NS, C)["spec"], "the controller clears a resume"
        assert iter8.errors == [] and pods.errors == []
    finally:
        iter8.stop()
        pods.stop()


def run_to_completion(api, preserve: bool):
    api.put("customresourcedefinitions", iter8_crd(preserve_analysis_state=preserve))
    api.put("deployments", deployment(C, "3f2a1bc"))
    exp = experiment_v2(C, B, C)
    exp["spec"].update(duration={"interval": "1s", "maxIterations": 8}, trafficControl={"maxIncrement": 20, "onTermination": "keep_last"})
    weights = []
    iter8 = Iter8(api, judge=lambda e: None, iteration=0.05, window=0.5, poll=0.1)
    try:
        api.put("experiments", exp)
        while status(api).get("phase") != "Completed":
            candidates = (status(api).get("assessment") or {}).get("candidates") or []
            if candidates and candidates[0]["weight"] not in weights[-1:]:
                weights.append(candidates[0]["weight"])
            time.sleep(0.01)
        assert iter8.errors == []
    finally:
        iter8.stop()
    return weights, status(api)


def test_the_shipped_crd_prunes_analysis_state_so_the_candidate_never_passes_max_increment(api):
    """iter8 v1.0.1's CRD declares status.analysisState a bare object; the API server prunes
    it; iter8-analytics then starts from 100% baseline every iteration."""
    weights, final = run_to_completion(api, preserve=False)
    assert max(weights) == 20
    assert final["message"] == "ExperimentCompleted: Keep Last Traffic"
    assert final["assessment"]["candidates"][0]["weight"] == 20, "keep_last never reaches 100"


def test_the_patched_crd_keeps_it_and_traffic_shifts_on(api):
    weights, final = run_to_completion(api, preserve=True)
    assert weights[:5] == [0, 20, 40, 60, 80] or weights[-1] == 100
    assert final["assessment"]["candidates"][0]["weight"] == 100


def test_status_writes_carry_every_field_the_crd_requires(api):
    """The v1.0.1 CRD requires id, name, request_count, weight and win_probability on every
    version of status.assessment: the fake API refuses a status without them."""
    from fakeapi import Invalid

    api.put("experiments", experiment_v2(C, B, C))
    with pytest.raises(Invalid, match="request_count"):
        api.patch_status(V2, "experiments", NS, C, {"assessment": {"baseline": {"id": "baseline", "name": B, "weight": 100},
                                                                   "candidates": []}})


def test_iter8_names_its_routing_rules_as_v101_does(api):
    """routing/router/istio/router.go: <svc>.<ns>.svc.cluster.local.iter8router, subsets
    iter8-baseline and iter8-candidate-0 with the Deployments' pod labels."""
    api.put("deployments", deployment(C, "3f2a1bc"))
    iter8 = Iter8(api, window=0.5, poll=0.1)
    try:
        api.put("experiments", experiment_v2(C, B, C))
        name = f"reviews.{NS}.svc.cluster.local.iter8router"

        def rules():  # router.go writes the DestinationRule, then the VirtualService
            found = [api.get("networking.istio.io/v1alpha3", plural, NS, name) for plural in ("destinationrules", "virtualservices")]
            return all(found) and found

        dr, vs = wait_for(rules, what="the rules")
        assert [s["name"] for s in dr["spec"]["subsets"]] == ["iter8-baseline", "iter8-candidate-0"]
        assert dr["spec"]["subsets"][1]["labels"] == {"app": "reviews", "version": "3f2a1bc"}
        assert vs["metadata"]["labels"]["iter8-tools/router"] == f"reviews.{NS}.svc.cluster.local"
    finally:
        iter8.stop()
