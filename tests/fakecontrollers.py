"""Stand-ins for the controllers a rollout depends on, acting on the fake API server.

- `Deployments` plays Kubernetes' Deployment controller: a new Deployment becomes
  available after a delay (per name), with the status fields `kubectl rollout status`
  and iter8 read; or only once `available_when(deployment)` holds (real pods take
  seconds: a test that needs the wait to be watched says so, not a delay).
- `Iter8` plays iter8-controller v1.0.1 (iter8-tools/iter8-controller, tag v1.0.1) for
  iter8.tools/v1alpha2 experiments, as its code does it, not as its docs say:
  * target detection (pkg/controller/experiment/reconcile.go detectTargets): the Service,
    then the baseline, then the candidate; a missing one fails at once, an existing one is
    polled every 3 s for up to 15 s (targets/helpers.go waitForState); a failure sets
    phase Pause, TargetsProvided False, reason TargetsError, "<X> Not Ready"; success sets
    TargetsProvided True and, as the first iteration follows in the same status update
    (kubernetes.go syncKubernetes), phase Progressing;
  * what wakes a paused experiment (experiment_controller.go add, proceed): only the
    creation or deletion of a target Deployment, a `resume` (cleared from the spec, then
    detection again) or a `terminate`; Deployment updates never do;
  * every iteration, analytics recommends a split from status.analysisState, which the
    API server prunes with v1.0.1's own CRD (a bare `type: object`): then each candidate
    gets at most maxIncrement, from 100% baseline, every time (iter8-analytics v1.0.1
    experiment.py apply_max_increment);
  * an analytics error sets phase Pause, AnalyticsServiceNormal False (for good);
  * analytics judges the requests Prometheus counted since the experiment started
    (iter8-analytics v1.0.1 iter8_analytics/api/experiment.py populate_metric_values); with
    none, the baseline's bias wins (add_baseline_bias). The bundle's iterations are 30 s
    apart (steps/templates), so load is running long before the last one; the tests' iterations are 50 ms apart, so
    with `traffic` (the app's request count) an iteration is analysed only once requests
    arrived since the previous one: the experiment lasts as long as load needs to start;
  * maxIterations + 1 analyses, then completion (reconcile.go completeExperiment): the
    messages "Traffic To Winner", "Traffic To Baseline", "Traffic User Specified (Abort)";
  * its own VirtualService and DestinationRule, `<svc>.<ns>.svc.cluster.local.iter8router`,
    with subsets iter8-baseline and iter8-candidate-0 (routing/router/istio/router.go).
  Status writes go through the fake API's CRD pruning and validation (custom_resource_schemas).
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

V2 = "iter8.tools/v1alpha2"
ISTIO = "networking.istio.io/v1alpha3"
DETECT_WINDOW, DETECT_POLL = 15.0, 3.0  # targets/helpers.go: timeout, interval


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _condition(kind: str, status: str, reason: str = "", message: str = "") -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": _now()}


class _Loop:
    def __init__(self, api, tick: float = 0.02):
        self.api, self.tick = api, tick
        self.errors: list[str] = []  # what went wrong in the loop (e.g. a status write the CRD refused)
        self.rounds = 0  # reconcile passes done: a test waits for a pass to have seen a change
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.wait(self.tick):
            try:
                self.step()
            except Exception as err:  # noqa: BLE001 - reported to the test, the loop goes on
                self.errors.append(f"{type(err).__name__}: {err}")
            self.rounds += 1

    def objects(self, plural: str) -> list[dict]:
        with self.api.lock:
            return [copy.deepcopy(o) for k, o in self.api.objects.items() if k[2] == plural]

    def step(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self):
        self.stopping.set()
        self.thread.join()


class Deployments(_Loop):
    """A Deployment is available `ready_after[name]` (default `default`) seconds after it
    appears, and not before `available_when(deployment)` holds; what tests put with a status
    already is left alone."""

    def __init__(self, api, default: float = 0.0, ready_after: dict[str, float] | None = None,
                 available_when: Callable[[dict], object] = lambda deployment: True):
        self.default, self.ready_after, self.available_when = default, ready_after or {}, available_when
        self.seen: dict[tuple, float] = {}
        super().__init__(api)

    def step(self):
        for dep in self.objects("deployments"):
            meta, status = dep["metadata"], dep.get("status") or {}
            key = (meta["namespace"], meta["name"], meta.get("generation", 1))
            if status.get("observedGeneration", 0) >= meta.get("generation", 1):
                continue
            first = self.seen.setdefault(key, time.monotonic())
            if time.monotonic() - first < self.ready_after.get(meta["name"], self.default) or not self.available_when(dep):
                continue
            replicas = dep["spec"].get("replicas", 1)
            self.api.patch_status("apps/v1", "deployments", meta["namespace"], meta["name"], {
                "observedGeneration": meta.get("generation", 1), "replicas": replicas, "updatedReplicas": replicas,
                "readyReplicas": replicas, "availableReplicas": replicas,
                "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                               {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
            })


@dataclass
class _State:
    registered: set[str] = field(default_factory=set)  # target Deployment names
    refresh: bool = False
    iterations: int = 0
    last: float = 0.0
    requests: int = 0  # the app's request count at the last analysis


class Iter8(_Loop):
    """iter8-controller v1.0.1 for v1alpha2 experiments (see the module docstring).

    `judge(exp)` returns the winner of an iteration's analysis: "candidate", "baseline" or
    None (no winner yet); `analytics_error`, when set, is what analytics answers instead.
    `iteration` overrides spec.duration.interval (seconds) to keep tests short; `traffic`,
    when given, returns the requests the app has served so far: an iteration waits for new ones.
    A resume is taken only once `resume_when(exp)` holds (a test that needs the wait for it
    to be watched says so).
    """

    def __init__(self, api, judge: Callable[[dict], str | None] = lambda exp: "candidate", iteration: float = 0.05,
                 window: float = DETECT_WINDOW, poll: float = DETECT_POLL, traffic: Callable[[], int] | None = None,
                 resume_when: Callable[[dict], object] = lambda exp: True):
        self.judge, self.iteration, self.window, self.poll, self.traffic = judge, iteration, window, poll, traffic
        self.resume_when = resume_when
        self.analytics_error: str | None = None
        self.paused_at: dict[tuple, float] = {}  # (namespace, name) -> when analytics paused it
        self.gave_up: set[tuple] = set()  # (namespace, experiment) whose detection polled a target for the whole window
        self.states: dict[tuple, _State] = {}
        self.known_deployments: set[tuple] | None = None
        super().__init__(api)

    # --- the reconcile loop ---------------------------------------------------------------
    def step(self):
        deployments = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in self.objects("deployments")}
        if self.known_deployments is None:
            self.known_deployments = deployments
        changed = (deployments - self.known_deployments) | (self.known_deployments - deployments)
        self.known_deployments = deployments
        for exp in self.objects("experiments"):
            if exp["apiVersion"] != V2:
                continue
            meta, status = exp["metadata"], exp.get("status") or {}
            key = (meta["namespace"], meta["name"])
            state = self.states.setdefault(key, _State())
            if status.get("phase") == "Completed":
                continue
            if any((ns, name) in changed for ns, name in ((key[0], n) for n in state.registered)):
                state.refresh = True  # experiment_controller.go: Deployment create/delete events only
            if not status.get("initTimestamp"):
                self.init(exp, state)
                continue
            self.reconcile(exp, state)

    def init(self, exp: dict, state: _State) -> None:
        """api/v1alpha2/status.go InitStatus, then a first reconcile."""
        svc = exp["spec"]["service"]
        state.registered = {svc["baseline"], *svc["candidates"]}
        self.write(exp, {
            "phase": "Progressing", "initTimestamp": _now(), "currentIteration": 0, "analysisState": {},
            "experimentType": "Canary", "effectiveHosts": [svc.get("name", "")],
            "conditions": [_condition(t, "Unknown") for t in
                           ("TargetsProvided", "AnalyticsServiceNormal", "MetricsSynced", "ExperimentCompleted", "RoutingRulesReady")],
            "assessment": {"baseline": self.version("", svc["baseline"], 0), "candidates": [self.version("", c, 0) for c in svc["candidates"]]},
        })
        state.refresh = True

    def reconcile(self, exp: dict, state: _State) -> None:
        ns, name = exp["metadata"]["namespace"], exp["metadata"]["name"]
        override = (exp["spec"].get("manualOverride") or {})
        status = exp["status"]
        if override.get("action") == "terminate":
            return self.complete(exp, terminate=override.get("trafficSplit") or {})
        if override.get("action") == "resume" and self.resume_when(exp):
            spec = copy.deepcopy(exp["spec"])
            del spec["manualOverride"]  # the controller clears pause and resume from the spec
            with self.api.lock:
                stored = self.api.objects[(("iter8.tools", "v1alpha2", "experiments", ns, name))]
                new = copy.deepcopy(stored)
                new["spec"] = spec
                self.api._store((("iter8.tools", "v1alpha2", "experiments", ns, name)), new, "MODIFIED", stored)
            exp = self.fresh(exp)
            self.write(exp, {"phase": "Progressing", "message": "ActionResume",
                             "conditions": self.conditions(exp, _condition("ExperimentCompleted", "False", "ActionResume"))})
            state.refresh = True
            exp = self.fresh(exp)
        elif status.get("phase") == "Pause" and not state.refresh:
            return  # proceed(): a paused experiment stays paused
        if state.refresh:
            state.refresh = False
            if not self.detect(exp):
                return
            exp = self.fresh(exp)
        if self.condition(exp, "TargetsProvided") != "True":
            return
        if time.monotonic() - state.last < self.iteration:
            return
        state.last = time.monotonic()
        self.iterate(exp, state)

    # --- target detection ------------------------------------------------------------------
    def detect(self, exp: dict) -> bool:
        """reconcile.go detectTargets: Service, baseline, candidate, each polled up to 15 s."""
        ns, svc = exp["metadata"]["namespace"], exp["spec"]["service"]
        found_before = self.condition(exp, "TargetsProvided") == "True"
        for what, ready in (("Service", lambda: self.service_ready(ns, svc["name"])),
                            ("Baseline", lambda: self.deployment_ready(ns, svc["baseline"])),
                            ("Candidate", lambda: self.deployment_ready(ns, svc["candidates"][0]))):
            found = self.wait_for(ready)
            if not found:
                message = f"{what} {'Deleted' if found_before else 'Not Ready'}"
                self.write(exp, {"phase": "Pause", "message": f"TargetsError: {message}",
                                 "conditions": self.conditions(exp, _condition("TargetsProvided", "False", "TargetsError", message))})
                if found is False:  # the window ran out (not a Get error)
                    self.gave_up.add((ns, exp["metadata"]["name"]))
                return False
        self.route(exp, 100, 0)
        exp = self.fresh(exp)
        conditions = self.conditions(exp, _condition("TargetsProvided", "True", "TargetsFound"))
        # kubernetes.go syncKubernetes: the first iteration (processIteration: MarkIterationUpdate,
        # phase Progressing) follows in the same reconcile and one status update, so a Pause is
        # never seen with the targets found.
        self.write(exp, {"phase": "Progressing", "message": "RoutingRulesReady", "conditions": [
            c if c["type"] != "RoutingRulesReady" else _condition("RoutingRulesReady", "True", "RoutingRulesReady") for c in conditions]})
        return True

    def wait_for(self, ready: Callable[[], bool | None]) -> bool | None:
        """helpers.go waitForState: PollImmediate(3 s, 15 s); a Get error ends it at once (None)."""
        deadline = time.monotonic() + self.window
        while True:
            answer = ready()
            if answer is None:
                return None
            if answer:
                return True
            if time.monotonic() + self.poll > deadline or self.stopping.wait(self.poll):
                return False

    def deployment_ready(self, ns: str, name: str) -> bool | None:
        dep = self.api.get("apps/v1", "deployments", ns, name)
        if dep is None:
            return None
        status = dep.get("status") or {}
        available = any(c.get("type") == "Available" and c.get("status") == "True" for c in status.get("conditions") or [])
        return status.get("availableReplicas", 0) > 0 and status.get("replicas") == status.get("readyReplicas") and available

    def service_ready(self, ns: str, name: str) -> bool | None:
        """Every pod the Service selects is Running and Ready: here, every selected Deployment is ready."""
        svc = self.api.get("v1", "services", ns, name)
        if svc is None:
            return None
        selector = (svc.get("spec") or {}).get("selector") or {}
        for dep in self.objects("deployments"):
            labels = dep["spec"]["template"]["metadata"].get("labels") or {}
            if dep["metadata"]["namespace"] == ns and all(labels.get(k) == v for k, v in selector.items()):
                status = dep.get("status") or {}
                if status.get("readyReplicas", 0) < dep["spec"].get("replicas", 1):
                    return False
        return True

    # --- iterations and completion ------------------------------------------------------------
    def iterate(self, exp: dict, state: _State) -> None:
        """reconcile.go processIteration with analytics' answer."""
        if self.analytics_error:
            self.write(exp, {"phase": "Pause", "message": f"AnalyticsServiceError: {self.analytics_error}", "conditions": self.conditions(
                exp, _condition("AnalyticsServiceNormal", "False", "AnalyticsServiceError", self.analytics_error))})
            self.paused_at.setdefault((exp["metadata"]["namespace"], exp["metadata"]["name"]), time.monotonic())
            return
        if self.traffic is not None:  # no request since the last analysis: wait for load (module docstring)
            requests = self.traffic()
            if requests <= state.requests:
                return
            state.requests = requests
        spec, status = exp["spec"], exp["status"]
        max_increment = (spec.get("trafficControl") or {}).get("maxIncrement", 2)
        last = (status.get("analysisState") or {}).get("traffic_split_recommendation") or {}
        previous = last.get("candidate-0", 0)  # pruned by the API server with v1.0.1's CRD: always 0
        weight = min(100, previous + max_increment)
        winner = self.judge(exp)
        best = {"candidate": "candidate-0", "baseline": "baseline"}.get(winner or "", "")
        svc = spec["service"]
        names = {"baseline": svc["baseline"], "candidate-0": svc["candidates"][0]}
        if winner == "baseline":
            weight = 0
        self.route(exp, 100 - weight, weight)
        exp = self.fresh(exp)
        self.write(exp, {
            "phase": "Progressing", "currentIteration": state.iterations, "startTimestamp": status.get("startTimestamp") or _now(),
            "lastUpdateTime": _now(), "message": f"IterationUpdate: Iteration {state.iterations}/{self.max_iterations(exp)} completed",
            "analysisState": {"traffic_split_recommendation": {"baseline": 100 - weight, "candidate-0": weight}},
            "assessment": {
                "baseline": self.version("baseline", svc["baseline"], 100 - weight),
                "candidates": [self.version("candidate-0", svc["candidates"][0], weight)],
                "winner": {"winning_version_found": winner is not None,
                           **({"current_best_version": best, "name": names[best], "probability_of_winning_for_best_version": 0.97} if best else {})},
            },
            "conditions": self.conditions(exp, _condition("ExperimentCompleted", "False", "IterationUpdate"),
                                          _condition("AnalyticsServiceNormal", "True", "AnalyticsServiceRunning")),
        })
        state.iterations += 1
        if state.iterations > self.max_iterations(exp):  # maxIterations + 1 analyses (kubernetes.go syncKubernetes)
            self.complete(self.fresh(exp))

    def complete(self, exp: dict, terminate: dict | None = None) -> None:
        """reconcile.go completeExperiment and completeStatusMessage."""
        svc, status = exp["spec"]["service"], exp["status"]
        winner = (status.get("assessment") or {}).get("winner") or {}
        on_termination = (exp["spec"].get("trafficControl") or {}).get("onTermination", "to_winner")
        if terminate is not None:
            if terminate:
                weights, text = (terminate.get(svc["baseline"], 0), terminate.get(svc["candidates"][0], 0)), "Traffic User Specified"
            else:
                weights, text = (100, 0), "Traffic To Baseline"
            text += " (Abort)"
        elif on_termination == "to_winner" and winner.get("winning_version_found"):
            to_candidate = winner.get("current_best_version") == "candidate-0"
            weights, text = ((0, 100) if to_candidate else (100, 0)), "Traffic To Winner"
        elif on_termination == "keep_last":
            weights, text = (status["assessment"]["baseline"]["weight"], status["assessment"]["candidates"][0]["weight"]), "Keep Last Traffic"
        else:
            weights, text = (100, 0), "Traffic To Baseline"
        if self.condition(exp, "RoutingRulesReady") != "True":
            text = " (Abort)" if terminate is not None else ""
        else:
            self.route(exp, *weights, final=True)
        exp = self.fresh(exp)
        assessment = copy.deepcopy(exp["status"]["assessment"])
        assessment["baseline"]["weight"], assessment["candidates"][0]["weight"] = weights
        self.write(exp, {"phase": "Completed", "message": f"ExperimentCompleted: {text}" if text else "ExperimentCompleted",
                         "analysisState": {}, "endTimestamp": _now(), "assessment": assessment,
                         "conditions": self.conditions(exp, _condition("ExperimentCompleted", "True", "ExperimentCompleted", text))})

    # --- Istio routing ----------------------------------------------------------------------
    def route(self, exp: dict, baseline: int, candidate: int, final: bool = False) -> None:
        """router.go: VS and DR <svc>.<ns>.svc.cluster.local.iter8router, subsets from the
        Deployments' pod-template labels."""
        ns, svc = exp["metadata"]["namespace"], exp["spec"]["service"]
        host = f"{svc['name']}.{ns}.svc.cluster.local"
        labels = {"iter8-tools/router": host, "iter8-tools/role": "stable" if final else "progressing"}
        if not final:
            labels.update({"iter8-tools/experiment": f"{exp['metadata']['name']}.{ns}", "iter8-tools/init": "True"})
        subsets = []
        for subset, deployment in (("iter8-baseline", svc["baseline"]), ("iter8-candidate-0", svc["candidates"][0])):
            dep = self.api.get("apps/v1", "deployments", ns, deployment) or {"spec": {"template": {"metadata": {"labels": {}}}}}
            subsets.append({"name": subset, "labels": dep["spec"]["template"]["metadata"].get("labels") or {}})
        name = f"{host}.iter8router"
        self.api.put("destinationrules", {"apiVersion": ISTIO, "kind": "DestinationRule",
                                          "metadata": {"name": name, "namespace": ns, "labels": labels},
                                          "spec": {"host": host, "subsets": subsets}})
        route = [{"destination": {"host": host, "subset": "iter8-baseline"}, "weight": baseline},
                 {"destination": {"host": host, "subset": "iter8-candidate-0"}, "weight": candidate}]
        self.api.put("virtualservices", {"apiVersion": ISTIO, "kind": "VirtualService",
                                         "metadata": {"name": name, "namespace": ns, "labels": labels},
                                         "spec": {"hosts": [host], "gateways": ["mesh"], "http": [{"route": route}]}})

    # --- helpers ------------------------------------------------------------------------------
    @staticmethod
    def version(vid: str, name: str, weight: int) -> dict:
        """An assessment entry with every field the v1.0.1 CRD requires (analytics' Go types
        have no omitempty on them)."""
        return {"id": vid, "name": name, "request_count": 0, "weight": weight, "win_probability": 0}

    @staticmethod
    def max_iterations(exp: dict) -> int:
        return (exp["spec"].get("duration") or {}).get("maxIterations", 100)

    @staticmethod
    def condition(exp: dict, kind: str) -> str | None:
        return next((c.get("status") for c in (exp.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)

    @staticmethod
    def conditions(exp: dict, *updates: dict) -> list[dict]:
        by_type = {c["type"]: c for c in (exp.get("status") or {}).get("conditions") or []}
        by_type.update({c["type"]: c for c in updates})
        return list(by_type.values())

    def fresh(self, exp: dict) -> dict:
        return self.api.get(V2, "experiments", exp["metadata"]["namespace"], exp["metadata"]["name"]) or exp

    def write(self, exp: dict, status: dict) -> None:
        """A status update, as the controller's r.Status().Update: the whole status replaced."""
        exp = self.fresh(exp)
        new = {**(exp.get("status") or {}), **status}
        ns, name = exp["metadata"]["namespace"], exp["metadata"]["name"]
        key = ("iter8.tools", "v1alpha2", "experiments", ns, name)
        with self.api.lock:
            old = self.api.objects.get(key)
            if old is None:
                return
            stored = copy.deepcopy(old)
            stored["status"] = new
            self.api._store(key, stored, "MODIFIED", old)
