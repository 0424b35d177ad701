"""The iter8 Experiment API versions, behind one interface.

Everything that differs between `iter8.tools/v1alpha1` (the seed's 2019 shape and the
v0.2 shape) and `iter8.tools/v1alpha2` (iter8 1.0) lives here: where the targets are
in the spec, how completion, the winner and the traffic split are read from status.
See ../shared/reference/iter8-status.md (our notes on the upstream status fields).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from . import untrusted
from .common import LABEL_PREFIX, RUN_LABEL, BadInput, Problems, metadata_problems, parse_duration
from .kube import ApiError, Kind

GROUP = "iter8.tools"
PROMOTED, ROLLED_BACK, INCONCLUSIVE = "promoted", "rolled-back", "inconclusive"


@dataclass
class Progress:
    """What changes while an experiment runs (printed by wait_completion)."""

    phase: str
    iteration: int | None
    traffic: dict[str, int]  # deployment name -> percent
    assessment: str


@dataclass
class Outcome:
    completed: bool
    result: str | None = None  # PROMOTED, ROLLED_BACK or INCONCLUSIVE once completed
    winner: str = ""
    loser: str = ""
    reason: str = ""
    traffic: dict[str, int] = field(default_factory=dict)

    @property
    def definite(self) -> bool:
        return self.completed and self.result in (PROMOTED, ROLLED_BACK) and self.winner != self.loser


@dataclass
class Pause:
    """Why iter8 paused an experiment. iter8 1.0.1 never leaves a Pause by itself: only a
    resume, a terminate, or a target Deployment/Service being created or deleted wakes it
    (iter8-controller v1.0.1 pkg/controller/experiment/experiment_controller.go proceed)."""

    cause: str  # "targets", "analytics", "routing", "metrics" or "user"
    message: str  # iter8's own words, e.g. "TargetsError: Candidate Not Ready"

    @property
    def resumable(self) -> bool:
        """Targets that were not ready: a resume re-runs iter8's target detection."""
        return self.cause == "targets"


# The condition each Pause cause sets to False (iter8-controller v1.0.1
# pkg/apis/iter8/v1alpha2/status.go Mark*Error; v0.2 pkg/apis/iter8/v1alpha1 the same names).
PAUSE_CONDITIONS = {
    "TargetsProvided": "targets",
    "AnalyticsServiceNormal": "analytics",
    "RoutingRulesReady": "routing",
    "MetricsSynced": "metrics",
}


def paused(exp: dict) -> Pause | None:
    """The Pause, if the experiment is in one (phase Pause), with its cause and iter8's message."""
    status = exp.get("status") or {}
    if status.get("phase") != "Pause":
        return None
    conditions = _conditions(exp)
    for kind, cause in PAUSE_CONDITIONS.items():
        condition = conditions.get(kind) or {}
        if condition.get("status") == "False":
            reason = condition.get("reason") or kind
            detail = condition.get("message") or ""
            return Pause(cause, f"{reason}: {detail}" if detail else reason)
    return Pause("user", status.get("message") or "paused by a manual override")


def targets_found(exp: dict) -> bool:
    return _true(exp, "TargetsProvided")


def _conditions(exp: dict) -> dict[str, dict]:
    return {c.get("type"): c for c in (exp.get("status") or {}).get("conditions") or []}


def _true(exp: dict, condition: str) -> bool:
    return _conditions(exp).get(condition, {}).get("status") == "True"


def _decide(baseline: str, candidate: str, to: str | None, reason: str, traffic: dict[str, int]) -> Outcome:
    if to == candidate:
        return Outcome(True, PROMOTED, candidate, baseline, reason, traffic)
    if to == baseline:
        return Outcome(True, ROLLED_BACK, baseline, candidate, reason, traffic)
    return Outcome(True, INCONCLUSIVE, "", "", reason or "traffic is split between the versions", traffic)


def _full(traffic: dict[str, int]) -> str | None:
    """The version that has all the traffic, if one has."""
    return next((name for name, pct in traffic.items() if pct == 100), None)


