"""Just enough of Tekton's rules to check the bundle offline and to simulate a run.

- `bundle()` builds the root kustomization (`kubectl kustomize .`);
- `check_task()` / `check_pipeline()` return every reference that does not resolve;
- `substitute()` replaces `$(params...)`, `$(workspaces...)`, `$(results...)`,
  `$(tasks...)` and `$(context...)` the way Tekton does, including `[*]` array params.
"""

from __future__ import annotations

import re
import subprocess
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
VARIABLE = re.compile(r"\$\(([^()]+)\)")


def bundle(directory: Path = ROOT) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def strings(node, path=""):
    """Every string in a YAML tree, with its path."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from strings(value, f"{path}[{i}]")


def scripts(task: dict):
    spec = task["spec"]
    for container in (spec.get("steps") or []) + (spec.get("sidecars") or []) + [spec.get("stepTemplate") or {}]:
        if container.get("script"):
            yield container.get("name", "stepTemplate"), container["script"]


def check_task(task: dict) -> list[str]:
    """References inside a Task that do not resolve to its own params, results or workspaces."""
    spec = task["spec"]
    params = {p["name"]: p for p in spec.get("params") or []}
    results = {r["name"] for r in spec.get("results") or []}
    workspaces = {w["name"] for w in spec.get("workspaces") or []}
    steps = {f"step-{s['name']}" for s in spec.get("steps") or []}
    problems = []
    for path, text in strings(spec):
        for ref in VARIABLE.findall(text):
            parts = ref.split(".")
            if parts[0] == "params":
                name = re.sub(r"\[\*\]$", "", ".".join(parts[1:]))
                if name not in params:
                    problems.append(f"{path}: $({ref}) names no param")
                elif ref.endswith("[*]") and params[name].get("type") != "array":
                    problems.append(f"{path}: $({ref}) expands a param that is not an array")
            elif parts[0] == "results" and (len(parts) != 3 or parts[1] not in results or parts[2] != "path"):
                problems.append(f"{path}: $({ref}) names no result path")
            elif parts[0] == "workspaces" and (len(parts) != 3 or parts[1] not in workspaces or parts[2] not in ("path", "bound", "claim", "volume")):
                problems.append(f"{path}: $({ref}) names no workspace")
            elif parts[0] == "steps" and (len(parts) != 4 or parts[1] not in steps or parts[2:] != ["exitCode", "path"]):
                problems.append(f"{path}: $({ref}) names no step's exit code")
            elif parts[0] not in ("params", "results", "workspaces", "context", "steps", "credentials"):
                problems.append(f"{path}: $({ref}) is not a Task variable")
    for name, param in params.items():
        if not param.get("description"):
            problems.append(f"param {name} has no description")
    if not spec.get("description"):
        problems.append("the Task has no description")
    return problems


def _task_refs(value: str) -> set[str]:
    return {ref.split(".")[1] for ref in VARIABLE.findall(value) if ref.startswith("tasks.")}


def check_pipeline(pipeline: dict, tasks: dict[str, dict]) -> list[str]:
    """Unresolved references, missing params/workspaces, unknown Tasks, cycles."""
    spec = pipeline["spec"]
    params = {p["name"] for p in spec.get("params") or []}
    workspaces = {w["name"] for w in spec.get("workspaces") or []}
    dag = {t["name"]: t for t in spec.get("tasks") or []}
    final = {t["name"]: t for t in spec.get("finally") or []}
    problems: list[str] = []
    graph: dict[str, set[str]] = {}

    def task_results(name: str) -> set[str]:
        ref = (dag.get(name) or {}).get("taskRef", {}).get("name")
        return {r["name"] for r in (tasks.get(ref) or {}).get("spec", {}).get("results") or []}

    for where, entries in (("tasks", dag), ("finally", final)):
        for name, ptask in entries.items():
            ref = ptask.get("taskRef", {}).get("name")
            if ref not in tasks:
                problems.append(f"{where}.{name}: Task {ref!r} is not in the bundle")
                continue
            tspec = tasks[ref]["spec"]
            declared = {p["name"]: p for p in tspec.get("params") or []}
            given = {p["name"] for p in ptask.get("params") or []}
            problems += [f"{where}.{name}: unknown param {p}" for p in sorted(given - set(declared))]
            problems += [f"{where}.{name}: required param {p} not given" for p, d in declared.items() if "default" not in d and p not in given]
            bound = {w["name"]: w for w in ptask.get("workspaces") or []}
            for ws in tspec.get("workspaces") or []:
                if ws["name"] not in bound and not ws.get("optional"):
                    problems.append(f"{where}.{name}: workspace {ws['name']} not bound")
            for ws in bound.values():
                if ws.get("workspace") not in workspaces:
                    problems.append(f"{where}.{name}: binds unknown pipeline workspace {ws.get('workspace')}")
            deps = set(ptask.get("runAfter") or [])
            for path, text in strings({k: v for k, v in ptask.items() if k != "taskRef"}):
                for ref in VARIABLE.findall(text):
                    parts = ref.split(".")
                    if parts[0] == "params" and parts[1] not in params:
                        problems.append(f"{where}.{name}{path}: $({ref}) names no pipeline param")
                    elif ref == "tasks.status":  # the DAG's aggregate status
                        if where != "finally":
                            problems.append(f"{where}.{name}{path}: only finally tasks may read $(tasks.status)")
                    elif parts[0] == "tasks":
                        target = parts[1]
                        if target not in dag:
                            problems.append(f"{where}.{name}{path}: $({ref}) names no DAG task")
                        elif parts[2] == "results" and parts[3] not in task_results(target):
                            problems.append(f"{where}.{name}{path}: $({ref}) names no result of {target}")
                        elif parts[2] not in ("results", "status", "reason"):
                            problems.append(f"{where}.{name}{path}: $({ref}) is not a task variable")
                        if where == "tasks" and parts[2] == "status":
                            problems.append(f"{where}.{name}{path}: only finally tasks may read $({ref})")
                        deps.add(target)
                    elif parts[0] == "context" and ref not in ("context.pipelineRun.name", "context.pipelineRun.namespace", "context.pipelineRun.uid", "context.pipeline.name"):
                        problems.append(f"{where}.{name}{path}: $({ref}) is not a pipeline context variable")
            problems += [f"{where}.{name}: runAfter unknown task {d}" for d in deps if d not in dag]
            if where == "tasks":
                graph[name] = {d for d in deps if d in dag}
    for result in spec.get("results") or []:
        for task in _task_refs(result.get("value", "")):
            if task not in dag:
                problems.append(f"pipeline result {result['name']} names no DAG task {task}")
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as err:
        problems.append(f"the DAG has a cycle: {err.args[1]}")
    return problems


def order(pipeline: dict) -> list[str]:
    """DAG tasks in an order Tekton could run them."""
    graph = {}
    for ptask in pipeline["spec"]["tasks"]:
        deps = set(ptask.get("runAfter") or [])
        for _, text in strings(ptask.get("params") or []):
            deps |= _task_refs(text)
        graph[ptask["name"]] = deps
    return list(TopologicalSorter(graph).static_order())


def substitute(value, variables: dict[str, object]):
    """Tekton substitution over a string, list or dict; array params expand in lists."""
    if isinstance(value, list):
        out = []
        for item in value:
            whole = VARIABLE.fullmatch(item) if isinstance(item, str) else None
            if whole and whole.group(1).endswith("[*]"):
                out.extend(variables[whole.group(1)[:-3]])
            else:
                out.append(substitute(item, variables))
        return out
    if isinstance(value, dict):
        return {k: substitute(v, variables) for k, v in value.items()}
    if isinstance(value, str):
        def replace(match):
            key = match.group(1)
            if key not in variables:
                raise KeyError(f"$({key}) has no value")
            return str(variables[key])

        return VARIABLE.sub(replace, value)
    return value
