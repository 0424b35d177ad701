"""Deploy the candidate: render it, check it, apply only its own objects, wait until it is
available, and get iter8 going if it paused while the candidate was starting.

    python -m steps.deploy --namespace NS --service SVC --deployment BASE --kustomize-dir DIR
        --version VER --image IMAGE [--experiment NAME] [--rollout-timeout SECONDS] [--check-only]

The manifests come from the pushed commit, so they are rendered (patch_kustomize) and
checked (candidate) here, right before they are applied: exactly one Deployment
BASE-VER, ConfigMaps, Secrets, an autoscaler and a disruption budget named with the
version, nothing else; no right the serving version's pods lack; the shared Service is
never applied, and no object of another service is overwritten. --check-only stops after
the check; with --baseline-manifest it reads no cluster.

iter8 1.0.1 checks the targets when the candidate Deployment is created and waits at most
15 s for it to be ready; a slower candidate leaves the experiment paused for good
(iter8-controller v1.0.1 pkg/controller/experiment/targets/helpers.go waitForState,
experiment_controller.go: Deployment updates never wake it). So once the candidate is
available, a Pause over the targets is answered with iter8's own `resume`, a few times.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import yaml

from . import install as installs
from . import iter8
from .candidate import APPLIED_KINDS, check
from .common import (
    SERVICE_LABEL,
    BadInput,
    Problems,
    RolloutFailed,
    TimedOut,
    add_results_dir,
    check_name,
    check_version,
    log,
    parser,
    run,
    write_results,
)
from .kube import DEPLOYMENTS, SERVICES, ApiError, Kube, follow
from .patch_kustomize import parse_image, render
from .privileges import Allowance
from .routing import find_baseline, replicas_ready


def field_manager(service: str) -> str:
    """One server-side apply manager per service: applying over another service's object
    conflicts (409) instead of silently taking it over."""
    return f"iter8-tekton-{service}"
RESUME_WAIT = 30.0  # seconds for iter8 to detect the targets after a resume (it polls each for up to 15 s)


def rendered_candidate(kustomize_dir: Path, version: str, image: str, *, deployment: str, namespace: str, service: str,
                       baseline: dict, services: list[dict] | None, allowance: Allowance):
    """Render and check against the serving Deployment; Problems (one line each) when the
    candidate is not allowed."""
    mode, objects = render(kustomize_dir, version, image)
    candidate = check(objects, deployment=deployment, version=version, namespace=namespace, service=service,
                      baseline=baseline, services=services, allowance=allowance)
    if candidate.violations:
        raise Problems(candidate.violations, f"the kustomize output of {kustomize_dir} is not a deployable candidate "
                       f"({len(candidate.violations)} problem(s) above); nothing was applied")
    log(f"rendered {len(objects)} objects ({mode} mode) from {kustomize_dir}")
    return candidate


def others(kube: Kube, namespace: str, service: str, objects: list[dict]) -> list[str]:
    """The objects to apply that exist already and belong to another service (or to nobody
    this pipeline knows): applying would overwrite them."""
    problems = []
    for obj in objects:
        existing = kube.get(APPLIED_KINDS[obj["kind"]], namespace, obj["metadata"]["name"])
        owner = ((existing or {}).get("metadata", {}).get("labels") or {}).get(SERVICE_LABEL)
        if existing is not None and owner != service:
            problems.append(f"{obj['kind']} {obj['metadata']['name']} exists already and belongs to "
                            f"{f'service {owner}' if owner else 'no service this pipeline deployed'}; rename it in the app's "
                            "kustomize folder so that it cannot be another's")
    return problems


def apply(kube: Kube, namespace: str, service: str, objects: list[dict]) -> None:
    problems = others(kube, namespace, service, objects)
    if problems:
        raise Problems(problems, f"{len(problems)} object(s) of the candidate would overwrite another's; nothing was applied")
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
        try:
            kube.apply(APPLIED_KINDS[obj["kind"]], namespace, obj, field_manager(service))
        except ApiError as err:
            if err.status != 409:
                raise
            raise BadInput(f"applying {obj['kind']} {obj['metadata']['name']} conflicts with another manager ({err.detail}); "
                           "another service or someone by hand owns it: rename it in the app's kustomize folder") from None
    log(f"applied {len(objects)} objects (server-side apply, field manager {field_manager(service)})")


def availability(deployment: dict) -> tuple[bool, str]:
    """Available as `kubectl rollout status` sees it (and iter8: availableReplicas and the
    Available condition), and a line about where it is."""
    status, meta = deployment.get("status") or {}, deployment["metadata"]
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    stalled = conditions.get("Progressing", {})
    if stalled.get("status") == "False" and stalled.get("reason") == "ProgressDeadlineExceeded":
        raise RolloutFailed(f"Deployment {meta['name']} did not progress: {stalled.get('message', 'ProgressDeadlineExceeded')}; "
                            "check its pods (kubectl describe) for image pull or crash errors")
    ready, line = replicas_ready(deployment)
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    available = status.get("availableReplicas", 0)
    done = ready and available >= wanted and conditions.get("Available", {}).get("status") == "True"
    return done, f"{line}, {available} available"


def wait_available(kube: Kube, namespace: str, name: str, timeout: float) -> None:
    deadline, last = time.monotonic() + timeout, None
    for current in follow(kube, DEPLOYMENTS, namespace, name, deadline):
        if current is None:
            raise RolloutFailed(f"Deployment {namespace}/{name} was deleted while it was starting")
        done, line = availability(current)
        if line != last:
            log(f"{name}: {line}")
            last = line
        if done:
            log(f"{name} is available")
            return
    raise TimedOut(f"Deployment {namespace}/{name} was not available within {timeout:g}s; check its pods "
                   "(kubectl describe) or raise rollout-timeout")


def resume_if_paused(kube: Kube, namespace: str, experiment: str, attempts: int) -> None:
    """Answer a Pause over the targets with iter8's resume, up to `attempts` times."""
    adapter, exp = iter8.locate(kube, namespace, experiment)
    for attempt in range(1, attempts + 1):
        pause = iter8.paused(exp)
        if pause is None:
            log(f"experiment {experiment} is {(exp.get('status') or {}).get('phase', 'Pending')}")
            return
        if not pause.resumable:
            log(f"experiment {experiment} is paused ({pause.message}); wait-completion will report it")
            return
        log(f"experiment {experiment} paused while the candidate was starting ({pause.message}); resuming it ({attempt}/{attempts})")
        kube.patch(adapter.kind, namespace, experiment, adapter.resume_patch())
        exp = _after_resume(kube, adapter, namespace, experiment, exp)
    pause = iter8.paused(exp)
    if pause and pause.resumable:
        raise RolloutFailed(f"experiment {experiment} is still paused after {attempts} resumes ({pause.message}); "
                            "check the Service's pods and the baseline: iter8 needs all of them ready")


