"""doctor catches each misconfiguration that makes an iter8 1.0.1 rollout stall or end wrongly."""

from __future__ import annotations

import pytest

from cluster import METRICS, NS, deployment, destination_rule, iter8_crd, prerequisites, service, virtual_service
from conftest import need
from crdschema import crds_dir

ARGS = ("--namespace", NS, "--service", "reviews")


@pytest.fixture
def healthy(fake_api, httpserver):
    need(crds_dir(), "the upstream CRDs")
    prerequisites(fake_api, {})
    fake_api.put("services", service())
    fake_api.put("deployments", deployment("reviews", "v1"))
    httpserver.expect_request("/api/v1/label/job/values").respond_with_json({"status": "success", "data": ["kubernetes-pods"]})
    return fake_api, ("--prometheus-url", httpserver.url_for("/").rstrip("/"))


def test_a_healthy_cluster_passes(step, healthy):
    api, prometheus = healthy
    result = step("doctor", *ARGS, *prometheus)
    assert result.code == 0, result.out
    lines = result.out.strip().splitlines()
    assert len(lines) == 7 and all(line.startswith("ok: ") for line in lines)
    assert "ok: the metrics queries' job kubernetes-pods is in Prometheus" in lines


def break_crd(api):
    api.put("customresourcedefinitions", iter8_crd(preserve_analysis_state=False))  # as iter8 v1.0.1 ships it


def stop_analytics(api):
    analytics = api.get("apps/v1", "deployments", "iter8", "iter8-analytics")
    analytics["status"]["conditions"] = [{"type": "Available", "status": "False"}]
    api.put("deployments", analytics)


def old_tekton(api):
    api.put("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pipelines-info", "namespace": "tekton-pipelines"},
                           "data": {"version": "v1.10.3"}})


def own_virtual_service(api):
    api.put("virtualservices", virtual_service({"v1": 100}))  # a user's own rules: no iter8-tools/router label
    api.put("destinationrules", destination_rule({"v1": "v1"}))


def two_serving_versions(api):
    api.put("deployments", deployment("reviews-v2", "v2"))


def other_prometheus_job(api):
    api.put("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "iter8config-metrics", "namespace": "iter8"},
                           "data": {k: v.replace("kubernetes-pods", "istio-mesh") for k, v in METRICS.items()}})


@pytest.mark.parametrize(("breakage", "message"), [
    (break_crd, "the iter8 CRD prunes status.analysisState"),
    (stop_analytics, "Deployment iter8/iter8-analytics is not available"),
    (old_tekton, "Tekton Pipelines v1.10.3 is older than v1.11.0"),
    (own_virtual_service, "route(s) reviews's host but iter8 does not own them"),
    (two_serving_versions, "cannot tell which Deployment serves reviews: reviews, reviews-v2"),
    (other_prometheus_job, "use job istio-mesh, which Prometheus does not have (kubernetes-pods)"),
])
def test_each_misconfiguration_is_one_error_line(step, healthy, breakage, message):
    api, prometheus = healthy
    breakage(api)
    result = step("doctor", *ARGS, *prometheus)
    assert result.code == 2
    errors = [line for line in result.out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.out
    assert result.out.strip().splitlines()[-1] == "doctor: 1 of 7 checks failed; fix them before rolling out"


def test_names_too_long_for_iter8s_labels(step, healthy):
    api, prometheus = healthy
    long_name = "a-very-long-service-name-for-iter8-labels"  # 41 + len("bookinfo") > 44
    api.put("services", service(long_name))
    result = step("doctor", "--namespace", NS, "--service", long_name, *prometheus)
    assert result.code == 2
    assert "iter8 puts the router label <service>.<namespace>.svc.cluster.local in a label value" in result.out


def test_iter8s_own_rules_are_fine(step, healthy):
    api, prometheus = healthy
    owned = virtual_service({"iter8-baseline": 100})
    owned["metadata"]["labels"] = {"iter8-tools/router": f"reviews.{NS}.svc.cluster.local"}
    api.put("virtualservices", owned)
    assert step("doctor", *ARGS, *prometheus).code == 0


def test_an_unreachable_prometheus_is_not_an_error(step, healthy):
    api, _ = healthy
    result = step("doctor", *ARGS, "--prometheus-url", "http://127.0.0.1:9")
    assert result.code == 0
    assert "Prometheus at http://127.0.0.1:9 is not reachable from here, not checked" in result.out
