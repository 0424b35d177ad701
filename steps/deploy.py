"""Deploy the candidate: render it, check it, apply only its own objects, wait until it is
available, and get iter8 going if it paused while the candidate was starting.

    python -m steps.deploy --namespace NS --service SVC --deployment BASE --kustomize-dir DIR
        --version VER --image IMAGE [--experiment NAME] [--rollout-timeout SECONDS] [--check-only]

The manifests come from the pushed commit, so they are rendered (patch_kustomize) and
checked (candidate) here, right before they are applied: exactly one Deployment
BASE-VER, ConfigMaps and Secrets named with the version, nothing else; the shared Service
is never applied. --check-only stops after the check and needs no cluster.

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

from . import iter8
from .candidate import APPLIED_KINDS, check
from .common import (
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
from .kube import DEPLOYMENTS, Kube, follow
from .patch_kustomize import parse_image, render
from .routing import replicas_ready

FIELD_MANAGER = "iter8-tekton"
RESUME_WAIT = 30.0  # seconds for iter8 to detect the targets after a resume (it polls each for up to 15 s)


def rendered_candidate(kustomize_dir: Path, version: str, image: str, *, deployment: str, namespace: str, service: str):
    """Render and check; Problems (one line each) when the candidate is not allowed."""
    mode, objects = render(kustomize_dir, version, image)
    candidate = check(objects, deployment=deployment, version=version, namespace=namespace, service=service)
    if candidate.violations:
        raise Problems(candidate.violations, f"the kustomize output of {kustomize_dir} is not a deployable candidate "
                       f"({len(candidate.violations)} problem(s) above); nothing was applied")
    log(f"rendered {len(objects)} objects ({mode} mode) from {kustomize_dir}")
    return candidate


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
    p.add_argument("--experiment", help="the experiment to resume if iter8 paused it while the candidate was starting")
    p.add_argument("--rollout-timeout", type=float, default=600, help="seconds for the candidate to become available (default: %(default)s)")
    p.add_argument("--resume-attempts", type=int, default=3, help="resumes of a paused experiment at most (default: %(default)s)")
    p.add_argument("--check-only", action="store_true", help="render and check, apply nothing, touch no cluster")
    add_results_dir(p)
    args = p.parse_args(argv)

    for value, what in ((args.namespace, "namespace"), (args.service, "service"), (args.deployment, "deployment")):
        check_name(value, what)
    version = check_version(args.version)
    parse_image(args.image)
    name = check_name(f"{args.deployment}-{version}", "candidate Deployment name")
    if args.rollout_timeout <= 0 or args.resume_attempts < 0:
        raise BadInput("--rollout-timeout must be positive and --resume-attempts not negative")
    candidate = rendered_candidate(args.kustomize_dir, version, args.image, deployment=args.deployment,
                                   namespace=args.namespace, service=args.service)
    for where in candidate.shared:
        log(f"left alone: {where} (shared between the versions; the pipeline never applies it)")
    for obj in candidate.applied:
        log(f"{'would apply' if args.check_only else 'applying'} {obj['kind']} {obj['metadata']['name']}")
    if args.check_only:
        write_results(args.results_dir, deployment=name)
        return 0

    kube = Kube()
    for obj in candidate.applied:
        obj["metadata"]["namespace"] = args.namespace
        kube.apply(APPLIED_KINDS[obj["kind"]], args.namespace, obj, FIELD_MANAGER)
    log(f"applied {len(candidate.applied)} objects (server-side apply, field manager {FIELD_MANAGER})")
    write_results(args.results_dir, deployment=name)
    wait_available(kube, args.namespace, name, args.rollout_timeout)
    if args.experiment:
        resume_if_paused(kube, args.namespace, check_name(args.experiment, "experiment name"), args.resume_attempts)
    return 0


def entry() -> None:
    run(main)


if __name__ == "__main__":
    entry()
