"""Delete the version that lost the experiment, and mark the winner stable.

    python -m steps.cleanup --namespace NS (--experiment NAME | --run PIPELINERUN) [--dry-run] [--roll-back-unfinished SECONDS]

Reads the outcome from the experiment itself. Deletes only when the outcome is definite,
the winner's Deployment has all replicas ready, and Istio routes no traffic to the loser;
otherwise it deletes nothing and exits 1 with the reason. Deleting again is harmless.
With --roll-back-unfinished (the pipeline's `finally`, after a failure, timeout or
cancellation), a still-running experiment is first ended with all traffic on the baseline.
"""

from __future__ import annotations

import time
from typing import Sequence

from . import iter8
from .common import (
    SERVICE_LABEL,
    STABLE_LABEL,
    VERSION_LABEL,
    BadInput,
    RolloutFailed,
    add_results_dir,
    check_name,
    log,
    parser,
    run,
    write_results,
)
from .candidate import APPLIED_KINDS
from .kube import DEPLOYMENTS, Kind, Kube, follow
from .routing import deployment_weights, replicas_ready, service_deployments

# Besides the loser's Deployment, the kinds deleted by the loser's service and version
# labels: what deploy applies for a candidate.
VERSIONED_KINDS = tuple(APPLIED_KINDS.values())


def plan_deletions(kube: Kube, namespace: str, service: str, winner: dict, loser: dict | None,
                   loser_name: str) -> list[tuple[Kind, str]]:
    """The loser's versioned objects first, its Deployment last (so a re-run finds what is left).
    Selected by service and version: two services rolled out from one commit share the version."""
    if loser is None:
        return []
    plan: list[tuple[Kind, str]] = []
    version = (loser["metadata"].get("labels") or {}).get(VERSION_LABEL)
    if version and version != (winner["metadata"].get("labels") or {}).get(VERSION_LABEL):
        for kind in VERSIONED_KINDS:
            for obj in kube.items(kind, namespace, f"{SERVICE_LABEL}={service},{VERSION_LABEL}={version}"):
                if (kind, obj["metadata"]["name"]) != (DEPLOYMENTS, loser_name):
                    plan.append((kind, obj["metadata"]["name"]))
    plan.append((DEPLOYMENTS, loser_name))
    return plan


def mark_stable(kube: Kube, namespace: str, service: str, winner: str) -> None:
    """Label the winner stable (the next run's baseline) and no other Deployment of the service."""
    for d in service_deployments(kube, namespace, service):
        name, labels = d["metadata"]["name"], d["metadata"].get("labels") or {}
        if name != winner and labels.get(STABLE_LABEL) is not None:
            kube.patch(DEPLOYMENTS, namespace, name, {"metadata": {"labels": {STABLE_LABEL: None}}})
    kube.patch(DEPLOYMENTS, namespace, winner, {"metadata": {"labels": {STABLE_LABEL: "true"}}})


def roll_back_unfinished(kube: Kube, adapter, exp: dict, wait: float) -> dict:
    """End a running experiment with all traffic on the baseline; wait (watch) for iter8."""
    ns, name = exp["metadata"]["namespace"], exp["metadata"]["name"]
    log(f"experiment {name} has not finished; rolling it back: all traffic to the baseline")
    kube.patch(adapter.kind, ns, name, adapter.rollback_patch(exp))
    for current in follow(kube, adapter.kind, ns, name, time.monotonic() + wait):
        if current is None:
            raise RolloutFailed(f"experiment {name} was deleted while rolling back; deleting nothing")
        if adapter.outcome(current).completed:
            return current
    raise RolloutFailed(
        f"experiment {name} did not finish within {wait:g}s of the rollback (iter8 sends traffic to the baseline); "
        "deleting nothing, re-run cleanup later"
    )


