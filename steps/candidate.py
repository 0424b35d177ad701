"""What the pipeline may deploy for a candidate, checked before anything is applied.

The app's kustomize folder comes from the pushed commit, so anyone who can push controls
it. What it renders is accepted only if it is the candidate's own objects: exactly one
Deployment named `<deployment>-<version>`, plus ConfigMaps, Secrets (of the ordinary
types), a HorizontalPodAutoscaler and a PodDisruptionBudget for that Deployment, named
with the `-<version>` suffix, all in the run's namespace; a pod spec that meets the Pod
Security "baseline" level and gains no right the serving version's pods lack
(steps/privileges.py); pods that join no other Service. The app's shared Service may be
in the output; it is never applied. Every violation is one line; `check()` returns them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .common import LABEL_PREFIX, SERVICE_LABEL, VERSION_LABEL
from .kube import CONFIGMAPS, DEPLOYMENTS, HPAS, PDBS, SECRETS
from .privileges import Allowance, gained, joins_other_services
from .routing import pod_labels, selects

# The kinds deploy applies (and its Role grants: tasks/rbac.yaml), with the one apiVersion
# each must have; cleanup deletes the loser's objects of these kinds by its service and
# version labels, in this order (Deployment last). To deploy another kind with each
# candidate, add it here and to the Roles canary-deploy, canary-cleanup and canary-lock
# (which deletes a superseded run's candidate).
APPLIED_KINDS = {"ConfigMap": CONFIGMAPS, "Secret": SECRETS, "HorizontalPodAutoscaler": HPAS, "PodDisruptionBudget": PDBS,
                 "Deployment": DEPLOYMENTS}
# Secret types with no side effect: a kubernetes.io/service-account-token Secret, for one,
# makes Kubernetes write a ServiceAccount's token into it (k8s.io/api core/v1 types.go SecretType).
ORDINARY_SECRET_TYPES = {"Opaque", "kubernetes.io/dockercfg", "kubernetes.io/dockerconfigjson", "kubernetes.io/basic-auth",
                         "kubernetes.io/ssh-auth", "kubernetes.io/tls"}

# Cluster-scoped kinds an app's kustomize output might hold (none may be deployed).
CLUSTER_SCOPED = {
    "Namespace", "Node", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "StorageClass", "PriorityClass", "RuntimeClass", "IngressClass", "APIService", "CSIDriver", "CSINode",
    "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding", "CertificateSigningRequest", "VolumeAttachment", "ClusterIssuer",
}

# k8s.io/pod-security-admission v0.32 policy/: the "baseline" level.
BASELINE_CAPABILITIES = {  # check_capabilities_baseline.go capabilities_allowed_1_0
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
    "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}
SAFE_SYSCTLS = {  # check_sysctls.go sysctlsAllowedV1Dot32
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start", "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}  # check_seLinuxOptions.go


def api_version(kind) -> str:
    return f"{kind.group}/{kind.version}" if kind.group else kind.version


@dataclass
class Candidate:
    deployment: dict | None = None
    applied: list[dict] = field(default_factory=list)  # Deployment last: its config exists before its pods start
    shared: list[str] = field(default_factory=list)  # left alone, e.g. "Service reviews"
    violations: list[str] = field(default_factory=list)


def _name(obj: dict) -> str:
    return (obj.get("metadata") or {}).get("name") or "(no name)"


def check(objects: list[dict], *, deployment: str, version: str, namespace: str, service: str, baseline: dict,
          services: list[dict] | None = None, allowance: Allowance | None = None) -> Candidate:
    """Sort the rendered objects into what deploy applies and what it leaves; list violations.
    `baseline` is the serving Deployment; `services` the namespace's Services (None: not checked)."""
    result = Candidate()
    expected = f"{deployment}-{version}"
    for obj in objects:
        kind, name = obj.get("kind", "?"), _name(obj)
        where = f"{kind} {name}"
        ns = (obj.get("metadata") or {}).get("namespace")
        ours = sorted(k for k in (obj.get("metadata") or {}).get("labels") or {} if k.startswith(LABEL_PREFIX) and k != VERSION_LABEL)
        if ours:
            result.violations.append(f"{where} sets the label(s) {', '.join(ours)}: the {LABEL_PREFIX} labels are the pipeline's")
            continue
        if ns and ns != namespace:
            result.violations.append(f"{where} is in namespace {ns}: the candidate may only use the run's namespace {namespace}")
            continue
        if kind in CLUSTER_SCOPED:
            result.violations.append(f"{where} is cluster-scoped: a candidate may not create cluster-wide objects")
            continue
        if kind == "Service":
            if name == service:
                result.shared.append(where)  # the Service both versions serve: never applied
            else:
                result.violations.append(f"{where}: a candidate may not create or change Services (only the shared Service {service} may be in the output, and it is not applied)")
            continue
        if kind not in APPLIED_KINDS:
            result.violations.append(
                f"{where}: kind {kind} is not deployed with a candidate (only {', '.join(APPLIED_KINDS)}); remove it from the "
                "kustomize output and deploy it yourself, or extend APPLIED_KINDS in steps/candidate.py and the deploy Role"
            )
            continue
        if obj.get("apiVersion") != api_version(APPLIED_KINDS[kind]):
            result.violations.append(f"{where} has apiVersion {obj.get('apiVersion')}; a candidate's {kind} must be "
                                     f"{api_version(APPLIED_KINDS[kind])}")
            continue
        if kind == "Deployment":
            if name != expected:
                result.violations.append(
                    f"{where}: the only Deployment a candidate may have is {expected} (the base name {deployment} plus the version); "
                    "a second Deployment could replace the serving version"
                )
                continue
            result.deployment = obj
            result.violations += [f"{where}: {problem}" for problem in pod_security_baseline(obj)]
        elif kind == "Secret" and obj.get("type", "Opaque") not in ORDINARY_SECRET_TYPES:
            result.violations.append(f"{where} has type {obj.get('type')}; a candidate's Secrets may only be of the ordinary "
                                     f"types ({', '.join(sorted(ORDINARY_SECRET_TYPES))})")
            continue
        if kind != "Deployment" and not versioned(name, version):
            result.violations.append(
                f"{where} is not named with the version suffix -{version}: a candidate may only create its own objects "
                f"(name it e.g. {name}-VERSION, or deploy shared objects yourself and leave them out of the kustomize folder)"
            )
            continue
        result.applied.append(obj)
    if result.deployment is None:
        if not any(v.startswith("Deployment ") for v in result.violations):
            result.violations.append(f"no Deployment {expected} in the kustomize output; the config must define the app's Deployment")
        return result
    where = f"Deployment {expected}"
    own_secrets = {o["metadata"]["name"] for o in result.applied if o.get("kind") == "Secret"}
    result.violations += [f"{where}: {p}" for p in gained(result.deployment, baseline, own_secrets=own_secrets, allowance=allowance or Allowance())]
    if services is not None:
        result.violations += [f"{where}: {p}" for p in joins_other_services(result.deployment, baseline, services, service)]
    for obj in result.applied:
        if obj["kind"] == "HorizontalPodAutoscaler":
            result.violations += _autoscaler(obj, expected)
        elif obj["kind"] == "PodDisruptionBudget":
            result.violations += _disruption_budget(obj, result.deployment, baseline)
        obj["metadata"].setdefault("labels", {}).update({VERSION_LABEL: version, SERVICE_LABEL: service})
    result.applied.sort(key=lambda o: o.get("kind") == "Deployment")
    return result


