"""Create the iter8 Experiment that canary-tests the candidate against the serving version.

    python -m steps.create_experiment --namespace NS --service SVC --candidate DEPLOY
        [--baseline DEPLOY] [--template FILE] [--name NAME] [--dry-run]

Without --baseline, the baseline is the Deployment serving SVC now: the one a previous
rollout marked stable, else the one Istio routes all traffic to, else the only one the
Service selects. Re-running for the same candidate reuses the experiment.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import yaml

from . import iter8
from .common import (
    RUN_LABEL,
    BadInput,
    add_results_dir,
    check_name,
    log,
    parser,
    run,
    write_results,
)
from .kube import ApiError, Kube
from .routing import find_baseline

MANAGED_BY = {"app.kubernetes.io/managed-by": "iter8-tekton"}


def build_experiment(template: dict, name: str, namespace: str, service: str, baseline: str, candidate: str, run_name: str) -> dict:
    exp = template
    adapter = iter8.adapter_for(exp)
    metadata = exp.setdefault("metadata", {})
    metadata.pop("generateName", None)
    metadata.update(name=name, namespace=namespace)
    labels = metadata.setdefault("labels", {})
    labels.update(MANAGED_BY)
    if run_name:
        labels[RUN_LABEL] = run_name
    adapter.fill(exp, service, baseline, candidate)
    return exp


def create_or_reuse(kube: Kube, exp: dict, run_name: str) -> tuple[dict, bool]:
    """Create the experiment; if one with that name exists, reuse it when that is safe."""
    adapter = iter8.adapter_for(exp)
    meta = exp["metadata"]
    try:
        return kube.create(adapter.kind, meta["namespace"], exp), True
    except ApiError as err:
        if err.status == 404:
            raise BadInput(f"the cluster does not serve {exp['apiVersion']} Experiments; install iter8 or use a template of the installed version") from None
        if err.status != 409:
            raise BadInput(f"the API server rejected the experiment ({err}); fix the template") from None
    existing = kube.get(adapter.kind, meta["namespace"], meta["name"])
    if existing is None:  # deleted between our create and get: try once more
        return kube.create(adapter.kind, meta["namespace"], exp), True
    wanted, found = adapter.targets(exp), iter8.adapter_for(existing).targets(existing)
    if found != wanted:
        raise BadInput(
            f"experiment {meta['name']} already exists for service/baseline/candidate {'/'.join(found)}; "
            "pass another --name or delete it"
        )
    done = iter8.adapter_for(existing).outcome(existing)
    same_run = bool(run_name) and (existing["metadata"].get("labels") or {}).get(RUN_LABEL) == run_name
    if done.completed and not same_run:
        raise BadInput(
            f"experiment {meta['name']} already finished ({done.result}) in another run; "
            f"delete it (kubectl delete experiments.iter8.tools -n {meta['namespace']} {meta['name']}) to roll out again"
        )
    return existing, False


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("create_experiment", "Create the iter8 Experiment for a canary rollout.")
    p.add_argument("--namespace", required=True, help="the application's namespace")
    p.add_argument("--service", required=True, help="the Kubernetes Service the versions serve")
    p.add_argument("--candidate", required=True, help="the new version's Deployment name")
    p.add_argument("--baseline", help="the serving version's Deployment (default: found from the cluster)")
    p.add_argument("--template", help="Experiment YAML, iter8.tools/v1alpha2 or v1alpha1 (default: built-in v1alpha2)")
    p.add_argument("--name", help="the Experiment's name (default: the candidate's name)")
    p.add_argument("--run", default=os.environ.get("PIPELINE_RUN", ""), help="the PipelineRun creating it (default: $PIPELINE_RUN)")
    p.add_argument("--experiment-timeout", type=float, default=3600,
                   help="seconds the pipeline waits for the experiment; refuse a template that runs longer (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="print the Experiment and touch no cluster (needs --baseline)")
    add_results_dir(p)
    args = p.parse_args(argv)

    for value, what in ((args.namespace, "namespace"), (args.service, "service"), (args.candidate, "candidate")):
        check_name(value, what)
    name = check_name(args.name or args.candidate, "experiment name")
    template = iter8.load_template(args.template)
    # A template from the app's repository may only tune criteria, duration and traffic shifting.
    limits = iter8.TemplateLimits(args.experiment_timeout, max_interval=args.experiment_timeout, max_iterations=10**6)
    iter8.check_template(template, limits, args.template or "the built-in template")
    if args.baseline:
        check_name(args.baseline, "baseline")
    if args.baseline == args.candidate:
        raise BadInput(f"baseline and candidate are the same Deployment ({args.candidate}); a canary needs two versions")
    if args.dry_run and not args.baseline:
        raise BadInput("--dry-run touches no cluster, so it cannot find the baseline; pass --baseline too")

    kube = None if args.dry_run else Kube()
    baseline, how = args.baseline, "given with --baseline"
    if not baseline:
        serving, how = find_baseline(kube, args.namespace, args.service, args.candidate)
        baseline = serving["metadata"]["name"]

    exp = build_experiment(template, name, args.namespace, args.service, baseline, args.candidate, args.run)
    if args.dry_run:
        sys.stdout.write(yaml.safe_dump(exp, sort_keys=False))
        return 0
    log(f"baseline: {baseline} ({how}); candidate: {args.candidate}")
    exp, created = create_or_reuse(kube, exp, args.run)
    log(f"{'created' if created else 'reusing'} experiment {args.namespace}/{name} ({exp['apiVersion']})")
    write_results(args.results_dir, experiment=name, baseline=baseline)
    return 0


def entry() -> None:
    run(main)


if __name__ == "__main__":
    entry()
