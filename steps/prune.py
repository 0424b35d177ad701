"""Delete a service's old, finished PipelineRuns, keeping the newest.

    python -m steps.prune --namespace NS --service SVC --run PIPELINERUN [--keep N] [--dry-run]

Every run of a service carries the label iter8-tekton.dev/service (set when it takes the
service's rollout lock). This keeps the N newest runs of the service, PIPELINERUN (the one
running now) included, and deletes the other finished ones; running ones are never
touched. Deleting a PipelineRun deletes its TaskRuns, pods and the PVCs made from its
volumeClaimTemplate, which Tekton's default `coschedule: workspaces` mode otherwise keeps
until then (tektoncd/pipeline v1.15.0 pkg/reconciler/pipelinerun/affinity_assistant.go
cleanupAffinityAssistantsAndPVCs deletes them at completion only with the annotation
tekton.dev/auto-cleanup-pvc: "true").
"""

from __future__ import annotations

from typing import Sequence

from .common import SERVICE_LABEL, BadInput, check_name, log, parser, run
from .kube import Kube
from .lock import PIPELINE_RUNS, finished


def prunable(runs: list[dict], current: str, keep: int) -> list[dict]:
    """The finished runs beyond the newest `keep` (the current run counts as the newest)."""
    others = [r for r in runs if r["metadata"]["name"] != current]
    done = [r for r in others if finished(r)]
    done.sort(key=lambda r: ((r.get("status") or {}).get("completionTime") or "", r["metadata"].get("creationTimestamp") or ""),
              reverse=True)
    return done[max(0, keep - 1):]


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("prune", "Delete a service's old finished PipelineRuns, keeping the newest.")
    p.add_argument("--namespace", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--run", required=True, help="this PipelineRun (it counts as one of the kept runs)")
    p.add_argument("--keep", type=int, default=5, help="runs of the service to keep, this one included (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="print what would be deleted")
    args = p.parse_args(argv)
    for value, what in ((args.namespace, "namespace"), (args.service, "service"), (args.run, "run")):
        check_name(value, what)
    if args.keep < 1:
        raise BadInput(f"--keep {args.keep}: keep at least 1 run (this one)")

    kube = Kube()
    runs = kube.items(PIPELINE_RUNS, args.namespace, f"{SERVICE_LABEL}={args.service}")
    old = prunable(runs, args.run, args.keep)
    for pipeline_run in old:
        name = pipeline_run["metadata"]["name"]
        if args.dry_run:
            print(f"would delete PipelineRun {args.namespace}/{name}", flush=True)
        else:
            gone = kube.delete(PIPELINE_RUNS, args.namespace, name)
            log(f"{'deleted' if gone else 'already gone:'} PipelineRun {args.namespace}/{name}")
    log(f"{len(runs) - len(old)} runs of {args.service} kept (at most {args.keep}), {len(old)} pruned")
    return 0


def entry() -> None:
    run(main)


if __name__ == "__main__":
    entry()