class V1Alpha2:
    """iter8 1.0: spec.service.{name,baseline,candidates}; no success flag, a winner instead."""

    api_version = f"{GROUP}/v1alpha2"
    kind = Kind(GROUP, "v1alpha2", "experiments")

    def fill(self, exp: dict, service: str, baseline: str, candidate: str) -> None:
        svc = exp["spec"].setdefault("service", {})
        svc.update(name=service, baseline=baseline, candidates=[candidate])

    def resume_patch(self) -> dict:
        """iter8 1.0's way out of a Pause: it clears the override and detects the targets again
        (experiment_controller.go proceed, recorder.go markActionResume)."""
        return {"spec": {"manualOverride": {"action": "resume"}}}

    def rollback_patch(self, exp: dict) -> dict:
        """End the experiment now with all traffic on the baseline (iter8's manual override)."""
        _, baseline, candidate = self.targets(exp)
        return {"spec": {"manualOverride": {"action": "terminate", "trafficSplit": {baseline: 100, candidate: 0}}}}

    def targets(self, exp: dict) -> tuple[str, str, str]:
        svc = (exp.get("spec") or {}).get("service") or {}
        candidates = svc.get("candidates") or [""]
        return svc.get("name", ""), svc.get("baseline", ""), candidates[0]

    def traffic(self, exp: dict) -> dict[str, int]:
        assessment = (exp.get("status") or {}).get("assessment") or {}
        versions = [assessment.get("baseline") or {}] + list(assessment.get("candidates") or [])
        return {v["name"]: int(v["weight"]) for v in versions if v.get("name") and v.get("weight") is not None}

    def progress(self, exp: dict) -> Progress:
        status = exp.get("status") or {}
        winner = (status.get("assessment") or {}).get("winner") or {}
        if winner.get("winning_version_found"):
            summary = f"winner {winner.get('name')}"
        elif winner.get("name"):
            summary = f"best so far {winner.get('name')}"
        else:
            summary = "no assessment yet"
        if winner.get("probability_of_winning_for_best_version") is not None:
            summary += f" (p={float(winner['probability_of_winning_for_best_version']):.2f})"
        breached = self._breaches(exp)
        if breached:
            summary += "; candidate breaches " + ", ".join(breached)
        return Progress(status.get("phase", "Pending"), status.get("currentIteration"), self.traffic(exp), summary)

    def _breaches(self, exp: dict) -> list[str]:
        candidates = ((exp.get("status") or {}).get("assessment") or {}).get("candidates") or []
        return sorted(
            {
                a.get("metric_id", "?")
                for c in candidates
                for a in c.get("criterion_assessments") or []
                if (a.get("threshold_assessment") or {}).get("threshold_breached")
            }
        )

    def outcome(self, exp: dict) -> Outcome:
        status = exp.get("status") or {}
        if not (status.get("phase") == "Completed" or _true(exp, "ExperimentCompleted")):
            return Outcome(False, reason=f"phase {status.get('phase', 'Pending')}")
        _, baseline, candidate = self.targets(exp)
        message = status.get("message") or ""
        winner = (status.get("assessment") or {}).get("winner") or {}
        found = winner.get("name") if winner.get("winning_version_found") else None
        traffic = self.traffic(exp)
        breached = self._breaches(exp)
        why = ("criteria failed: " + ", ".join(breached)) if breached else "candidate was not the winner"
        if "(Abort)" in message:
            why = "experiment was aborted"
        if "Traffic To Baseline" in message:
            return _decide(baseline, candidate, baseline, why, traffic)
        if "Traffic To Winner" in message:
            # With no winner found, iter8 sends the traffic back to the baseline.
            to = found if found in (baseline, candidate) else baseline
            return _decide(baseline, candidate, to, "all criteria met" if to == candidate else why, traffic)
        # keep_last, a user-specified split, or a message we do not know: go by the numbers.
        split = ((exp.get("spec") or {}).get("manualOverride") or {}).get("trafficSplit") or traffic
        to = _full({k: int(v) for k, v in split.items()})
        return _decide(baseline, candidate, to, "all traffic on the candidate" if to == candidate else why, traffic)


