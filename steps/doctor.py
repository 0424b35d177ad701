"""Check, before a rollout, what makes an iter8 1.0.1 rollout stall or end wrongly.

    python -m steps.doctor --namespace NS --service SVC [--deployment BASE]
        [--iter8-namespace iter8] [--prometheus-url URL] [--min-tekton v1.11.0]

Each check prints one line: `ok: ...`, or `error: <what is wrong>; <how to fix it>`. Exit 0
only when every check passes, 2 otherwise. Run by a person it uses their kubeconfig; in
the pipeline it runs as the doctor's ServiceAccount (read-only). What it checks, from
iter8-controller v1.0.1's code:

- the Experiment CRD keeps status.analysisState (v1.0.1's own CRD declares it a bare
  object, so the API server prunes it on every write and analytics restarts each
  iteration from 100% baseline: the candidate never gets more than maxIncrement);
- the iter8 controller and analytics Deployments are available;
- Tekton Pipelines is at least the version this bundle needs;
- no VirtualService or DestinationRule that iter8 does not own routes the service's host
  (iter8 only sees rules labelled iter8-tools/router and creates its own beside yours:
  Istio's IST0109, undefined routing);
- the names fit the label values iter8 builds from them (63 characters);
- the service has one serving Deployment, or one marked stable;
- the metrics' `job` label is one the cluster's Prometheus has (where it can be reached).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

import requests

from .common import EXIT_BAD_INPUT, BadInput, check_name, parser, run
from .create_experiment import find_baseline
from .iter8 import label_values
from .kube import CONFIGMAPS, CRDS, DEPLOYMENTS, DESTINATION_RULES, VIRTUAL_SERVICES, Kube
from .routing import hosts

MIN_TEKTON = "v1.11.0"  # tekton.dev/auto-cleanup-pvc (first in v1.11.0: pkg/reconciler/pipelinerun/affinity_assistant.go)
ROUTER_LABEL = "iter8-tools/router"  # iter8-controller v1.0.1 pkg/controller/experiment/routing/router/istio/router.go
PROMETHEUS = "http://prometheus.istio-system:9090"  # iter8-analytics v1.0.1's default metrics backend


@dataclass
class Check:
    name: str
    run: Callable[[], str]  # returns the ok line, raises Failed


class Failed(Exception):
    pass


def _version(text: str) -> tuple[int, ...] | None:
    match = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(n) for n in match.groups()) if match else None


def crd_keeps_analysis_state(kube: Kube) -> str:
    crd = kube.get(CRDS, None, "experiments.iter8.tools")
    if crd is None:
        raise Failed("the CRD experiments.iter8.tools is not installed; install iter8 1.0.1 (docs/install.md, Prerequisites)")
    versions = {v.get("name"): v for v in (crd.get("spec") or {}).get("versions") or []}
    if "v1alpha2" not in versions:
        raise Failed(f"the iter8 CRD serves {', '.join(sorted(versions))}, not v1alpha2 (iter8 1.0); install iter8 1.0.1")
    status = (((versions["v1alpha2"].get("schema") or {}).get("openAPIV3Schema") or {}).get("properties") or {}).get("status") or {}
    state = (status.get("properties") or {}).get("analysisState") or {}
    if state and not state.get("x-kubernetes-preserve-unknown-fields"):
        raise Failed("the iter8 CRD prunes status.analysisState, so every iteration starts from 100% baseline and the "
                     "candidate never gets more than maxIncrement; patch the CRD (docs/install.md, Prerequisites: "
                     "x-kubernetes-preserve-unknown-fields: true on status.analysisState)")
    return "the iter8 CRD keeps status.analysisState"


def iter8_available(kube: Kube, namespace: str) -> str:
    for name in ("iter8-controller", "iter8-analytics"):
        deployment = kube.get(DEPLOYMENTS, namespace, name)
        if deployment is None:
            raise Failed(f"Deployment {namespace}/{name} does not exist; install iter8 1.0.1 and its analytics")
        conditions = {c.get("type"): c.get("status") for c in (deployment.get("status") or {}).get("conditions") or []}
        if conditions.get("Available") != "True":
            raise Failed(f"Deployment {namespace}/{name} is not available; check its pods (kubectl -n {namespace} get pods)")
    return f"iter8-controller and iter8-analytics are available in {namespace}"


def tekton_version(kube: Kube, minimum: str) -> str:
    info = kube.get(CONFIGMAPS, "tekton-pipelines", "pipelines-info")
    if info is None:
        raise Failed("ConfigMap tekton-pipelines/pipelines-info not found; install Tekton Pipelines "
                     f"{minimum} or later")
    version = (info.get("data") or {}).get("version", "")
    found, wanted = _version(version), _version(minimum)
    if found is None:
        return f"Tekton Pipelines {version or '(unknown)'}: a development build, not checked"
    if found < wanted:
        raise Failed(f"Tekton Pipelines {version} is older than {minimum}, which this bundle needs "
                     "(tekton.dev/auto-cleanup-pvc); upgrade Tekton Pipelines")
    return f"Tekton Pipelines {version} (>= {minimum})"


def no_foreign_routing(kube: Kube, namespace: str, service: str) -> str:
    names = hosts(service, namespace)
    foreign = []
    for kind, objects in (("VirtualService", kube.items(VIRTUAL_SERVICES, namespace)),
                          ("DestinationRule", kube.items(DESTINATION_RULES, namespace))):
        for obj in objects:
            spec = obj.get("spec") or {}
            targets = set(spec.get("hosts") or []) | {spec.get("host")}
            if names & targets and ROUTER_LABEL not in ((obj["metadata"].get("labels")) or {}):
                foreign.append(f"{kind} {obj['metadata']['name']}")
    if foreign:
        raise Failed(f"{', '.join(foreign)} route(s) {service}'s host but iter8 does not own them (no {ROUTER_LABEL} "
                     "label); iter8 creates its own rules beside them and Istio's routing is then undefined (IST0109): "
                     "delete them, or label them for iter8 (docs/install.md, Prerequisites)")
    return f"no Istio rule that iter8 does not own routes {service}"


def label_lengths(namespace: str, service: str, deployment: str) -> str:
    router, experiment = label_values(service, deployment, namespace)
    for what, value in (("the router label <service>.<namespace>.svc.cluster.local", router),
                        ("the experiment label <deployment>-<short sha>.<namespace>", experiment)):
        if len(value) > 63:
            raise Failed(f"iter8 puts {what} in a label value, {len(value)} characters here (63 at most): "
                         "use a shorter service, deployment or namespace name")
    return f"iter8's label values fit ({len(router)} and {len(experiment)} of 63 characters)"


def serving_deployment(kube: Kube, namespace: str, service: str) -> str:
    try:
        baseline, how = find_baseline(kube, namespace, service, candidate="")
    except BadInput as err:  # an API failure is not a finding: it ends doctor (exit 4)
        raise Failed(err.message) from None
    return f"{service} is served by {baseline} ({how})"


def metrics_job(kube: Kube, namespace: str, prometheus: str) -> str:
    config = kube.get(CONFIGMAPS, namespace, "iter8config-metrics")
    if config is None:
        raise Failed(f"ConfigMap {namespace}/iter8config-metrics not found; install iter8 1.0.1")
    jobs = sorted(set(re.findall(r"job=['\"]([^'\"]+)['\"]", " ".join((config.get("data") or {}).values()))))
    if not jobs:
        return "the metrics queries do not filter on a Prometheus job"
    try:
        answer = requests.get(f"{prometheus.rstrip('/')}/api/v1/label/job/values", timeout=5)
        known = set(answer.json().get("data") or [])
    except (requests.RequestException, ValueError):
        return f"the metrics queries use job {', '.join(jobs)}; Prometheus at {prometheus} is not reachable from here, not checked"
    missing = [job for job in jobs if job not in known]
    if missing:
        raise Failed(f"the metrics queries in {namespace}/iter8config-metrics use job {', '.join(missing)}, which Prometheus "
                     f"does not have ({', '.join(sorted(known)) or 'no jobs'}): no metrics means no winner; set the job "
                     "label the cluster's Prometheus uses (docs/install.md, Prerequisites)")
    return f"the metrics queries' job {', '.join(jobs)} is in Prometheus"


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("doctor", "Check what an iter8 1.0.1 canary rollout needs, before it starts.")
    p.add_argument("--namespace", required=True, help="the app's (and the pipeline's) namespace")
    p.add_argument("--service", required=True)
    p.add_argument("--deployment", help="the app's Deployment base name (default: the service)")
    p.add_argument("--iter8-namespace", default="iter8")
    p.add_argument("--prometheus-url", default=PROMETHEUS)
    p.add_argument("--min-tekton", default=MIN_TEKTON)
    args = p.parse_args(argv)
    for value, what in ((args.namespace, "namespace"), (args.service, "service"), (args.iter8_namespace, "iter8 namespace")):
        check_name(value, what)
    deployment = check_name(args.deployment or args.service, "deployment")

    kube = Kube()
    checks = [
        Check("iter8 CRD", lambda: crd_keeps_analysis_state(kube)),
        Check("iter8", lambda: iter8_available(kube, args.iter8_namespace)),
        Check("Tekton", lambda: tekton_version(kube, args.min_tekton)),
        Check("routing", lambda: no_foreign_routing(kube, args.namespace, args.service)),
        Check("names", lambda: label_lengths(args.namespace, args.service, deployment)),
        Check("baseline", lambda: serving_deployment(kube, args.namespace, args.service)),
        Check("metrics", lambda: metrics_job(kube, args.iter8_namespace, args.prometheus_url)),
    ]
    failed = 0
    for check in checks:
        try:
            print(f"ok: {check.run()}", flush=True)
        except Failed as why:
            print(f"error: {why}", flush=True)
            failed += 1
    if failed:
        print(f"doctor: {failed} of {len(checks)} checks failed; fix them before rolling out", flush=True)
        return EXIT_BAD_INPUT
    return 0


def entry() -> None:
    run(main)


if __name__ == "__main__":
    entry()
