"""One rollout at a time per service: a coordination.k8s.io Lease held by the PipelineRun.

    python -m steps.lock acquire --namespace NS --service SVC --run PIPELINERUN
        [--policy wait|supersede] [--timeout SECONDS] [--poll SECONDS] [--rollback-wait SECONDS]
    python -m steps.lock release --namespace NS --service SVC --run PIPELINERUN

The Lease `canary-rollout-<service>` (in the app's namespace, where the PipelineRuns run)
names its holder. A second run for the same service waits until the lock is free
(policy `wait`), or cancels the holder, rolls its experiment back to the baseline and
takes over (policy `supersede`). A holder whose PipelineRun is gone or finished is stale:
its unfinished experiment is rolled back and the lock taken over, so a crashed run never
blocks the service. Runs for different services use different Leases.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Sequence

from . import iter8
from .cleanup import remove_loser, roll_back_unfinished
from .common import SERVICE_LABEL, RolloutFailed, StepError, TimedOut, check_name, log, parser, run
from .kube import ApiError, Kind, Kube

LEASES = Kind("coordination.k8s.io", "v1", "leases")
PIPELINE_RUNS = Kind("tekton.dev", "v1", "pipelineruns")
LEASE_SECONDS = 4 * 3600  # informative only: liveness is the holder PipelineRun's state


def lease_name(service: str) -> str:
    return f"canary-rollout-{service}"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def finished(pipeline_run: dict) -> bool:
    """Tekton's Succeeded condition is True or False once a run has ended, for any reason."""
    return any(c.get("type") == "Succeeded" and c.get("status") in ("True", "False")
               for c in (pipeline_run.get("status") or {}).get("conditions") or [])


def run_state(kube: Kube, namespace: str, name: str) -> str:
    """'running', 'finished' or 'gone' for a PipelineRun."""
    pipeline_run = kube.get(PIPELINE_RUNS, namespace, name)
    if pipeline_run is None:
        return "gone"
    return "finished" if finished(pipeline_run) else "running"


def label_run(kube: Kube, namespace: str, me: str, service: str) -> None:
    """Mark this PipelineRun as one of the service's (prune keeps the newest of them)."""
    if kube.get(PIPELINE_RUNS, namespace, me) is None:
        log(f"PipelineRun {me} not found; it is not labelled with its service (a run by hand?)")
        return
    kube.patch(PIPELINE_RUNS, namespace, me, {"metadata": {"labels": {SERVICE_LABEL: service}}})


def roll_back_run(kube: Kube, namespace: str, pipeline_run: str, wait: float) -> None:
    """Make sure another run's experiments are over, with the baseline serving; remove their losers."""
    for adapter, exp in iter8.of_run(kube, namespace, pipeline_run):
        if not adapter.outcome(exp).completed:
            exp = roll_back_unfinished(kube, adapter, exp, wait)
        try:
            remove_loser(kube, adapter, exp)
        except RolloutFailed as why:  # the baseline serves; what is left is that run's to clean up
            log(f"left {exp['metadata']['name']} as it is: {why.message}")


def supersede(kube: Kube, namespace: str, holder: str, wait: float) -> None:
    log(f"superseding {holder}: cancelling it (its finally tasks still run) and rolling its candidate back")
    kube.patch(PIPELINE_RUNS, namespace, holder, {"spec": {"status": "CancelledRunFinally"}})
    roll_back_run(kube, namespace, holder, wait)


def acquire(kube: Kube, namespace: str, service: str, me: str, policy: str, timeout: float, poll: float, wait: float) -> None:
    name = lease_name(service)
    deadline = time.monotonic() + timeout
    announced = None
    while True:
        lease = kube.get(LEASES, namespace, name)
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "iter8-tekton"}},
                    "spec": {"holderIdentity": me, "leaseDurationSeconds": LEASE_SECONDS, "acquireTime": _now(), "renewTime": _now()}}
            try:
                kube.create(LEASES, namespace, body)
                log(f"{me} holds the rollout lock of {service}")
                return
            except ApiError as err:
                if err.status != 409:
                    raise
                continue  # another run created it first: look again
        holder = (lease.get("spec") or {}).get("holderIdentity") or ""
        if holder == me:
            log(f"{me} already holds the rollout lock of {service}")
            return
        if holder:
            state = run_state(kube, namespace, holder)
            if state == "running" and policy == "wait":
                if time.monotonic() > deadline:
                    raise TimedOut(f"{holder} still holds the rollout lock of {service} after {timeout:g}s; "
                                   "try again later or start the run with policy supersede")
                if announced != holder:
                    log(f"waiting: {holder} is rolling out {service}")
                    announced = holder
                time.sleep(poll)
                continue
            if state == "running":
                supersede(kube, namespace, holder, wait)
            else:
                log(f"taking over the rollout lock of {service} from {holder}, which is {state}")
                roll_back_run(kube, namespace, holder, wait)
        spec = lease.setdefault("spec", {})
        spec.update(holderIdentity=me, acquireTime=_now(), renewTime=_now(), leaseDurationSeconds=LEASE_SECONDS,
                    leaseTransitions=int(spec.get("leaseTransitions") or 0) + 1)
        try:
            kube.replace(LEASES, namespace, name, lease)  # carries resourceVersion: a race gives 409
            log(f"{me} holds the rollout lock of {service}")
            return
        except ApiError as err:
            if err.status != 409:
                raise


def release(kube: Kube, namespace: str, service: str, me: str) -> None:
    name = lease_name(service)
    for _ in range(kube.retry.attempts):
        lease = kube.get(LEASES, namespace, name)
        holder = ((lease or {}).get("spec") or {}).get("holderIdentity") or ""
        if holder != me:
            log(f"the rollout lock of {service} is held by {holder or 'nobody'}, not {me}: leaving it")
            return
        lease["spec"].update(holderIdentity=None, renewTime=_now())
        try:
            kube.replace(LEASES, namespace, name, lease)
            log(f"{me} released the rollout lock of {service}")
            return
        except ApiError as err:
            if err.status != 409:
                raise
    raise StepError(f"the rollout lock of {service} kept changing while {me} released it; re-run release")


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("lock", "Take or release the per-service rollout lock.")
    p.add_argument("action", choices=["acquire", "release"])
    p.add_argument("--namespace", required=True, help="the app's namespace, where the PipelineRuns run")
    p.add_argument("--service", required=True)
    p.add_argument("--run", required=True, help="this PipelineRun's name")
    p.add_argument("--policy", choices=["wait", "supersede"], default="wait",
                   help="when another run holds the lock: wait for it, or cancel it and take over")
    p.add_argument("--timeout", type=float, default=7000, help="seconds to wait for the lock (default: %(default)s)")
    p.add_argument("--poll", type=float, default=10, help="seconds between looks at a held lock (default: %(default)s)")
    p.add_argument("--rollback-wait", type=float, default=180,
                   help="seconds to wait for an older run's experiment to finish rolling back (default: %(default)s)")
    args = p.parse_args(argv)
    for value, what in ((args.namespace, "namespace"), (args.service, "service"), (args.run, "run")):
        check_name(value, what)
    kube = Kube()
    if args.action == "acquire":
        label_run(kube, args.namespace, args.run, args.service)
        acquire(kube, args.namespace, args.service, args.run, args.policy, args.timeout, args.poll, args.rollback_wait)
    else:
        release(kube, args.namespace, args.service, args.run)
    return 0


def entry() -> None:
    run(main)


if __name__ == "__main__":
    entry()