class V1Alpha1:
    """Before iter8 1.0: spec.targetService.{name,baseline,candidate}, a success condition or phase."""

    api_version = f"{GROUP}/v1alpha1"
    kind = Kind(GROUP, "v1alpha1", "experiments")

    def fill(self, exp: dict, service: str, baseline: str, candidate: str) -> None:
        target = exp["spec"].setdefault("targetService", {})
        target.setdefault("apiVersion", "v1")
        target.update(name=service, baseline=baseline, candidate=candidate)

    def resume_patch(self) -> dict:
        """v0.2 reads the top-level `action` (pause, resume, override_*)."""
        return {"action": "resume"}

    def rollback_patch(self, exp: dict) -> dict:
        """Fail the experiment now, which sends the traffic back to the baseline: v0.2 reads
        the top-level `action`, the 2019 controller `spec.assessment`."""
        return {"action": "override_failure", "spec": {"assessment": "override_failure"}}

    def targets(self, exp: dict) -> tuple[str, str, str]:
        target = (exp.get("spec") or {}).get("targetService") or {}
        return target.get("name", ""), target.get("baseline", ""), target.get("candidate", "")

    def traffic(self, exp: dict) -> dict[str, int]:
        split = (exp.get("status") or {}).get("trafficSplitPercentage") or {}
        _, baseline, candidate = self.targets(exp)
        return {name: int(split[key]) for key, name in (("baseline", baseline), ("candidate", candidate)) if key in split}

    def progress(self, exp: dict) -> Progress:
        status = exp.get("status") or {}
        assessment = status.get("assessment") or {}
        parts = list(assessment.get("conclusions") or [])
        if "all_success_criteria_met" in assessment:
            parts.insert(0, f"all success criteria met: {str(assessment['all_success_criteria_met']).lower()}")
        return Progress(
            status.get("phase", "Pending"),
            status.get("currentIteration"),
            self.traffic(exp),
            "; ".join(parts) or "no assessment yet",
        )

    def outcome(self, exp: dict) -> Outcome:
        status = exp.get("status") or {}
        phase = status.get("phase")
        if not (phase in ("Succeeded", "Failed", "Completed") or _true(exp, "ExperimentCompleted")):
            return Outcome(False, reason=f"phase {phase or 'Pending'}")
        _, baseline, candidate = self.targets(exp)
        # The 2019 shape records success in the phase, v0.2 in a condition.
        succeeded = phase == "Succeeded" or _true(exp, "ExperimentSucceeded")
        conclusions = (status.get("assessment") or {}).get("conclusions") or []
        why = "all success criteria met" if succeeded else (
            "; ".join(conclusions) or status.get("message") or "not all success criteria met"
        )
        traffic = self.traffic(exp)
        if traffic:
            return _decide(baseline, candidate, _full(traffic), why, traffic)
        on_success = ((exp.get("spec") or {}).get("trafficControl") or {}).get("onSuccess", "candidate")
        if not succeeded:
            return _decide(baseline, candidate, baseline, why, traffic)
        return _decide(baseline, candidate, {"candidate": candidate, "baseline": baseline}.get(on_success), why, traffic)


ADAPTERS = {a.api_version: a for a in (V1Alpha2(), V1Alpha1())}
DEFAULT = V1Alpha2.api_version


def adapter_for(exp: dict) -> V1Alpha2 | V1Alpha1:
    api_version = exp.get("apiVersion")
    if api_version not in ADAPTERS:
        raise BadInput(
            f"unknown Experiment apiVersion {api_version!r}: use one of {', '.join(sorted(ADAPTERS))}"
        )
    return ADAPTERS[api_version]


def label_values(service: str, deployment: str, namespace: str) -> tuple[str, str]:
    """The label values iter8 1.0.1 builds from our names, which may be 63 characters at most
    (pkg/controller/experiment/routing/router/istio/router.go, util/util.go): the router's
    `<service>.<namespace>.svc.cluster.local` and the experiment's
    `<deployment>-<short sha>.<namespace>` (the candidate's name, a 7-character SHA)."""
    return f"{service}.{namespace}.svc.cluster.local", f"{deployment}-0000000.{namespace}"


