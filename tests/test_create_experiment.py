"""create_experiment: rendering, baseline detection and idempotent creation, against the fake API."""

from __future__ import annotations

import pytest
import yaml

from cluster import NS, V1, V2, deployment, destination_rule, experiment_v2, service, v2_completed, virtual_service
from conftest import APPS, need
from crdschema import crds_dir, errors

C = "reviews-3f2a1bc"
SEED_TEMPLATE = str(APPS / "reviews-seed" / "iter8" / "experiment.yaml")


def args(*extra):
    return ("--namespace", NS, "--service", "reviews", "--candidate", C, *extra)


def test_dry_run_renders_default_v1alpha2_and_touches_no_cluster(step, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "does-not-exist"))
    result = step("create_experiment", *args("--baseline", "reviews-v1", "--dry-run"))
    assert result.code == 0, result.err
    exp = yaml.safe_load(result.out)
    assert exp["apiVersion"] == V2
    assert exp["metadata"]["name"] == C and exp["metadata"]["namespace"] == NS
    assert exp["spec"]["service"] == {"name": "reviews", "baseline": "reviews-v1", "candidates": [C]}
    need(crds_dir(), "the upstream CRDs (../shared/crds, or run hack/fetch-crds.py)")
    assert errors(exp) == []


def test_dry_run_keeps_seed_v1alpha1_template_working(step):
    result = step("create_experiment", *args("--baseline", "reviews-v1", "--template", SEED_TEMPLATE, "--name", "rollout-1", "--dry-run"))
    assert result.code == 0, result.err
    exp = yaml.safe_load(result.out)
    assert exp["apiVersion"] == V1
    assert exp["spec"]["targetService"] == {"name": "reviews", "apiVersion": "v1", "baseline": "reviews-v1", "candidate": C}
    assert exp["spec"]["analysis"]["successCriteria"][0]["metricName"] == "iter8_latency"  # the rest is kept
    need(crds_dir(), "the upstream CRDs (../shared/crds, or run hack/fetch-crds.py)")
    assert errors(exp) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("spec: [unclosed", "is not valid YAML at line 1"),
        ("apiVersion: iter8.tools/v2alpha2\nkind: Experiment\nspec: {}\n", "unknown Experiment apiVersion 'iter8.tools/v2alpha2'"),
        ("apiVersion: iter8.tools/v1alpha2\nkind: Deployment\nspec: {}\n", "has kind 'Deployment'"),
        ("apiVersion: iter8.tools/v1alpha2\nkind: Experiment\n", "has no spec mapping"),
        ("a: 1\n---\nb: 2\n", "exactly one YAML mapping"),
        ("- 1\n", "exactly one YAML mapping"),
    ],
)
def test_bad_template(step, fake_api, tmp_path, content, message):
    template = tmp_path / "experiment.yaml"
    template.write_text(content)
    result = step("create_experiment", *args("--baseline", "reviews-v1", "--template", str(template)))
    assert result.code == 2 and message in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1
    assert fake_api.calls() == [], "bad input must not reach the cluster"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--candidate", "Reviews_V2"), "candidate 'Reviews_V2' is not a DNS-1123 label"),
        (("--name", "x" * 64), "experiment name"),
        (("--baseline", C), "baseline and candidate are the same Deployment"),
        (("--dry-run",), "--dry-run touches no cluster"),
        (("--template", "/nonexistent.yaml"), "cannot read experiment template"),
    ],
)
def test_bad_arguments(step, fake_api, extra, message):
    result = step("create_experiment", *args(*extra))
    assert result.code == 2 and message in result.err, result.err
    assert fake_api.calls() == []


def seed(fake_api, *objects):
    plural = {"Deployment": "deployments", "Service": "services", "VirtualService": "virtualservices",
              "DestinationRule": "destinationrules", "Experiment": "experiments"}
    for obj in objects:
        fake_api.put(plural[obj["kind"]], obj)


def created(fake_api, name=C):
    return fake_api.get(V2, "experiments", NS, name)