def _autoscaler(hpa: dict, candidate: str) -> list[str]:
    """An autoscaler may only scale the candidate (kustomize's overlay retargets the app's)."""
    target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    wanted = {"apiVersion": "apps/v1", "kind": "Deployment", "name": candidate}
    if target != wanted:
        return [f"HorizontalPodAutoscaler {_name(hpa)} scales {target.get('kind')} {target.get('name')}; a candidate's "
                f"autoscaler may only scale its own Deployment {candidate} (scaleTargetRef {wanted})"]
    return []


def _disruption_budget(pdb: dict, candidate: dict, baseline: dict) -> list[str]:
    """A disruption budget may only cover the candidate's pods, never the serving version's."""
    selector = (pdb.get("spec") or {}).get("selector") or {}
    where = f"PodDisruptionBudget {_name(pdb)}"
    if set(selector) - {"matchLabels"}:
        return [f"{where}: its selector may only use matchLabels"]
    labels = selector.get("matchLabels") or {}
    if not selects(labels, pod_labels(candidate)):
        return [f"{where} does not select the candidate's pods (its selector must match their labels, version included)"]
    if selects(labels, pod_labels(baseline)):
        return [f"{where} also selects the serving version's pods; a candidate's budget may only cover its own pods"]
    return []


def _containers(pod: dict):
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod.get(key) or []:
            yield container.get("name", "?"), container