# What an Experiment template from the app's repository may set (anything else is refused):
# the criteria, how long it runs and how traffic shifts, and labels and annotations (iter8
# 1.0.1 reads none of its own: its notifier only matches labels to choose whom to tell,
# pkg/notifier/notifier.go). The pipeline sets the rest: the name, namespace, its labels and
# the targets. A tree of allowed keys; True allows any value there.
# iter8 1.0.1 fields: pkg/apis/iter8/v1alpha2/experiment_types.go ExperimentSpec.
TEMPLATE_METADATA = {"name": True, "labels": True, "annotations": True}
ALLOWED_V1ALPHA2 = {
    "apiVersion": True, "kind": True, "metadata": TEMPLATE_METADATA,
    "spec": {
        "service": {"name": True, "baseline": True, "candidates": True},  # filled in by the pipeline
        "criteria": True,  # checked item by item below
        "duration": {"interval": True, "maxIterations": True},
        "trafficControl": {"strategy": True, "maxIncrement": True, "onTermination": True},
    },
}
CRITERION_V1ALPHA2 = {"metric": True, "threshold": {"type": True, "value": True, "cutoffTrafficOnViolation": True}, "isReward": True}
# iter8 v0.2 / the 2019 controller: pkg/apis/iter8/v1alpha1/experiment_types.go.
ALLOWED_V1ALPHA1 = {
    "apiVersion": True, "kind": True, "metadata": TEMPLATE_METADATA,
    "spec": {
        "targetService": {"name": True, "apiVersion": True, "baseline": True, "candidate": True},
        "trafficControl": {"strategy": True, "interval": True, "maxIterations": True, "trafficStepSize": True,
                           "maxTrafficPercentage": True, "onSuccess": True},
        "analysis": {"analyticsService": True, "successCriteria": True, "reward": True},
    },
}
# iter8's own analytics Service; a template may name it, not another endpoint.
ANALYTICS_SERVICES = {"http://iter8-analytics.iter8", "http://iter8-analytics.iter8:8080",
                      "http://iter8-analytics.iter8.svc.cluster.local:8080"}


@dataclass
class TemplateLimits:
    """The install's bounds on a template (the ConfigMap canary-rollout-settings)."""

    experiment_timeout: float = 3600  # the pipeline waits this long; iter8 must finish before
    max_interval: float = 300
    max_iterations: int = 100
    max_increment: int = 100


def _unknown_fields(node, allowed, path: str):
    if allowed is True or not isinstance(node, dict):
        return
    for key, value in node.items():
        where = f"{path}.{key}" if path else key
        if key not in allowed:
            yield where
        else:
            yield from _unknown_fields(value, allowed[key], where)


def check_template(exp: dict, limits: TemplateLimits, source: str) -> None:
    """Problems, one line each, unless the template only tunes what it may: criteria, duration
    and traffic shifting, within the install's bounds."""
    adapter = adapter_for(exp)
    allowed = ALLOWED_V1ALPHA2 if adapter is ADAPTERS[V1Alpha2.api_version] else ALLOWED_V1ALPHA1
    problems = [f"{source}: {field} may not be set by the app's template (the pipeline sets it, or it is not allowed)"
                for field in _unknown_fields(exp, allowed, "")]
    metadata = exp.get("metadata") if isinstance(exp.get("metadata"), dict) else {}
    problems += [f"{source}: {p}" for p in metadata_problems(metadata, "metadata")]
    for part in ("labels", "annotations"):
        values = metadata.get(part) if isinstance(metadata.get(part), dict) else {}
        ours = sorted(k for k in values if isinstance(k, str) and k.startswith(LABEL_PREFIX))
        problems += [f"{source}: metadata.{part}[{key}] may not be set by the app's template: the {LABEL_PREFIX} keys are "
                     "the pipeline's" for key in ours]
    spec = exp.get("spec") or {}
    if allowed is ALLOWED_V1ALPHA2:
        for i, criterion in enumerate(spec.get("criteria") or []):
            problems += [f"{source}: spec.criteria[{i}].{f} may not be set" for f in _unknown_fields(criterion, CRITERION_V1ALPHA2, "")]
        duration = spec.get("duration") or {}
        interval_text, iterations = duration.get("interval", "30s"), duration.get("maxIterations", 100)
        increment = (spec.get("trafficControl") or {}).get("maxIncrement", 2)
        if not isinstance(increment, int) or isinstance(increment, bool) or not 1 <= increment <= limits.max_increment:
            problems.append(f"{source}: spec.trafficControl.maxIncrement {increment!r} must be a whole number from 1 to {limits.max_increment}")
    else:
        traffic = spec.get("trafficControl") or {}
        interval_text, iterations = traffic.get("interval", "30s"), traffic.get("maxIterations", 100)
        endpoint = (spec.get("analysis") or {}).get("analyticsService")
        if endpoint is not None and (not isinstance(endpoint, str) or endpoint.rstrip("/") not in ANALYTICS_SERVICES):
            problems.append(f"{source}: spec.analysis.analyticsService {endpoint!r} is not iter8's analytics service; leave it out")
    interval = parse_duration(str(interval_text))
    if interval is None or not 1 <= interval <= limits.max_interval:
        problems.append(f"{source}: the interval {interval_text!r} must be a duration from 1s to {limits.max_interval:g}s")
    if not isinstance(iterations, int) or isinstance(iterations, bool) or not 1 <= iterations <= limits.max_iterations:
        problems.append(f"{source}: maxIterations {iterations!r} must be a whole number from 1 to {limits.max_iterations}")
    elif interval is not None and interval * (iterations + 1) > limits.experiment_timeout:
        # iter8 1.0.1 runs maxIterations + 1 analyses (pkg/controller/experiment/kubernetes.go syncKubernetes).
        problems.append(f"{source}: the experiment runs up to {interval * (iterations + 1):g}s ({iterations}+1 iterations of "
                        f"{interval_text}), longer than the pipeline waits ({limits.experiment_timeout:g}s); shorten it or "
                        "raise the experiment timeout")
    if problems:
        raise Problems(problems, f"the experiment template {source} sets what it may not ({len(problems)} problem(s) above)")