def remove_loser(kube: Kube, adapter, exp: dict, dry_run: bool = False) -> tuple[str, list[str]]:
    """Delete the loser of a finished experiment when every guard holds; (winner, deleted names)."""
    ns, name = exp["metadata"]["namespace"], exp["metadata"]["name"]
    service, baseline, candidate = adapter.targets(exp)
    nothing = "deleting nothing"
    if baseline == candidate:
        raise BadInput(f"experiment {name} names {baseline} as both baseline and candidate; {nothing}")
    outcome = adapter.outcome(exp)
    if not outcome.completed:
        raise RolloutFailed(f"experiment {name} has not completed ({outcome.reason}); {nothing}")
    if not outcome.definite:
        raise RolloutFailed(f"experiment {name} has no clear winner ({outcome.reason}); {nothing}, decide by hand")
    winner_name, loser_name = outcome.winner, outcome.loser

    winner = kube.get(DEPLOYMENTS, ns, winner_name)
    if winner is None:
        raise RolloutFailed(f"the winner's Deployment {winner_name} does not exist; {nothing}")
    is_ready, how_many = replicas_ready(winner)
    if not is_ready:
        raise RolloutFailed(f"the winner {winner_name} is not ready ({how_many}); {nothing}, re-run cleanup once it is")
    loser = kube.get(DEPLOYMENTS, ns, loser_name)
    routed = deployment_weights(kube, ns, service, [d for d in (winner, loser) if d])
    if routed.get(loser_name, 0) > 0:
        raise RolloutFailed(f"Istio still routes traffic (weight {routed[loser_name]}) to the loser {loser_name}; {nothing}")

    plan = plan_deletions(kube, ns, service, winner, loser, loser_name)
    log(f"{outcome.result}: winner {winner_name} ({how_many}), loser {loser_name}")
    if dry_run:
        for kind, obj in plan:
            print(f"would delete {kind} {ns}/{obj}", flush=True)
        if not plan:
            print(f"nothing to delete: {loser_name} is already gone", flush=True)
        return winner_name, []
    for kind, obj in plan:
        log(f"{'deleted' if kube.delete(kind, ns, obj) else 'already gone:'} {kind} {ns}/{obj}")
    if not plan:
        log(f"{loser_name} is already gone")
    mark_stable(kube, ns, service, winner_name)
    log(f"marked {winner_name} as the stable version of {service}")
    return winner_name, [obj for _, obj in plan]


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("cleanup", "Delete the losing version of a finished iter8 experiment.")
    p.add_argument("--namespace", required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--experiment", help="the Experiment's name")
    which.add_argument("--run", help="clean up the experiments this PipelineRun created (none: nothing to do)")
    p.add_argument("--dry-run", action="store_true", help="print what would be deleted and change nothing")
    p.add_argument("--roll-back-unfinished", type=float, metavar="SECONDS", default=0,
                   help="if the experiment is still running, roll it back to the baseline and wait this long for it")
    p.add_argument("--api-version", choices=sorted(iter8.ADAPTERS), help="skip probing for the Experiment's version")
    add_results_dir(p)
    args = p.parse_args(argv)
    ns = check_name(args.namespace, "namespace")
    check_name(args.experiment or args.run, "experiment name" if args.experiment else "run")

    kube = Kube()
    if args.experiment:
        found = [iter8.locate(kube, ns, args.experiment, args.api_version)]
    else:
        found = list(iter8.of_run(kube, ns, args.run))
        if not found:
            log(f"{args.run} created no experiment: nothing to clean up")
    winners, deleted = [], []
    for adapter, exp in found:
        if args.roll_back_unfinished > 0 and not args.dry_run and not adapter.outcome(exp).completed:
            exp = roll_back_unfinished(kube, adapter, exp, args.roll_back_unfinished)
        winner, gone = remove_loser(kube, adapter, exp, args.dry_run)
        winners.append(winner)
        deleted += gone
    if not args.dry_run:
        write_results(args.results_dir, deleted=",".join(deleted), winner=",".join(winners))
    return 0


def entry() -> None:
    run(main)


if __name__ == "__main__":
    entry()