def pod_security_baseline(deployment: dict) -> list[str]:
    """The Pod Security Standards "baseline" checks (k8s.io/pod-security-admission v0.32
    policy/check_*.go) on the Deployment's pod template; one message per violation."""
    template = (deployment.get("spec") or {}).get("template") or {}
    pod = template.get("spec") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    problems = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):  # check_hostNamespaces.go
        if pod.get(key):
            problems.append(f"{key}: true is not allowed (Pod Security baseline: host namespaces)")
    for volume in pod.get("volumes") or []:  # check_hostPathVolumes.go
        if "hostPath" in volume:
            problems.append(f"volume {volume.get('name')} is a hostPath volume (Pod Security baseline)")
    pod_context = pod.get("securityContext") or {}
    contexts = [("the pod", pod_context)] + [(f"container {n}", c.get("securityContext") or {}) for n, c in _containers(pod)]
    for name, container in _containers(pod):
        context = container.get("securityContext") or {}
        if context.get("privileged"):  # check_privileged.go
            problems.append(f"container {name} is privileged (Pod Security baseline)")
        added = set((context.get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES
        if added:  # check_capabilities_baseline.go
            problems.append(f"container {name} adds capabilities {', '.join(sorted(added))} (Pod Security baseline allows only the default set)")
        if context.get("procMount") not in (None, "Default"):  # check_procMount.go
            problems.append(f"container {name} sets procMount {context['procMount']} (Pod Security baseline)")
        ports = [p.get("hostPort") for p in container.get("ports") or [] if p.get("hostPort")]
        if ports:  # check_hostPorts.go
            problems.append(f"container {name} uses hostPort {', '.join(map(str, ports))} (Pod Security baseline)")
    for who, context in contexts:
        if (context.get("windowsOptions") or {}).get("hostProcess"):  # check_windowsHostProcess.go
            problems.append(f"{who} sets windowsOptions.hostProcess (Pod Security baseline)")
        if (context.get("seccompProfile") or {}).get("type") == "Unconfined":  # check_seccompProfile_baseline.go
            problems.append(f"{who} sets seccompProfile Unconfined (Pod Security baseline)")
        if (context.get("appArmorProfile") or {}).get("type") == "Unconfined":  # check_appArmorProfile.go
            problems.append(f"{who} sets appArmorProfile Unconfined (Pod Security baseline)")
        selinux = context.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):  # check_seLinuxOptions.go
            problems.append(f"{who} sets seLinuxOptions other than an allowed type (Pod Security baseline)")
    for key, value in annotations.items():  # check_appArmorProfile.go (annotations)
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value in ("", "runtime/default") or value.startswith("localhost/")
        ):
            problems.append(f"annotation {key}: {value} is not allowed (Pod Security baseline: AppArmor)")
    unsafe = sorted({s.get("name") for s in pod_context.get("sysctls") or []} - SAFE_SYSCTLS)
    if unsafe:  # check_sysctls.go
        problems.append(f"sysctls {', '.join(unsafe)} are not allowed (Pod Security baseline)")
    return problems


def versioned(name: str, version: str) -> bool:
    """Named for this version: `<name>-<version>`, or that plus the hash suffix kustomize's
    generators add (`-<10 characters>`)."""
    return re.search(rf"-{re.escape(version)}(-[a-z0-9]{{10}})?\Z", name) is not None


def metadata_type_problems(objects: list) -> list[str]:
    """One line per rendered object whose kind, name, labels or annotations are not text:
    the API server would refuse it (422), e.g. a label `version: 1234567` that a bare short
    SHA became. Checked before anything else looks at the objects."""
    problems = []
    for i, obj in enumerate(objects):
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if not isinstance(meta, dict) or not isinstance(obj.get("kind"), str) or not isinstance(meta.get("name"), str):
            problems.append(f"object {i + 1} of the kustomize output has no text kind and metadata.name")
            continue
        for part in ("labels", "annotations"):
            values = meta.get(part) or {}
            if not isinstance(values, dict):
                problems.append(f"{obj['kind']} {meta['name']}: metadata.{part} is not a mapping")
                continue
            for key, value in values.items():
                if not isinstance(key, str) or not isinstance(value, str):
                    problems.append(f"{obj['kind']} {meta['name']}: {part[:-1]} {key}: {value!r} is not text "
                                    "(a bare number or true/false in YAML); quote it")
    return problems


# The parts of a Deployment this module and patch_kustomize read, with their types
# (k8s.io/api apps/v1, core/v1): {} a mapping, [x] a list of x. kustomize does not check
# types, so `spec: []` must be one line here, not a traceback in a check below.
_SECURITY_CONTEXT = {"capabilities": {"add": [str]}, "windowsOptions": {}, "seccompProfile": {}, "appArmorProfile": {},
                     "seLinuxOptions": {}, "sysctls": [{"name": str}]}
_CONTAINER = {"name": str, "image": str, "securityContext": _SECURITY_CONTEXT, "ports": [{}]}
DEPLOYMENT_SHAPE = {"spec": {"selector": {"matchLabels": {}}, "template": {
    "metadata": {"labels": {}, "annotations": {}},
    "spec": {"volumes": [{}], "securityContext": _SECURITY_CONTEXT,
             "initContainers": [_CONTAINER], "containers": [_CONTAINER], "ephemeralContainers": [_CONTAINER]},
}}}


def _misshapen(value, shape, where: str) -> str | None:
    """The first place value does not have the shape (None is allowed: it reads as empty)."""
    if value is None:
        return None
    if shape is str:
        return None if isinstance(value, str) else where
    if isinstance(shape, list):
        if not isinstance(value, list):
            return where
        return next((w for i, item in enumerate(value) if (w := _misshapen(item, shape[0], f"{where}[{i}]"))), None)
    if not isinstance(value, dict):
        return where
    return next((w for key, sub in shape.items() if (w := _misshapen(value.get(key), sub, f"{where}.{key}"))), None)


def shape_problems(objects: list[dict]) -> list[str]:
    """One line per Deployment whose pod template has a field of the wrong type."""
    return [f"Deployment {obj['metadata']['name']}: {where.lstrip('.')} has the wrong type; fix the manifest"
            for obj in objects if obj.get("kind") == "Deployment" and (where := _misshapen(obj, DEPLOYMENT_SHAPE, ""))]
