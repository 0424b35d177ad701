"""Builders for the cluster objects the step tests put into the fake API server.

Statuses follow ../shared/reference/iter8-status.md: v1alpha2 (iter8 1.0), v1alpha1 as
iter8 v0.2 wrote it, and v1alpha1 as the 2019 controller (the seed's era) wrote it.
"""

from __future__ import annotations

NS = "bookinfo"
V2 = "iter8.tools/v1alpha2"
V1 = "iter8.tools/v1alpha1"


def deployment(name: str, version: str, *, ready: int | None = None, replicas: int = 2, labels: dict | None = None,
               app: str = "reviews") -> dict:
    """A serving version as bookinfo's (istio samples/bookinfo/platform/kube/bookinfo.yaml):
    pods labelled app and version, running as the ServiceAccount bookinfo-<app>."""
    pod_labels = {"app": app, "version": version}
    ready = replicas if ready is None else ready
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": {**pod_labels, **(labels or {})}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": pod_labels},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"serviceAccountName": f"bookinfo-{app}",
                         "containers": [{"name": app, "image": f"registry.example.com/{app}:{version}"}]},
            },
        },
        "status": {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": ready,
                   "availableReplicas": ready,
                   "conditions": [{"type": "Available", "status": "True" if ready else "False", "reason": "MinimumReplicasAvailable"}]},
    }


def service(name: str = "reviews", selector: dict | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": "reviews"}},
        "spec": {"selector": {"app": "reviews"} if selector is None else selector, "ports": [{"name": "http", "port": 9080}]},
    }


def configmap(name: str, labels: dict) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS, "labels": labels}, "data": {}}


def virtual_service(weights: dict[str, int], host: str = "reviews") -> dict:
    """An iter8-style VirtualService sending `weights` (subset -> percent) to the service."""
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "VirtualService",
        "metadata": {"name": f"{host}.{NS}.svc.cluster.local.iter8-experiment", "namespace": NS},
        "spec": {
            "hosts": [host],
            "http": [{"route": [{"destination": {"host": host, "subset": s}, "weight": w} for s, w in weights.items()]}],
        },
    }


def destination_rule(subsets: dict[str, str], host: str = "reviews") -> dict:
    """subset name -> the `version` label its pods carry."""
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "DestinationRule",
        "metadata": {"name": f"{host}.{NS}.svc.cluster.local.iter8-experiment", "namespace": NS},
        "spec": {
            "host": f"{host}.{NS}.svc.cluster.local",
            "subsets": [{"name": s, "labels": {"app": "reviews", "version": v}} for s, v in subsets.items()],
        },
    }


def experiment_v2(name: str, baseline: str, candidate: str, status: dict | None = None) -> dict:
    return {
        "apiVersion": V2,
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "service": {"name": "reviews", "baseline": baseline, "candidates": [candidate]},
            "criteria": [{"metric": "iter8_mean_latency", "threshold": {"type": "relative", "value": 1.6}}],
            "duration": {"interval": "30s", "maxIterations": 12},
        },
        **({"status": status} if status is not None else {}),
    }


def experiment_v1(name: str, baseline: str, candidate: str, status: dict | None = None) -> dict:
    return {
        "apiVersion": V1,
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "targetService": {"name": "reviews", "apiVersion": "v1", "baseline": baseline, "candidate": candidate},
            "trafficControl": {"strategy": "check_and_increment", "interval": "30s", "maxIterations": 8},
            "analysis": {"analyticsService": "http://iter8-analytics.iter8", "successCriteria": [
                {"metricName": "iter8_latency", "toleranceType": "threshold", "tolerance": 0.2}]},
        },
        **({"status": status} if status is not None else {}),
    }


def _condition(kind: str, status: str, reason: str = "", message: str = "") -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": "2026-11-26T10:00:00Z"}


def v2_running(baseline: str, candidate: str, iteration: int, candidate_weight: int, best: str | None = None) -> dict:
    return {
        "phase": "Progressing",
        "currentIteration": iteration,
        "conditions": [_condition("ExperimentCompleted", "False", "IterationUpdate")],
        "message": f"IterationUpdate: Iteration {iteration} Completed",
        "assessment": {
            "baseline": {"id": "baseline", "name": baseline, "weight": 100 - candidate_weight},
            "candidates": [{"id": "candidate-1", "name": candidate, "weight": candidate_weight}],
            "winner": {"winning_version_found": False, **({"name": best, "current_best_version": "candidate-1"} if best else {})},
        },
    }


def v2_completed(baseline: str, candidate: str, message: str, winner: str | None, weights: tuple[int, int], breached: bool = False) -> dict:
    status = v2_running(baseline, candidate, 12, weights[1])
    status["phase"] = "Completed"
    status["conditions"] = [_condition("ExperimentCompleted", "True", "ExperimentCompleted", message)]
    status["message"] = f"ExperimentCompleted: {message}"
    status["assessment"]["baseline"]["weight"] = weights[0]
    status["assessment"]["winner"] = (
        {"winning_version_found": True, "name": winner, "current_best_version": "candidate-1" if winner == candidate else "baseline",
         "probability_of_winning_for_best_version": 0.97}
        if winner else {"winning_version_found": False}
    )
    if breached:
        status["assessment"]["candidates"][0]["criterion_assessments"] = [
            {"id": "0", "metric_id": "iter8_mean_latency", "threshold_assessment": {"threshold_breached": True}}
        ]
    return status


