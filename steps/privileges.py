"""The candidate's pods may not gain rights that the serving version's pods do not have.

A push may change its service's code, never its privileges. So the candidate's pod
template is compared with the serving (baseline) Deployment's, and may differ only where
a new version of the same service legitimately differs: its images, the `version` label,
its own version-suffixed ConfigMaps and Secrets, and per-container settings that carry no
privilege (command, env values, resources, probes, ports, mounts, ...). Everything else
must equal the baseline's: the ServiceAccount and token mounting, every Secret reference,
volumes other than config and scratch space, the pod's other labels and its annotations,
security contexts (a known hardening such as `runAsNonRoot: true` is allowed), host
namespaces, and where and how the pod is scheduled. The install may allow a service more
(`candidate-service-accounts`, `candidate-secrets`). This is an allowlist: a pod field
not named below must equal the baseline's. One line per difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .common import POD_VERSION_LABEL
from .routing import pod_labels, selects

# Pod spec fields a candidate may set freely, or that are checked one by one below.
POD_FREE = {"containers", "initContainers", "volumes", "imagePullSecrets", "terminationGracePeriodSeconds",
            "topologySpreadConstraints", "readinessGates", "enableServiceLinks"}
POD_CHECKED = {"serviceAccountName", "serviceAccount", "automountServiceAccountToken", "securityContext"}
# What the API server fills into a Deployment's pod template when the field is left out
# (k8s.io/kubernetes pkg/apis/core/v1/defaults.go SetDefaults_PodSpec): the serving
# version, read back from the cluster, has them; the rendered candidate may not.
# A field left out means its default, so both sides are compared with these filled in.
POD_DEFAULTS = {"dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                "hostNetwork": False, "hostPID": False, "hostIPC": False, "hostUsers": True, "shareProcessNamespace": False,
                "setHostnameAsFQDN": False}
# SecurityContext fields and what leaving them out means (k8s.io/api core/v1 types.go).
SECURITY_DEFAULTS = {"privileged": False, "readOnlyRootFilesystem": False, "runAsNonRoot": False, "allowPrivilegeEscalation": True}
# Container fields that carry no privilege; securityContext and Secret references are checked.
CONTAINER_FREE = {"name", "image", "command", "args", "workingDir", "ports", "env", "envFrom", "resources", "resizePolicy",
                  "volumeMounts", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "terminationMessagePath",
                  "terminationMessagePolicy", "imagePullPolicy", "stdin", "stdinOnce", "tty", "restartPolicy"}
# Volume types that hold only the pod's own config or scratch space (Secret volumes are
# allowed when the Secret is). Any other volume must equal one of the baseline's.
FREE_VOLUMES = {"configMap", "emptyDir", "downwardAPI"}
FREE_PROJECTIONS = {"configMap", "downwardAPI"}
# Values a candidate may set where the baseline has another (or none): each takes rights away.
HARDENING_POD = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
HARDENING_CONTAINER = {**HARDENING_POD, "allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True}
# Pod template annotations that may differ: Prometheus' scrape hints, and the restart stamp
# `kubectl rollout restart` puts on the serving version. Every other annotation (Istio's
# sidecar.istio.io/userVolume or proxyImage, for example, change what runs in the pod) must equal.
FREE_ANNOTATION_PREFIXES = ("prometheus.io/",)
IGNORED_ANNOTATIONS = {"kubectl.kubernetes.io/restartedAt"}


@dataclass(frozen=True)
class Allowance:
    """What the install allows one service's candidates beyond the serving version's rights."""

    service_accounts: frozenset[str] = field(default_factory=frozenset)
    secrets: frozenset[str] = field(default_factory=frozenset)


def _empty(value, drop_false: bool) -> bool:
    return value is None or value == {} or value == [] or value == "" or (drop_false and value is False)


def _normal(value, drop_false: bool = False):
    """A value as the API server stores it: unset values and the default file mode dropped
    (and false, where false is every field's default, as in volume sources)."""
    if isinstance(value, dict):
        out = {k: _normal(v, drop_false) for k, v in value.items() if not (k == "defaultMode" and v == 420)}
        return {k: v for k, v in out.items() if not _empty(v, drop_false)}
    if isinstance(value, list):
        return [_normal(v, drop_false) for v in value]
    return value


def pod_template(deployment: dict) -> tuple[dict, dict]:
    """(metadata, spec) of a Deployment's pod template."""
    template = (deployment.get("spec") or {}).get("template") or {}
    return template.get("metadata") or {}, template.get("spec") or {}


def service_account(pod: dict) -> str:
    return pod.get("serviceAccountName") or pod.get("serviceAccount") or "default"


def _containers(pod: dict):
    for kind in ("initContainers", "containers"):
        for container in pod.get(kind) or []:
            yield kind, container


def secret_references(pod: dict) -> dict[str, str]:
    """Every Secret the pod spec names -> where (the first place it is named)."""
    refs: dict[str, str] = {}
    for _, container in _containers(pod):
        where = f"container {container.get('name', '?')}"
        for env in container.get("env") or []:
            name = ((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
            if name:
                refs.setdefault(name, f"{where} env {env.get('name', '?')}")
        for source in container.get("envFrom") or []:
            name = (source.get("secretRef") or {}).get("name")
            if name:
                refs.setdefault(name, f"{where} envFrom")
    for volume in pod.get("volumes") or []:
        where = f"volume {volume.get('name', '?')}"
        if (volume.get("secret") or {}).get("secretName"):
            refs.setdefault(volume["secret"]["secretName"], where)
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (source.get("secret") or {}).get("name"):
                refs.setdefault(source["secret"]["name"], where)
        for value in volume.values():  # csi.nodePublishSecretRef, cephfs.secretRef, azureFile.secretName, ...
            if isinstance(value, dict):
                for key in ("secretRef", "nodePublishSecretRef", "nodeStageSecretRef"):
                    if isinstance(value.get(key), dict) and value[key].get("name"):
                        refs.setdefault(value[key]["name"], where)
                if isinstance(value.get("secretName"), str) and "secret" not in volume:
                    refs.setdefault(value["secretName"], where)
    for ref in pod.get("imagePullSecrets") or []:
        if ref.get("name"):
            refs.setdefault(ref["name"], "imagePullSecrets")
    return refs


def _volume_source(volume: dict) -> dict:
    return _normal({k: v for k, v in volume.items() if k != "name"}, drop_false=True)


def _free_volume(volume: dict, secret_ok) -> bool:
    source = {k: v for k, v in volume.items() if k != "name"}
    if len(source) != 1:
        return False
    kind, value = next(iter(source.items()))
    if kind in FREE_VOLUMES:
        return True
    if kind == "secret":
        return secret_ok((value or {}).get("secretName", ""))
    if kind == "projected":
        for item in (value or {}).get("sources") or []:
            if len(item) != 1:
                return False
            (what, projection), = item.items()
            if what == "secret" and secret_ok((projection or {}).get("name", "")):
                continue
            if what not in FREE_PROJECTIONS:
                return False
        return True
    return False


def _security_context(candidate: dict | None, baseline: dict | None, hardening: dict, who: str) -> list[str]:
    candidate, baseline = _normal(candidate or {}), _normal(baseline or {})
    problems = []
    for key in sorted(set(candidate) | set(baseline)):
        mine, theirs = candidate.get(key, SECURITY_DEFAULTS.get(key)), baseline.get(key, SECURITY_DEFAULTS.get(key))
        if mine == theirs or (key in hardening and mine == hardening[key]):
            continue
        if key == "capabilities":
            add, drop = set((mine or {}).get("add") or []), set((mine or {}).get("drop") or [])
            if add <= set((theirs or {}).get("add") or []) and drop >= set((theirs or {}).get("drop") or []):
                continue
        problems.append(f"{who} securityContext.{key} is {mine!r}, the serving version's is {theirs!r}")
    return problems


def _selector(deployment: dict) -> dict:
    """A Deployment's selector without the version label."""
    selector = dict((deployment.get("spec") or {}).get("selector") or {})
    selector["matchLabels"] = {k: v for k, v in (selector.get("matchLabels") or {}).items() if k != POD_VERSION_LABEL}
    return _normal(selector)


def _labels(metadata: dict) -> dict:
    return {k: v for k, v in (metadata.get("labels") or {}).items() if k != POD_VERSION_LABEL}


def _annotations(metadata: dict) -> dict:
    return {k: v for k, v in (metadata.get("annotations") or {}).items()
            if k not in IGNORED_ANNOTATIONS and not k.startswith(FREE_ANNOTATION_PREFIXES)}


def gained(candidate: dict, baseline: dict, *, own_secrets: set[str], allowance: Allowance) -> list[str]:
    """One line per way the candidate Deployment's pods would have rights the baseline's lack."""
    base_name = baseline["metadata"]["name"]
    cand_meta, cand = pod_template(candidate)
    base_meta, base = pod_template(baseline)
    problems = []

    if _selector(candidate) != _selector(baseline):
        problems.append(f"spec.selector differs from the serving Deployment {base_name}'s other than in its {POD_VERSION_LABEL} label")
    cand_labels, base_labels = _labels(cand_meta), _labels(base_meta)
    if cand_labels != base_labels:
        problems.append(f"the pod labels {cand_labels} differ from the serving version's {base_labels} "
                        f"(only the {POD_VERSION_LABEL} label may differ)")
    cand_annotations, base_annotations = _annotations(cand_meta), _annotations(base_meta)
    if cand_annotations != base_annotations:
        changed = sorted(k for k in set(cand_annotations) | set(base_annotations)
                         if cand_annotations.get(k) != base_annotations.get(k))
        problems.append(f"the pod annotations {', '.join(changed)} differ from the serving version's "
                        "(only prometheus.io/ ones may differ)")

    account, serving = service_account(cand), service_account(base)
    if account != serving and account not in allowance.service_accounts:
        problems.append(f"serviceAccountName {account} is not the serving version's ({serving}); a push may not change its "
                        "pods' identity (the install's candidate-service-accounts can allow it)")
    automount, base_automount = cand.get("automountServiceAccountToken"), base.get("automountServiceAccountToken")
    if automount != base_automount and automount is not False:
        problems.append(f"automountServiceAccountToken is {automount!r}, the serving version's is {base_automount!r}")
    problems += _security_context(cand.get("securityContext"), base.get("securityContext"), HARDENING_POD, "the pod's")

    for key in sorted((set(cand) | set(base)) - POD_FREE - POD_CHECKED):
        mine, theirs = _normal(cand.get(key, POD_DEFAULTS.get(key))), _normal(base.get(key, POD_DEFAULTS.get(key)))
        if mine != theirs:
            problems.append(f"spec.template.spec.{key} differs from the serving version's")

    allowed = own_secrets | set(secret_references(base)) | allowance.secrets
    for name, where in sorted(secret_references(cand).items()):
        if name not in allowed:
            problems.append(f"{where} uses Secret {name}, which neither the serving version nor the candidate's own "
                            "objects use (the install's candidate-secrets can allow it)")

    base_sources = [_volume_source(v) for v in base.get("volumes") or []]
    for volume in cand.get("volumes") or []:
        if not _free_volume(volume, lambda s: s in allowed) and _volume_source(volume) not in base_sources:
            problems.append(f"volume {volume.get('name', '?')} is not one of the serving version's volumes (only "
                            "configMap, emptyDir, downwardAPI and allowed Secret volumes may be new)")

    base_containers = {(kind, c.get("name")): c for kind, c in _containers(base)}
    first = (base.get("containers") or [{}])[0]
    for kind, container in _containers(cand):
        name = container.get("name", "?")
        theirs = base_containers.get((kind, name)) or base_containers.get(("containers", name)) or first
        problems += _security_context(container.get("securityContext"), theirs.get("securityContext"), HARDENING_CONTAINER,
                                      f"container {name}'s")
        for key in sorted((set(container) | set(theirs)) - CONTAINER_FREE - {"securityContext"}):
            if _normal(container.get(key)) != _normal(theirs.get(key)):
                problems.append(f"container {name}'s {key} differs from the serving version's")
    return problems


def joins_other_services(candidate: dict, baseline: dict, services: list[dict], service: str) -> list[str]:
    """The candidate's pods may join only the Services the serving version's pods are in."""
    cand_labels, base_labels = pod_labels(candidate), pod_labels(baseline)
    problems = []
    for svc in services:
        name, selector = svc["metadata"]["name"], (svc.get("spec") or {}).get("selector")
        if name != service and selects(selector, cand_labels) and not selects(selector, base_labels):
            problems.append(f"its pod labels match the selector of Service {name}, another service: the candidate would "
                            "receive that service's traffic")
    return problems
