"""Wait for the iter8 Experiment to finish and report who won.

    python -m steps.wait_completion --namespace NS --experiment NAME [--timeout SECONDS] [--stop-file FILE]

Follows the experiment with a Kubernetes watch, prints a line whenever its phase,
iteration, traffic split or assessment changes, and when it completes writes the Tekton
results outcome (promoted | rolled-back | inconclusive), winner, loser and summary, and
touches the stop file so the load generator stops. iter8 1.0 never leaves a Pause by itself:
a Pause over the targets is answered with a resume (a few times); any other (analytics,
routing, metrics) ends the wait at once with outcome paused and iter8's message, exit 1.
A Pause set by hand is waited out. On timeout: outcome timed-out, exit 3;
on SIGTERM (the task timed out or the run was cancelled) the same, with exit 143.
The timeout is a hard deadline, whatever the API server does with the watch.
"""

from __future__ import annotations

import time
from typing import Sequence

from . import iter8
from .common import (
    RolloutFailed,
    Stopped,
    TimedOut,
    add_results_dir,
    check_name,
    log,
    parser,
    run,
    touch,
    write_results,
)
from .kube import Kube, follow

PAUSED = "paused"  # the outcome when iter8 paused the experiment and will not go on by itself


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
    p.add_argument("--resume-attempts", type=int, default=3,
                   help="times to resume an experiment paused over its targets (default: %(default)s)")
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
    last, noted, resumes, resuming = None, None, 0, False
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
            pause = iter8.paused(current)
            if pause is None:
                resuming = False  # iter8 took the resume (or was never paused)
                continue
            if resuming:  # a resume was sent; iter8 has not acted on it yet
                continue
            if pause.cause == "user":
                if pause.message != noted:
                    log(f"paused by hand ({pause.message}); waiting for a resume "
                        f"(kubectl patch experiments.iter8.tools -n {args.namespace} {args.experiment} --type merge "
                        """-p '{"spec":{"manualOverride":{"action":"resume"}}}')""")
                    noted = pause.message
                continue
            if pause.resumable and resumes < args.resume_attempts:
                resumes += 1
                log(f"experiment paused ({pause.message}); resuming it ({resumes}/{args.resume_attempts})")
                kube.patch(adapter.kind, args.namespace, args.experiment, adapter.resume_patch())
                resuming = True
                continue
            # iter8 1.0 never leaves such a Pause by itself (experiment_controller.go proceed):
            # waiting on would only run into the timeout.
            summary = f"paused: {pause.message}"
            write_results(args.results_dir, outcome=PAUSED, winner="", loser="", summary=summary)
            raise RolloutFailed(f"experiment {args.namespace}/{args.experiment} is {summary}; iter8 does not resume it by "
                                "itself, so the run ends here (cleanup rolls it back); fix the cause, then push again")
    except Stopped as stopped:
        # Tekton reads no results of a task it has already failed, but a person reading the
        # pod's files (or a retry) sees why it ended.
        write_results(args.results_dir, outcome="timed-out", winner="", loser="", summary=stopped.message)
        raise
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
