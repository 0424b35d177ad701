"""Report the rollout on the pushed commit as a GitHub commit status.

    python -m steps.commit_status --repo-url URL --commit SHA --namespace NS --run PIPELINERUN
        --phase start|end [--tasks-status STATUS] [--dashboard-url URL] [--context NAME] [--api-url URL]

`--phase start` (pending) when the run starts; `--phase end` at its end, with the state read from the run's
experiment: success when the candidate was promoted, failure when it was rolled back or
inconclusive, error when the run ended before its experiment did. The token comes from
$GITHUB_TOKEN (an optional Secret); without one, reporting is off. Nothing here fails the
rollout: GitHub errors and timeouts are logged and the step exits 0.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import requests

from . import iter8
from .common import StepError, log, parser, run
from .kube import Kube

DESCRIPTION_LIMIT = 140  # GitHub's limit for a status description
TIMEOUT = 10  # seconds for GitHub to answer
_GITHUB_PATH = re.compile(r"^(?:https?://[^/]+/|git@[^:]+:|ssh://git@[^/]+/)([\w.-]+)/([\w.-]+?)(?:\.git)?/?$")
_SHA = re.compile(r"^[0-9a-f]{40}$")


def repository(url: str) -> str | None:
    match = _GITHUB_PATH.fullmatch(url)
    return f"{match.group(1)}/{match.group(2)}" if match else None


def final_state(namespace: str, pipeline_run: str, tasks_status: str) -> tuple[str, str]:
    """(state, description) from the run's experiment, or from how its tasks ended."""
    try:
        kube = Kube()
        found = list(iter8.of_run(kube, namespace, pipeline_run))
    except StepError as err:
        return "error", f"outcome unknown: {err.message}"
    if not found:
        return "error", f"the run ended before its experiment started (tasks: {tasks_status})"
    adapter, exp = found[0]
    outcome = adapter.outcome(exp)
    summary = iter8.describe(outcome, adapter.targets(exp)[2])
    if not outcome.completed:
        return "error", f"the run ended before its experiment did (tasks: {tasks_status})"
    if outcome.result == iter8.PROMOTED and tasks_status in ("Succeeded", "Completed"):
        return "success", summary
    return "failure", summary


def post(api_url: str, repo: str, sha: str, token: str, payload: dict) -> None:
    url = f"{api_url.rstrip('/')}/repos/{repo}/statuses/{sha}"
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
               "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "iter8-tekton"}
    try:
        resp = requests.post(url, json=payload, headers=headers, timeout=TIMEOUT)
    except requests.RequestException as err:
        log(f"warning: could not set the commit status ({type(err).__name__}); the rollout goes on")
        return
    if resp.status_code >= 300:
        log(f"warning: GitHub answered {resp.status_code} to the commit status ({resp.text[:120]!r}); the rollout goes on")
        return
    log(f"commit status of {repo}@{sha[:7]}: {payload['state']}: {payload['description']}")


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("commit_status", "Set the GitHub commit status of the pushed commit.")
    p.add_argument("--repo-url", required=True)
    p.add_argument("--commit", required=True, help="the pushed commit's full SHA")
    p.add_argument("--namespace", required=True)
    p.add_argument("--run", required=True, help="this PipelineRun's name")
    p.add_argument("--phase", required=True, choices=["start", "end"], help="report pending (start) or the outcome (end)")
    p.add_argument("--tasks-status", default="", help="Tekton's $(tasks.status) (with --phase end)")
    p.add_argument("--dashboard-url", default="", help="the Tekton Dashboard, for a link to the run")
    p.add_argument("--context", default="iter8-tekton/canary")
    p.add_argument("--api-url", default="https://api.github.com")
    args = p.parse_args(argv)

    token = os.environ.get("GITHUB_TOKEN", "").strip()
    repo = repository(args.repo_url)
    if not token:
        log("commit status reporting is off: no GitHub token (create the github-token Secret to turn it on)")
        return 0
    if not repo or not _SHA.fullmatch(args.commit):
        log(f"commit status reporting is off: {args.repo_url} @ {args.commit} is not a GitHub repository and commit SHA")
        return 0
    if args.phase == "start":
        state, description = "pending", f"canary rollout {args.run} started"
    else:
        state, description = final_state(args.namespace, args.run, args.tasks_status)
    payload = {"state": state, "description": description[:DESCRIPTION_LIMIT], "context": args.context}
    if args.dashboard_url:
        payload["target_url"] = f"{args.dashboard_url.rstrip('/')}/#/namespaces/{args.namespace}/pipelineruns/{args.run}"
    post(args.api_url, repo, args.commit, token, payload)
    return 0


def entry() -> None:
    run(main)


if __name__ == "__main__":
    entry()