def test_baseline_is_the_only_deployment_behind_the_service(step, fake_api, tmp_path):
    seed(fake_api, service(), deployment("reviews-v1", "v1"))
    result = step("create_experiment", *args("--results-dir", str(tmp_path), "--run", "canary-run-1"))
    assert result.code == 0, result.err
    exp = created(fake_api)
    assert exp["spec"]["service"]["baseline"] == "reviews-v1"
    assert exp["metadata"]["labels"]["iter8-tekton.dev/run"] == "canary-run-1"
    assert (tmp_path / "experiment").read_text() == C and (tmp_path / "baseline").read_text() == "reviews-v1"
    assert "the only Deployment the service selects" in result.out
    need(crds_dir(), "the upstream CRDs")
    assert errors({k: v for k, v in exp.items()}) == []


def test_baseline_marked_stable_wins(step, fake_api):
    seed(fake_api, service(), deployment("reviews-v1", "v1"),
         deployment("reviews-v2", "v2", labels={"iter8-tekton.dev/stable": "true"}))
    assert step("create_experiment", *args()).code == 0
    assert created(fake_api)["spec"]["service"]["baseline"] == "reviews-v2"


def test_baseline_is_where_istio_sends_all_traffic(step, fake_api):
    seed(fake_api, service(), deployment("reviews-v1", "v1"), deployment("reviews-v2", "v2"),
         virtual_service({"iter8-baseline": 0, "iter8-candidate": 100}),
         destination_rule({"iter8-baseline": "v1", "iter8-candidate": "v2"}))
    result = step("create_experiment", *args())
    assert result.code == 0, result.err
    assert created(fake_api)["spec"]["service"]["baseline"] == "reviews-v2"


def test_ambiguous_baseline_lists_the_choices_and_creates_nothing(step, fake_api):
    seed(fake_api, service(), deployment("reviews-v1", "v1"), deployment("reviews-v2", "v2"))
    result = step("create_experiment", *args())
    assert result.code == 2
    assert "cannot tell which Deployment serves reviews: reviews-v1, reviews-v2" in result.err
    assert fake_api.calls("create") == []


def test_candidate_already_running_is_not_its_own_baseline(step, fake_api):
    seed(fake_api, service(), deployment("reviews-v1", "v1"), deployment(C, "3f2a1bc"))
    assert step("create_experiment", *args()).code == 0
    assert created(fake_api)["spec"]["service"]["baseline"] == "reviews-v1"


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        ([], "service bookinfo/reviews does not exist"),
        ([service()], "has no matching deployments"),
        ([service(selector={})], "has no selector"),
    ],
)
def test_missing_service_or_deployments(step, fake_api, objects, message):
    seed(fake_api, *objects)
    result = step("create_experiment", *args())
    assert result.code == 2 and message in result.err, result.err
    assert fake_api.calls("create") == []


def test_rerun_reuses_the_experiment(step, fake_api):
    seed(fake_api, service(), deployment("reviews-v1", "v1"))
    assert step("create_experiment", *args("--run", "run-1")).code == 0
    again = step("create_experiment", *args("--run", "run-2"))
    assert again.code == 0 and "reusing experiment" in again.out
    assert len(fake_api.calls("create")) == 2  # the second got 409 and reused


def test_finished_experiment_of_another_run_is_an_error(step, fake_api):
    exp = experiment_v2(C, "reviews-v1", C, v2_completed("reviews-v1", C, "Traffic To Winner", C, (0, 100)))
    exp["metadata"]["labels"] = {"iter8-tekton.dev/run": "run-1"}
    seed(fake_api, service(), deployment("reviews-v1", "v1"), exp)
    same = step("create_experiment", *args("--baseline", "reviews-v1", "--run", "run-1"))
    assert same.code == 0, same.err
    other = step("create_experiment", *args("--baseline", "reviews-v1", "--run", "run-2"))
    assert other.code == 2 and "already finished (promoted) in another run" in other.err


def test_same_name_for_another_candidate_is_an_error(step, fake_api):
    seed(fake_api, service(), deployment("reviews-v1", "v1"), experiment_v2(C, "reviews-v1", "reviews-other"))
    result = step("create_experiment", *args("--baseline", "reviews-v1"))
    assert result.code == 2 and "already exists for service/baseline/candidate reviews/reviews-v1/reviews-other" in result.err


def test_cluster_without_the_experiment_crd(step, fake_api):
    seed(fake_api, service(), deployment("reviews-v1", "v1"))
    fake_api.not_served.add(("iter8.tools", "v1alpha2", "experiments"))
    result = step("create_experiment", *args())
    assert result.code == 2 and "does not serve iter8.tools/v1alpha2 Experiments" in result.err