def _after_resume(kube: Kube, adapter, namespace: str, experiment: str, before: dict) -> dict:
    """The experiment once iter8 has acted on the resume: targets found, or paused again.
    iter8 first leaves the Pause (ActionResume), then detects the targets again."""
    exp, left_pause = before, False
    for current in follow(kube, adapter.kind, namespace, experiment, time.monotonic() + RESUME_WAIT):
        if current is None:
            raise RolloutFailed(f"experiment {namespace}/{experiment} was deleted")
        exp = current
        if iter8.targets_found(exp) or adapter.outcome(exp).completed:
            return exp
        if iter8.paused(exp) is None:
            left_pause = True
        elif left_pause:
            return exp
    return exp


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("deploy", "Render, check and apply the candidate; wait until it is available.")
    p.add_argument("--namespace", required=True, help="the run's (and the app's) namespace")
    p.add_argument("--service", required=True, help="the Service both versions serve (never applied)")
    p.add_argument("--deployment", required=True, help="the app's Deployment base name; the candidate is BASE-VERSION")
    p.add_argument("--kustomize-dir", required=True, type=Path, help="the app's kustomize folder (not modified)")
    p.add_argument("--version", required=True, help="the candidate's version, e.g. the short commit SHA")
    p.add_argument("--image", required=True, help="the candidate's image, by digest")
    p.add_argument("--baseline", default="", help="the serving Deployment (create_experiment's result; default: found as it finds it)")
    p.add_argument("--experiment", help="the experiment to resume if iter8 paused it while the candidate was starting")
    p.add_argument("--rollout-timeout", type=float, default=600, help="seconds for the candidate to become available (default: %(default)s)")
    p.add_argument("--resume-attempts", type=int, default=3, help="resumes of a paused experiment at most (default: %(default)s)")
    p.add_argument("--check-only", action="store_true", help="render and check, apply nothing")
    p.add_argument("--baseline-manifest", type=Path,
                   help="with --check-only: compare with this Deployment manifest and read no cluster (other Services are not checked)")
    installs.add_arguments(p)
    add_results_dir(p)
    args = p.parse_args(argv)

    for value, what in ((args.namespace, "namespace"), (args.service, "service"), (args.deployment, "deployment")):
        check_name(value, what)
    version = check_version(args.version)
    parse_image(args.image)
    name = check_name(f"{args.deployment}-{version}", "candidate Deployment name")
    if args.rollout_timeout <= 0 or args.resume_attempts < 0:
        raise BadInput("--rollout-timeout must be positive and --resume-attempts not negative")
    if args.baseline_manifest and not args.check_only:
        raise BadInput("--baseline-manifest is only for --check-only; a deploy compares with the serving version in the cluster")

    kube = None if args.baseline_manifest else Kube()
    if kube is None:
        baseline, services = serving_manifest(args.baseline_manifest), None
        install = installs.read(args.namespace, file=args.install_settings_file) if args.install_settings_file else installs.Install()
    else:
        install = installs.read(args.namespace, args.install_settings, args.install_settings_file, kube)
        baseline = find_baseline(kube, args.namespace, args.service, name, args.baseline or None)[0]
        services = kube.items(SERVICES, args.namespace)
    candidate = rendered_candidate(args.kustomize_dir, version, args.image, deployment=args.deployment, namespace=args.namespace,
                                   service=args.service, baseline=baseline, services=services,
                                   allowance=install.allowance(args.service))
    log(f"compared with the serving version {baseline['metadata']['name']}")
    for where in candidate.shared:
        log(f"left alone: {where} (shared between the versions; the pipeline never applies it)")
    for obj in candidate.applied:
        log(f"{'would apply' if args.check_only else 'applying'} {obj['kind']} {obj['metadata']['name']}")
    if args.check_only:
        write_results(args.results_dir, deployment=name)
        return 0

    apply(kube, args.namespace, args.service, candidate.applied)
    write_results(args.results_dir, deployment=name)
    wait_available(kube, args.namespace, name, args.rollout_timeout)
    if args.experiment:
        resume_if_paused(kube, args.namespace, check_name(args.experiment, "experiment name"), args.resume_attempts)
    return 0


def serving_manifest(path: Path) -> dict:
    """A Deployment manifest the user gives to compare with (--check-only, no cluster)."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise BadInput(f"cannot read the Deployment in {path}: {err}; pass a Deployment manifest") from None
    if not isinstance(loaded, dict) or loaded.get("kind") != "Deployment" or not (loaded.get("metadata") or {}).get("name"):
        raise BadInput(f"{path} is not a Deployment manifest; pass the serving version's Deployment (kubectl get deployment -o yaml)")
    return loaded


def entry() -> None:
    run(main)


if __name__ == "__main__":
    entry()