def default_template() -> dict:
    text = resources.files(__package__).joinpath("templates/experiment-v1alpha2.yaml").read_text()
    return yaml.safe_load(text)


def _not_a_mapping(node: dict, allowed: dict, path: str) -> str | None:
    """The first place the policy tree has a mapping and the template something else."""
    for key, sub in allowed.items():
        if isinstance(sub, dict) and key in node:
            if not isinstance(node[key], dict):
                return f"{path}{key}"
            if found := _not_a_mapping(node[key], sub, f"{path}{key}."):
                return found
    return None


def load_template(path: str | None) -> dict:
    """The Experiment template from a YAML file (or the built-in v1alpha2 one), read as
    untrusted (steps.untrusted: bounded, strict YAML) and shaped as the policy expects."""
    if not path:
        return default_template()
    exp = untrusted.load_mapping(Path(path), f"experiment template {path}", "one Experiment")
    if exp.get("kind") != "Experiment":
        raise BadInput(f"experiment template {path} has kind {exp.get('kind')!r}; it must be an iter8 Experiment")
    if not isinstance(exp.get("apiVersion"), str):
        raise BadInput(f"experiment template {path} has no apiVersion; use one of {', '.join(sorted(ADAPTERS))}")
    adapter = adapter_for(exp)
    if not isinstance(exp.get("spec"), dict):
        raise BadInput(f"experiment template {path} has no spec mapping; start from steps/templates/experiment-v1alpha2.yaml")
    allowed = ALLOWED_V1ALPHA2 if adapter is ADAPTERS[V1Alpha2.api_version] else ALLOWED_V1ALPHA1
    if where := _not_a_mapping(exp, allowed, ""):
        raise BadInput(f"experiment template {path}: {where} must be a mapping; start from steps/templates/experiment-v1alpha2.yaml")
    criteria = exp["spec"].get("criteria", [])
    if not (isinstance(criteria, list) and all(isinstance(c, dict) for c in criteria)):
        raise BadInput(f"experiment template {path}: spec.criteria must be a list of mappings; start from steps/templates/experiment-v1alpha2.yaml")
    return copy.deepcopy(exp)


def locate(kube, namespace: str, name: str, api_version: str | None = None) -> tuple[V1Alpha2 | V1Alpha1, dict]:
    """The Experiment by name, trying each served iter8 version (v1alpha2 first)."""
    adapters = [ADAPTERS[api_version]] if api_version else list(ADAPTERS.values())
    for adapter in adapters:
        exp = kube.get(adapter.kind, namespace, name)  # None for 404: missing, or the version is not served
        if exp is not None:
            return adapter, exp
    raise BadInput(f"experiment {namespace}/{name} does not exist; check --experiment and --namespace")


def of_run(kube, namespace: str, pipeline_run: str):
    """(adapter, experiment) for each experiment a PipelineRun created, in every served version."""
    for adapter in ADAPTERS.values():
        try:
            for exp in kube.items(adapter.kind, namespace, f"{RUN_LABEL}={pipeline_run}"):
                yield adapter, exp
        except ApiError as err:
            if err.status != 404:  # 404: the cluster does not serve this version
                raise


def describe(outcome: Outcome, candidate: str) -> str:
    """One line for people: 'promoted reviews-3f2a1bc, 100% traffic' or 'rolled back: ...'."""
    if not outcome.completed:
        return f"not finished ({outcome.reason})"
    if outcome.result == PROMOTED:
        return f"promoted {candidate}, {outcome.traffic.get(candidate, 100)}% traffic"
    if outcome.result == ROLLED_BACK:
        return f"rolled back: {outcome.reason}"
    return f"inconclusive: {outcome.reason}"
