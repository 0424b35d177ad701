"""A canary-rollout PipelineRun, task by task, through the bundle's own YAML.

Each Task's steps run the real step programs with the args Tekton would give them (params,
results, context and workspace paths substituted), as the ServiceAccount the PipelineRun's
taskRunSpecs name (each has its own token, so the fake API server's log says who called).
Tasks run as soon as the tasks they depend on have succeeded, in parallel, as Tekton runs
them. What cannot run here is simulated: git clone (the app folder is copied) and kaniko
(its results). The cluster's controllers are tests/fakecontrollers.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import traceback
from pathlib import Path

import yaml

from conftest import APPS, ROOT
from tekton import VARIABLE, by_kind, strings, substitute

STEPS_IMAGE = "ghcr.io/iter8-tekton/steps:0.1.0"
STEP_TIMEOUT = 300  # seconds: a step still running then is a hung test, reported as its task's failure
DIGEST = "sha256:" + "c0" * 32
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def module_argv(command: list[str]) -> list[str]:
    """`canary-x args` as `python -m steps.x args` (the console script's module)."""
    if command[0] in SCRIPTS:
        return [sys.executable, "-m", SCRIPTS[command[0]].split(":")[0], *command[1:]]
    return command


class PipelineRun:
    def __init__(self, objects: list[dict], api, tmp: Path, *, name: str, app: str, short: str, namespace: str,
                 params: dict[str, str] | None = None, run_template: dict | None = None):
        self.tasks = by_kind(objects, "Task")
        self.pipeline = by_kind(objects, "Pipeline")["canary-rollout"]
        self.run = run_template or yaml.safe_load((ROOT / "tasks" / "samples" / "canary-rollout-run.yaml").read_text())
        self.name, self.short, self.namespace, self.api, self.tmp = name, short, namespace, api, tmp / name
        self.params = {p["name"]: p.get("default") for p in self.pipeline["spec"]["params"]}
        self.params.update({p["name"]: p["value"] for p in self.run["spec"]["params"]})
        self.params.update(params or {})
        self.workspace = self.tmp / "workspace"
        self.app = app
        self.simulated = {  # tasks that need git, a registry or a daemon
            "fetch-source": {"commit": short + "d" * 33, "short-sha": short},
            "build": None,  # filled from read-settings' image-repository
        }
        self.results: dict[str, dict[str, str]] = {}
        self.status: dict[str, str] = {}
        self.logs: dict[str, str] = {}
        self.finished_at: dict[str, float] = {}
        self.accounts = {s["pipelineTaskName"]: s["serviceAccountName"] for s in self.run["spec"].get("taskRunSpecs") or []}
        self.default_account = self.run["spec"]["taskRunTemplate"]["serviceAccountName"]
        self.lock = threading.Lock()
        api.put("pipelineruns", {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
                                 "metadata": {"name": name, "namespace": namespace,
                                              "labels": {"tekton.dev/pipeline": "canary-rollout"}},
                                 "spec": {"pipelineRef": {"name": "canary-rollout"}},
                                 "status": {"conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running"}]}})

    # --- Tekton's variables -----------------------------------------------------------------
    def variables(self) -> dict:
        values = {f"params.{k}": v for k, v in self.params.items()}
        values.update({"context.pipelineRun.name": self.name, "context.pipelineRun.namespace": self.namespace})
        with self.lock:
            for task, results in self.results.items():
                values.update({f"tasks.{task}.results.{k}": v for k, v in results.items()})
            dag = [self.status.get(t["name"], "None") for t in self.pipeline["spec"]["tasks"]]
            values.update({f"tasks.{t['name']}.status": self.status.get(t["name"], "None") for t in self.pipeline["spec"]["tasks"]})
        values["tasks.status"] = "Failed" if "Failed" in dag else "Completed" if "None" in dag else "Succeeded"
        return values

    def account(self, task: str) -> str:
        return self.accounts.get(task, self.default_account)

    # --- running tasks ------------------------------------------------------------------------
    def run_task(self, ptask: dict) -> None:
        name = ptask["name"]
        pipeline_vars = self.variables()
        task = self.tasks[ptask["taskRef"]["name"]]
        params = {p["name"]: p.get("default") for p in task["spec"].get("params") or []}
        params.update({p["name"]: substitute(p["value"], pipeline_vars) for p in ptask.get("params") or []})
        if name == "fetch-source":
            shutil.copytree(APPS / self.app if isinstance(self.app, str) else self.app, self.workspace / params["subdirectory"])
            self.finish(name, self.simulated[name], "Succeeded")
            return
        if name == "build":
            repo = params["image-repository"]
            self.finish(name, {"IMAGE_DIGEST": DIGEST, "IMAGE_URL": f"{repo}:{params['tag']}", "IMAGE_REF": f"{repo}@{DIGEST}"}, "Succeeded")
            return
        results_dir = self.tmp / "results" / name
        results_dir.mkdir(parents=True)
        kubeconfig = self.api.write_kubeconfig(self.tmp / f"kubeconfig-{name}", token=self.account(name))
        bound = {w["name"]: w for w in ptask.get("workspaces") or []}
        task_vars = {f"params.{k}": v for k, v in params.items()}
        task_vars.update({"context.taskRun.namespace": self.namespace, "context.taskRun.name": f"{self.name}-{name}"})
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
            code = self.run_step(step, task_vars, results_dir, kubeconfig, log)
            Path(task_vars[f"steps.step-{step['name']}.exitCode.path"]).write_text(str(code))
            if code and step.get("onError") != "continue":
                failed = True
                break
        arrays = {r["name"] for r in task["spec"].get("results") or [] if r.get("type") == "array"}
        results = {p.name: json.loads(p.read_text()) if p.name in arrays else p.read_text() for p in results_dir.iterdir()}
        self.finish(name, results, "Failed" if failed else "Succeeded", "\n".join(log))

    def run_task_or_fail(self, ptask: dict) -> None:
        """run_task in a thread: an error in this harness fails the task, it does not drop it."""
        try:
            self.run_task(ptask)
        except Exception:  # noqa: BLE001 - reported as the task's log
            self.finish(ptask["name"], {}, "Failed", traceback.format_exc())

    def finish(self, name: str, results: dict, status: str, log: str = "") -> None:
        with self.lock:
            self.results[name], self.status[name], self.logs[name] = results, status, log
            self.finished_at[name] = time.monotonic()

    def run_step(self, step: dict, task_vars: dict, results_dir: Path, kubeconfig: Path, log: list[str]) -> int:
        argv = substitute(step.get("command", []) + step.get("args", []), task_vars)
        argv = [a.replace("/tekton/results", str(results_dir)) for a in argv]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "KUBECONFIG": str(kubeconfig), "KUBE_RETRY_BASE_SECONDS": "0.001"}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        for var in step.get("env") or []:
            if "value" in var:
                env[var["name"]] = substitute(var["value"], task_vars)
            # valueFrom (the optional github-token Secret): absent here, so unset
        if step["image"] != STEPS_IMAGE:
            raise AssertionError(f"no way to run step {step['name']} ({step['image']}) here")
        if step.get("script"):
            argv = ["sh", "-c", step["script"]]
        cwd = substitute(step.get("workingDir", str(ROOT)), task_vars)
        try:
            proc = subprocess.run(module_argv(argv), capture_output=True, text=True, cwd=cwd, env=env, timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired as hung:  # as Tekton fails a TaskRun past its timeout
            output = "".join(o.decode() if isinstance(o, bytes) else o or "" for o in (hung.stdout, hung.stderr))
            log.append(f"[{step['name']}] {argv}\n{output}still running after {STEP_TIMEOUT}s: killed")
            return 1
        log.append(f"[{step['name']}] {argv}\n{proc.stdout}{proc.stderr}")
        return proc.returncode

    def execute(self) -> str:
        """Run the DAG as Tekton does (ready tasks in parallel), then finally; the run's status."""
        pending = {t["name"]: t for t in self.pipeline["spec"]["tasks"]}
        running: dict[str, threading.Thread] = {}
        skipped: set[str] = set()
        while pending or running:
            for name, ptask in list(pending.items()):
                deps = set(ptask.get("runAfter") or []) | {ref.split(".")[1] for _, text in strings(ptask.get("params") or [])
                                                          for ref in VARIABLE.findall(text) if ref.startswith("tasks.")}
                with self.lock:
                    states = [self.status.get(d) for d in deps]
                if any(s == "Failed" for s in states) or deps & skipped:
                    del pending[name]  # skipped: a task it depends on failed or was skipped
                    skipped.add(name)
                elif all(s == "Succeeded" for s in states):
                    del pending[name]
                    running[name] = threading.Thread(target=self.run_task_or_fail, args=(ptask,))
                    running[name].start()
            for name, thread in list(running.items()):
                if not thread.is_alive():
                    del running[name]
            time.sleep(0.02)
        for ptask in self.pipeline["spec"].get("finally") or []:
            variables = self.variables()
            if all(f"tasks.{ref.split('.')[1]}.results.{ref.split('.')[3]}" in variables
                   for _, text in strings(ptask.get("params") or []) for ref in VARIABLE.findall(text) if ".results." in ref):
                self.run_task(ptask)  # else skipped: "Results were missing"
        outcome = "Succeeded" if all(s == "Succeeded" for s in self.status.values()) else "Failed"
        self.api.patch_status("tekton.dev/v1", "pipelineruns", self.namespace, self.name, {
            "conditions": [{"type": "Succeeded", "status": "True" if outcome == "Succeeded" else "False", "reason": outcome}],
            "completionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return outcome

