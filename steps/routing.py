"""Which Deployments back a Service, and how Istio routes the Service's traffic to them.

Used to find the version that serves traffic now (create_experiment's baseline) and to
check that no traffic goes to a version before it is deleted (cleanup).
"""

from __future__ import annotations

from .common import BadInput
from .kube import DEPLOYMENTS, DESTINATION_RULES, SERVICES, VIRTUAL_SERVICES, Kube


def hosts(service: str, namespace: str) -> set[str]:
    return {service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"}


def _selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def replicas_ready(deployment: dict) -> tuple[bool, str]:
    """All wanted replicas of the current generation updated and ready, and how many are."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    wanted = spec.get("replicas", 1)
    have = status.get("readyReplicas", 0)
    current = status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
    updated = status.get("updatedReplicas", 0) >= wanted
    return current and updated and have >= wanted, f"{have}/{wanted} replicas ready"


def pod_labels(deployment: dict) -> dict:
    return ((deployment.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}


def service_deployments(kube: Kube, namespace: str, service: str) -> list[dict]:
    """The Deployments whose pods the Service selects; BadInput if the Service is missing."""
    svc = kube.get(SERVICES, namespace, service)
    if svc is None:
        raise BadInput(f"service {namespace}/{service} does not exist; check --service and --namespace")
    selector = (svc.get("spec") or {}).get("selector") or {}
    if not selector:
        raise BadInput(f"service {namespace}/{service} has no selector, so no Deployment backs it; pass --baseline")
    return [d for d in kube.items(DEPLOYMENTS, namespace) if _selects(selector, pod_labels(d))]


def subset_weights(kube: Kube, namespace: str, service: str) -> dict[str, int]:
    """Total weight per DestinationRule subset over the VirtualServices' HTTP routes for the Service."""
    names = hosts(service, namespace)
    weights: dict[str, int] = {}
    for vs in kube.items(VIRTUAL_SERVICES, namespace):
        if not names & set((vs.get("spec") or {}).get("hosts") or []):
            continue
        for route in (vs.get("spec") or {}).get("http") or []:
            destinations = route.get("route") or []
            for dest in destinations:
                target = dest.get("destination") or {}
                if target.get("host") in names and target.get("subset"):
                    weight = dest.get("weight", 100 if len(destinations) == 1 else 0)
                    weights[target["subset"]] = weights.get(target["subset"], 0) + int(weight)
    return weights


def subset_labels(kube: Kube, namespace: str, service: str) -> dict[str, dict]:
    names = hosts(service, namespace)
    subsets: dict[str, dict] = {}
    for dr in kube.items(DESTINATION_RULES, namespace):
        spec = dr.get("spec") or {}
        if spec.get("host") in names:
            for subset in spec.get("subsets") or []:
                subsets[subset.get("name", "")] = subset.get("labels") or {}
    return subsets


def deployment_weights(kube: Kube, namespace: str, service: str, deployments: list[dict]) -> dict[str, int]:
    """Weight Istio routes to each Deployment (by its pods' labels); empty if no routing exists."""
    weights = subset_weights(kube, namespace, service)
    if not weights:
        return {}
    labels = subset_labels(kube, namespace, service)
    result = {d["metadata"]["name"]: 0 for d in deployments}
    for subset, weight in weights.items():
        for d in deployments:
            if _selects(labels.get(subset, {}), pod_labels(d)):
                result[d["metadata"]["name"]] += weight
    return result
