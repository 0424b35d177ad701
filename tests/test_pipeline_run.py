"""A canary-rollout run, task by task, through the bundle's own YAML: each Task's steps run
the real step programs with the args Tekton would give them (params, results and
workspace paths substituted), against the fake API server. What cannot run here is
simulated: git clone and kaniko (their results), kubectl apply (the rendered objects are
stored), and iter8's controller (it sets the experiment's final status)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from cluster import NS, V2, FakeIter8, deployment, service, v2_completed
from conftest import APPS, ROOT, need_tool
from tekton import bundle, by_kind, order, substitute

STEPS_IMAGE = "ghcr.io/iter8-tekton/steps:0.1.0"
SHORT = "3f2a1bc"
DIGEST = "sha256:" + "c0" * 32
RUN = "canary-rollout-x7k2p"
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
SIMULATED = {  # tasks that need git, a registry or a daemon
    "fetch-source": {"commit": SHORT + "d" * 33, "short-sha": SHORT},
    "build": {"IMAGE_DIGEST": DIGEST, "IMAGE_URL": f"registry.example.com/bookinfo/reviews:{SHORT}"},
}


def module_argv(command: list[str]) -> list[str]:
    """`canary-x args` as `python -m steps.x args` (the console script's module)."""
    if command[0] in SCRIPTS:
        return [sys.executable, "-m", SCRIPTS[command[0]].split(":")[0], *command[1:]]
    return command


def apply(fake_api, manifest_path):
    """What kubectl apply would leave: the objects stored, the Deployment's pods ready."""
    plural = {"Deployment": "deployments", "Service": "services", "ConfigMap": "configmaps"}
    for obj in yaml.safe_load_all(manifest_path.read_text()):
        obj["metadata"]["namespace"] = NS
        if obj["kind"] == "Deployment":
            replicas = obj["spec"].get("replicas", 1)
            obj["status"] = {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas}
        fake_api.put(plural[obj["kind"]], obj)


class Run:
    def __init__(self, fake_api, tmp_path, iter8_outcome):
        objects = bundle()
        self.tasks = by_kind(objects, "Task")
        self.pipeline = by_kind(objects, "Pipeline")["canary-rollout"]
        run = yaml.safe_load((ROOT / "tasks" / "samples" / "canary-rollout-run.yaml").read_text())
        self.params = {p["name"]: p.get("default") for p in self.pipeline["spec"]["params"]}
        self.params.update({p["name"]: p["value"] for p in run["spec"]["params"]})
        self.fake_api, self.tmp, self.iter8_outcome = fake_api, tmp_path, iter8_outcome
        self.workspace = tmp_path / "workspace"
        shutil.copytree(APPS / "reviews", self.workspace / "src")  # what fetch-source would clone
        self.results: dict[str, dict[str, str]] = {}
        self.status: dict[str, str] = {}
        self.logs: dict[str, str] = {}

    def variables(self) -> dict:
        values = {f"params.{k}": v for k, v in self.params.items()}
        values["context.pipelineRun.name"] = RUN
        for task, results in self.results.items():
            values.update({f"tasks.{task}.results.{k}": v for k, v in results.items()})
        dag = [self.status.get(t["name"], "None") for t in self.pipeline["spec"]["tasks"]]
        values.update({f"tasks.{t['name']}.status": self.status.get(t["name"], "None") for t in self.pipeline["spec"]["tasks"]})
        values["tasks.status"] = "Failed" if "Failed" in dag else "Completed" if "None" in dag else "Succeeded"
        return values

    def run_task(self, ptask: dict) -> None:
        name = ptask["name"]
        pipeline_vars = self.variables()
        task = self.tasks[ptask["taskRef"]["name"]]
        params = {p["name"]: p.get("default") for p in task["spec"].get("params") or []}
        params.update({p["name"]: substitute(p["value"], pipeline_vars) for p in ptask.get("params") or []})
        if name in SIMULATED:
            self.results[name], self.status[name] = SIMULATED[name], "Succeeded"
            return
        results_dir = self.tmp / "results" / name
        results_dir.mkdir(parents=True)
        bound = {w["name"]: w for w in ptask.get("workspaces") or []}
        task_vars = {f"params.{k}": v for k, v in params.items()}
        for ws in task["spec"].get("workspaces") or []:
            sub = bound.get(ws["name"], {}).get("subPath")
            task_vars[f"workspaces.{ws['name']}.path"] = str(self.workspace / sub if sub else self.workspace)
        task_vars.update({f"results.{r['name']}.path": str(results_dir / r["name"]) for r in task["spec"].get("results") or []})
        steps_dir = self.tmp / "steps" / name
        for step in task["spec"]["steps"]:  # Tekton's exit-code files, one per step
            (steps_dir / f"step-{step['name']}").mkdir(parents=True)
            task_vars[f"steps.step-{step['name']}.exitCode.path"] = str(steps_dir / f"step-{step['name']}" / "exitCode")
        log, failed = [], False
        for step in task["spec"]["steps"]:
            code = self.run_step(step, task_vars, results_dir, log)
            Path(task_vars[f"steps.step-{step['name']}.exitCode.path"]).write_text(str(code))
            if code and step.get("onError") != "continue":
                failed = True
                break
        self.status[name] = "Failed" if failed else "Succeeded"
        self.logs[name] = "\n".join(log)
        self.results[name] = {p.name: p.read_text() for p in results_dir.iterdir()}

    def run_step(self, step: dict, task_vars: dict, results_dir: Path, log: list[str]) -> int:
        argv = substitute(step.get("command", []) + step.get("args", []), task_vars)
        argv = [a.replace("/tekton/results", str(results_dir)) for a in argv]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for var in step.get("env") or []:
            if "value" in var:
                env[var["name"]] = substitute(var["value"], task_vars)
            # valueFrom (the optional github-token Secret): absent here, so unset
        if argv[:2] == ["kubectl", "apply"]:
            manifest = next(Path(a.split("=", 1)[1]) for a in argv if a.startswith("--filename="))
            apply(self.fake_api, manifest)
            self.iter8_outcome(self.fake_api)  # iter8 runs the experiment once the candidate exists
            return 0
        if step["image"] != STEPS_IMAGE:
            raise AssertionError(f"no way to run step {step['name']} here")
        if step.get("script"):
            argv = ["sh", "-c", step["script"]]
        cwd = substitute(step.get("workingDir", str(ROOT)), task_vars)
        proc = subprocess.run(module_argv(argv), capture_output=True, text=True, cwd=cwd, env=env, timeout=120)
        log.append(f"[{step['name']}] {argv}\n{proc.stdout}{proc.stderr}")
        return proc.returncode

    def run(self) -> str:
        for name in order(self.pipeline):
            ptask = next(t for t in self.pipeline["spec"]["tasks"] if t["name"] == name)
            if all(self.status.get(d) == "Succeeded" for d in ptask.get("runAfter") or []):
                self.run_task(ptask)
        for ptask in self.pipeline["spec"].get("finally") or []:
            when = ptask.get("when") or []
            if all(substitute(w["input"], self.variables()) in w["values"] for w in when):
                self.run_task(ptask)
        return "Succeeded" if all(s == "Succeeded" for s in self.status.values()) else "Failed"


def iter8_says(winner_is_candidate: bool):
    def finish(api):
        exp = api.get(V2, "experiments", NS, f"reviews-{SHORT}")
        baseline, candidate = exp["spec"]["service"]["baseline"], exp["spec"]["service"]["candidates"][0]
        winner = candidate if winner_is_candidate else baseline
        weights = (0, 100) if winner_is_candidate else (100, 0)
        api.patch_status(V2, "experiments", NS, exp["metadata"]["name"],
                         v2_completed(baseline, candidate, "Traffic To Winner", winner, weights, breached=not winner_is_candidate))
    return finish


@pytest.fixture
def cluster(fake_api):
    need_tool("kubectl")
    need_tool("hey")
    fake_api.put("services", service())
    fake_api.put("deployments", deployment("reviews", "v1"))
    controller = FakeIter8(fake_api)  # completes experiments that get rolled back
    yield fake_api
    controller.stop()


def deployments(api) -> dict[str, dict]:
    return {key[4]: obj for key, obj in api.objects.items() if key[2] == "deployments"}


def test_promotion(cluster, tmp_path):
    run = Run(cluster, tmp_path, iter8_says(winner_is_candidate=True))
    assert run.run() == "Succeeded", run.logs
    exp = cluster.get(V2, "experiments", NS, f"reviews-{SHORT}")
    assert exp["spec"]["service"] == {"name": "reviews", "baseline": "reviews", "candidates": [f"reviews-{SHORT}"]}
    assert exp["metadata"]["labels"]["iter8-tekton.dev/run"] == RUN
    candidate = deployments(cluster)[f"reviews-{SHORT}"]
    assert candidate["spec"]["template"]["spec"]["containers"][0]["image"] == f"registry.example.com/bookinfo/reviews@{DIGEST}"
    assert run.results["wait-completion"]["outcome"] == "promoted"
    assert set(deployments(cluster)) == {f"reviews-{SHORT}"}, "cleanup deletes the old version"
    assert deployments(cluster)[f"reviews-{SHORT}"]["metadata"]["labels"]["iter8-tekton.dev/stable"] == "true"
    assert "stopping: experiment" in run.logs["generate-load"]


def test_rollback_fails_the_run_and_still_removes_the_candidate(cluster, tmp_path):
    run = Run(cluster, tmp_path, iter8_says(winner_is_candidate=False))
    assert run.run() == "Failed"
    assert run.status["wait-completion"] == "Failed" and run.status["cleanup"] == "Succeeded", run.logs.get("cleanup")
    assert run.results["wait-completion"]["outcome"] == "rolled-back"
    assert set(deployments(cluster)) == {"reviews"}
    assert deployments(cluster)["reviews"]["metadata"]["labels"]["iter8-tekton.dev/stable"] == "true"


def test_failed_deploy_rolls_the_experiment_back_and_releases_the_lock(cluster, tmp_path):
    run = Run(cluster, tmp_path, iter8_says(winner_is_candidate=True))
    run.params["deployment"] = "ratings"  # the rendered Deployment will not be the experiment's candidate
    assert run.run() == "Failed"
    assert run.status["deploy"] == "Failed"
    assert "generate-load" not in run.status and "wait-completion" not in run.status
    assert run.status["cleanup"] == "Succeeded", run.logs["cleanup"]
    exp = cluster.get(V2, "experiments", NS, f"ratings-{SHORT}")
    assert exp["spec"]["manualOverride"]["action"] == "terminate", "the unfinished experiment goes back to the baseline"
    assert set(deployments(cluster)) == {"reviews"}
    assert cluster.get("coordination.k8s.io/v1", "leases", NS, "canary-rollout-reviews")["spec"].get("holderIdentity") is None


def test_the_lock_is_held_during_the_run_and_released_at_the_end(cluster, tmp_path):
    run = Run(cluster, tmp_path, iter8_says(winner_is_candidate=True))
    assert run.run() == "Succeeded", run.logs
    lease = cluster.get("coordination.k8s.io/v1", "leases", NS, "canary-rollout-reviews")
    assert lease["spec"].get("holderIdentity") is None
    assert f"{RUN} holds the rollout lock of reviews" in run.logs["acquire-lock"]
    assert "commit status reporting is off" in run.logs["acquire-lock"]
