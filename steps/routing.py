"""Which Deployments back a Service, and how Istio routes the Service's traffic to them.

Used to find the version that serves traffic now (create_experiment's baseline) and to
check that no traffic goes to a version before it is deleted (cleanup).
"""

from __future__ import annotations

from .common import STABLE_LABEL, BadInput
from .kube import DEPLOYMENTS, DESTINATION_RULES, SERVICES, VIRTUAL_SERVICES, Kube


def hosts(service: str, namespace: str) -> set[str]:
    return {service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"}


def selects(selector: dict | None, labels: dict) -> bool:
    """A selector (a map, as a Service's or a subset's) selects objects with these labels."""
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
    return [d for d in kube.items(DEPLOYMENTS, namespace) if selects(selector, pod_labels(d))]


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
            if selects(labels.get(subset, {}), pod_labels(d)):
                result[d["metadata"]["name"]] += weight
    return result


def _one(names: list[str], how: str, service: str) -> str | None:
    if len(names) > 1:
        raise BadInput(
            f"cannot tell which Deployment serves {service}: {', '.join(sorted(names))} are all {how}; pass --baseline"
        )
    return names[0] if names else None


def find_baseline(kube: Kube, namespace: str, service: str, candidate: str, name: str | None = None) -> tuple[dict, str]:
    """The Deployment serving the service now (the one named, if given), and how it was found."""
    deployments = [d for d in service_deployments(kube, namespace, service) if d["metadata"]["name"] != candidate]
    if name:
        named = [d for d in deployments if d["metadata"]["name"] == name]
        if not named:
            raise BadInput(f"baseline {name} is not a Deployment that service {namespace}/{service} selects; check the baseline")
        return named[0], "given as the baseline"
    if not deployments:
        raise BadInput(f"service {namespace}/{service} has no matching deployments (other than the candidate); deploy the app first or pass --baseline")
    by_name = {d["metadata"]["name"]: d for d in deployments}
    stable = [n for n, d in by_name.items() if (d["metadata"].get("labels") or {}).get(STABLE_LABEL) == "true"]
    if found := _one(stable, f"labelled {STABLE_LABEL}=true", service):
        return by_name[found], "marked stable by the last rollout"
    weights = deployment_weights(kube, namespace, service, deployments)
    routed = [n for n, weight in weights.items() if weight > 0]
    if routed and (found := _one(routed, "routed traffic by Istio", service)):
        return by_name[found], "receives all of Istio's traffic"
    return by_name[_one(list(by_name), f"selected by service {service}", service)], "the only Deployment the service selects"
