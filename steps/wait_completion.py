"""Wait for the iter8 Experiment to finish and report who won.

    python -m steps.wait_completion --namespace NS --experiment NAME [--timeout SECONDS] [--stop-file FILE]

Follows the experiment with a Kubernetes watch, prints a line whenever its phase,
iteration, traffic split or assessment changes, and when it completes writes the Tekton
results outcome (promoted | rolled-back | inconclusive), winner, loser and summary, and
touches the stop file so the load generator stops. On timeout: outcome timed-out, exit 3.
"""

from __future__ import annotations

import time
from typing import Sequence

from . import iter8
from .common import RolloutFailed, TimedOut, add_results_dir, check_name, log, parser, run, touch, write_results
from .kube import Kube, follow


def format_progress(progress: iter8.Progress) -> str:
    parts = [progress.phase]
    if progress.iteration is not None:
        parts.append(f"iteration {progress.iteration}")
    if progress.traffic:
        parts.append("traffic " + ", ".join(f"{name} {pct}%" for name, pct in progress.traffic.items()))
    parts.append(progress.assessment)
    return "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("wait_completion", "Wait for an iter8 Experiment to complete and report the outcome.")
    p.add_argument("--namespace", required=True)
    p.add_argument("--experiment", required=True, help="the Experiment's name")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait (default: %(default)s)")
    p.add_argument("--stop-file", help="touched when waiting ends, to stop the load generator")
    p.add_argument("--api-version", choices=sorted(iter8.ADAPTERS), help="skip probing for the Experiment's version")
    add_results_dir(p)
    args = p.parse_args(argv)
    check_name(args.namespace, "namespace")
    check_name(args.experiment, "experiment name")
    if args.timeout <= 0:
        p.error("--timeout must be positive")

    deadline = time.monotonic() + args.timeout
    kube = Kube()
    adapter, exp = iter8.locate(kube, args.namespace, args.experiment, args.api_version)
    _, baseline, candidate = adapter.targets(exp)
    log(f"waiting for experiment {args.namespace}/{args.experiment}: baseline {baseline}, candidate {candidate}")
    last = None
    try:
        for current in follow(kube, adapter.kind, args.namespace, args.experiment, deadline, initial=exp):
            if current is None:
                write_results(args.results_dir, outcome=iter8.INCONCLUSIVE, winner="", loser="", summary="experiment deleted")
                raise RolloutFailed(f"experiment {args.namespace}/{args.experiment} was deleted while waiting; nothing was deleted")
            line = format_progress(adapter.progress(current))
            if line != last:
                log(line)
                last = line
            outcome = adapter.outcome(current)
            if outcome.completed:
                summary = iter8.describe(outcome, candidate)
                write_results(
                    args.results_dir, outcome=outcome.result, winner=outcome.winner, loser=outcome.loser, summary=summary
                )
                log(f"experiment completed: {summary}")
                if outcome.result != iter8.PROMOTED:
                    raise RolloutFailed(f"candidate {candidate} was not promoted: {summary}")
                return 0
    finally:
        touch(args.stop_file)
    write_results(args.results_dir, outcome="timed-out", winner="", loser="", summary="timed out")
    raise TimedOut(
        f"experiment {args.namespace}/{args.experiment} did not complete within {args.timeout:g}s; "
        "nothing was deleted; check the iter8 controller or raise --timeout"
    )


def entry() -> None:
    run(main)


if __name__ == "__main__":
    entry()