def v1_completed(succeeded: bool, traffic: tuple[int, int] | None) -> dict:
    """iter8 v0.2: phase Completed plus the ExperimentSucceeded condition."""
    status = {
        "phase": "Completed",
        "currentIteration": 8,
        "conditions": [
            _condition("ExperimentCompleted", "True", "ExperimentCompleted"),
            _condition("ExperimentSucceeded", "True" if succeeded else "False",
                       "ExperimentSucceeded" if succeeded else "ExperimentFailed"),
        ],
        "message": "ExperimentSucceeded: All Success Criteria Were Met" if succeeded else "ExperimentFailed: Not All Success Criteria Were Met",
        "assessment": {"all_success_criteria_met": succeeded, "conclusions": [] if succeeded else ["All success criteria were not met"]},
    }
    if traffic:
        status["trafficSplitPercentage"] = {"baseline": traffic[0], "candidate": traffic[1]}
    return status


def v1_2019(phase: str, traffic: tuple[int, int] | None, iteration: int = 8) -> dict:
    """The 2019 controller: the phase itself says Succeeded or Failed."""
    status = {"phase": phase, "currentIteration": iteration, "assessment": {"conclusions": []}}
    if traffic:
        status["trafficSplitPercentage"] = {"baseline": traffic[0], "candidate": traffic[1]}
    if phase == "Failed":
        status["message"] = "NotAllSuccessCriteriaMet, Traffic: AllToBaseline"
    return status


def serving(api, *apps: str, settings: dict[str, str] | None = None) -> None:
    """What read-settings and deploy read besides the commit: each app's serving version
    (bookinfo's v1, which the candidate is compared with), its Service, and the install's
    settings."""
    for app in apps or ("reviews",):
        api.put("services", service(app, {"app": app}))
        api.put("deployments", deployment(app, "v1", app=app))
    api.put("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "canary-rollout-settings", "namespace": NS},
                           "data": settings or {"image-registry": "registry.example.com/bookinfo"}})


def pipeline_run(name: str, state: str = "Unknown") -> dict:
    """A PipelineRun: state Unknown (running), True (succeeded) or False (failed)."""
    return {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"pipelineRef": {"name": "canary-rollout"}},
        "status": {"conditions": [{"type": "Succeeded", "status": state, "reason": "Running" if state == "Unknown" else "Done"}]},
    }


class FakeIter8:
    """Plays iter8's controller for rollbacks: an experiment given a manual override (v1alpha2)
    or override_failure (v1alpha1) completes with all traffic on its baseline."""

    def __init__(self, api):
        import threading

        self.api, self.stopping = api, threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stopping.wait(0.02):
            with self.api.lock:
                pending = [dict(o) for k, o in self.api.objects.items() if k[2] == "experiments"]
            for exp in pending:
                meta, status = exp["metadata"], exp.get("status") or {}
                if status.get("phase") == "Completed":
                    continue
                if exp["apiVersion"] == V2 and (exp["spec"].get("manualOverride") or {}).get("action") == "terminate":
                    svc = exp["spec"]["service"]
                    done = v2_completed(svc["baseline"], svc["candidates"][0], "Traffic User Specified (Abort)", None, (100, 0))
                    self.api.patch_status(V2, "experiments", meta["namespace"], meta["name"], done)
                elif exp["apiVersion"] == V1 and exp.get("action") == "override_failure":
                    self.api.patch_status(V1, "experiments", meta["namespace"], meta["name"], v1_completed(False, (100, 0)))

    def stop(self):
        self.stopping.set()
        self.thread.join()


# --- a cluster ready for a rollout: what the README's prerequisites install -----------------
def iter8_crd(preserve_analysis_state: bool = True) -> dict:
    """iter8 v1.0.1's Experiment CRD (../shared/crds); patched as the README says, or as shipped."""
    import yaml

    from conftest import need
    from crdschema import crds_dir

    directory = crds_dir()
    need(directory, "the upstream CRDs (../shared/crds, or run hack/fetch-crds.py)")
    crd = next(d for d in yaml.safe_load_all((directory / "iter8" / "v1alpha2" / "iter8.tools_experiments.yaml").read_text()) if d)
    if preserve_analysis_state:
        status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        status["properties"]["analysisState"]["x-kubernetes-preserve-unknown-fields"] = True
    return crd


def available(name: str, namespace: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": name, "image": f"{name}:1"}]}}},
            "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                       "conditions": [{"type": "Available", "status": "True"}]}}


METRICS = {"counter_metrics.yaml": "- name: iter8_request_count\n  query_template: sum(increase(istio_requests_total{reporter='source',job='kubernetes-pods'}[$interval])) by ($version_labels)\n"}


def prerequisites(api, settings: dict[str, str], *, preserve_analysis_state: bool = True, tekton: str = "v1.15.0") -> None:
    """iter8 1.0.1 (its CRD patched, controller and analytics available, metrics), Tekton's
    version ConfigMap, the bundle's settings ConfigMap, and the app's serving version."""
    api.put("customresourcedefinitions", iter8_crd(preserve_analysis_state))
    for name in ("iter8-controller", "iter8-analytics"):
        api.put("deployments", available(name, "iter8"))
    api.put("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "iter8config-metrics", "namespace": "iter8"}, "data": METRICS})
    api.put("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pipelines-info", "namespace": "tekton-pipelines"},
                           "data": {"version": tekton}})
    api.put("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "canary-rollout-settings", "namespace": NS},
                           "data": settings})
