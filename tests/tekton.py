"""Tekton Pipelines v1.15.0's own rules, in Python, to check the bundle offline.

- `admission(obj)` is what Tekton's validating webhook answers for a tekton.dev/v1 Task,
  Pipeline or PipelineRun: `SetDefaults`, then `Validate` (cmd/webhook/main.go). Each rule
  names the upstream function (tektoncd/pipeline v1.15.0, pkg/apis/pipeline/v1/ unless a
  path is given) and reports its message and field path as knative's FieldError prints them.
  Only the constructs this project uses are covered; a construct the checker does not know
  (matrix, pipelines in pipelines, StepActions, object params) is reported as unsupported
  rather than passed.
- `runtime(run, pipeline, tasks)` is what the PipelineRun reconciler checks once the run
  exists, before and while it creates TaskRuns (pkg/reconciler/...): a wrong Task, param,
  workspace or result name there fails the run, not the admission.
- `lint_task()` / `lint_pipeline()` are this project's own rules on top (descriptions).
- `substitute()` and `order()` simulate a run: Tekton's variable substitution and DAG order.
"""

from __future__ import annotations

import copy
import re
import sys
from graphlib import TopologicalSorter
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
VARIABLE = re.compile(r"\$\(([^()]+)\)")

# pkg/apis/pipeline/v1/resultref.go: variableSubstitutionFormat
SUBSTITUTION = re.compile(r"\$\([_a-zA-Z0-9.-]+(\.[_a-zA-Z0-9.-]+)*(\[([0-9]+|\*)\])?\)")
# pkg/apis/pipeline/v1/resultref.go: ResultNameFormat; param_types.go: stringAndArrayVariableNameFormat
RESULT_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
PARAM_NAME = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9.-]*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")


# --- the bundle --------------------------------------------------------------------------
def bundle(settings: dict[str, str] | Path | None = None) -> list[dict]:
    """The bundle (hack/bundle.py), optionally with other install settings; or the
    kustomize output of another folder."""
    if str(ROOT / "hack") not in sys.path:
        sys.path.insert(0, str(ROOT / "hack"))
    from bundle import build, kustomize

    return kustomize(settings) if isinstance(settings, Path) else build(settings)


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


def seconds(duration: str) -> float:
    """A Go time.Duration string (1h30m, 65m, 0s) in seconds."""
    if duration in ("0", "0s"):
        return 0.0
    parts = DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"time: invalid duration {duration!r}")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[u] for n, u in parts)


def go_duration(value: float) -> str:
    """Go's time.Duration.String(): 1h0m0s, 30m0s, 0s."""
    if value == 0:
        return "0s"
    hours, rest = divmod(int(value), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


# --- pkg/substitution/substitution.go ------------------------------------------------------
def _brace(prefix: str, var: str = r".*?(?:\[\*\])?") -> re.Pattern:
    """braceMatchingRegex: $(prefix.var), $(prefix["var"]) or $(prefix['var'])."""
    return re.compile(rf"(\$\({prefix}(\.(?P<var1>{var})|\[\"(?P<var2>{var})\"\]|\['(?P<var3>{var})'\])\))")


def extract_variables(value: str, prefix: str) -> tuple[list[str], bool, str]:
    """ExtractVariablesFromString: the names referenced, whether any, and the error string."""
    names = []
    for m in _brace(prefix).finditer(value):
        if m["var1"] is not None and "." in m["var1"]:
            if len(m["var1"].split(".")) > 2:
                return names, True, (f'Invalid referencing of parameters in "{value}"! Only two dot-separated '
                                     f'components after the prefix "{prefix}" are allowed.')
            names.append(m["var1"].split(".", 1)[0])
        else:
            names.append(next(v for v in (m["var1"], m["var2"], m["var3"]) if v is not None))
    return names, bool(names), ""


def _trim_index(name: str) -> str:
    return re.sub(r"\[([0-9])*\*?\]", "", name)  # TrimArrayIndex


def unknown_variables(value: str, prefix: str, known: set[str]) -> str | None:
    """ValidateNoReferencesToUnknownVariables: the message, or None."""
    names, present, error = extract_variables(value, prefix)
    if present and error:
        return error
    if any(_trim_index(n) not in known for n in names):
        return f"non-existent variable in {_go_quote(value)}"
    return None


def prohibited_variables(value: str, prefix: str, prohibited: set[str]) -> str | None:
    """ValidateNoReferencesToProhibitedVariables ($(params.arr[0]) is fine, $(params.arr[*]) is not)."""
    names, present, error = extract_variables(value, prefix)
    if present and error:
        return error
    if any(n.removesuffix("[*]") in prohibited for n in names):
        return f"variable type invalid in {_go_quote(value)}"
    return None


def not_isolated(value: str, prefix: str, names_: set[str]) -> str | None:
    """ValidateVariableReferenceIsIsolated: an array reference must be the whole value."""
    names, present, error = extract_variables(value, prefix)
    if present and error:
        return error
    first = _brace(prefix).search(value)
    if any(n.removesuffix("[*]") in names_ for n in names) and first and len(first.group(0)) != len(value):
        return f"variable is not properly isolated in {_go_quote(value)}"
    return None


def _go_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def expressions(value) -> list[str]:
    """validateString (resultref.go): every $(...) in a string, list or dict value, stripped."""
    texts = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else [value]
    return [m.group(0)[2:-1] for text in texts if isinstance(text, str) for m in SUBSTITUTION.finditer(text)]


# --- pkg/internal/resultref/resultref.go ----------------------------------------------------
def looks_like_result_ref(expression: str) -> bool:
    parts = expression.split(".")
    return len(parts) >= 4 and parts[0] in ("tasks", "finally") and parts[2] == "results"


def parse_task_expression(expression: str) -> tuple[str, str] | None:
    """ParseTaskExpression: (pipeline task, result), or None when it is not a result reference."""
    if not looks_like_result_ref(expression):
        return None
    parts = expression.split(".")
    if len(parts) == 4:
        return parts[1], re.sub(r"\[([0-9])*\*?\]", "", parts[3])
    if len(parts) == 5:
        return parts[1], parts[3]
    return None


def result_refs(exprs: list[str]) -> list[tuple[str, str]]:
    """NewResultRefs: the expressions that parse as task result references."""
    return [ref for ref in map(parse_task_expression, exprs) if ref]


# --- admission: SetDefaults -------------------------------------------------------------------
def _default_param_specs(specs: list[dict]) -> None:
    """param_types.go ParamSpec.SetDefaults: the type from the default's JSON shape."""
    for spec in specs or []:
        if not spec.get("type"):
            default = spec.get("default")
            spec["type"] = ("object" if spec.get("properties") is not None else "string" if default is None
                            else "array" if isinstance(default, list) else "object" if isinstance(default, dict) else "string")


def set_defaults(obj: dict) -> dict:
    """SetDefaults of task_defaults.go, pipeline_defaults.go and pipelinerun_defaults.go."""
    obj = copy.deepcopy(obj)
    spec = obj.setdefault("spec", {})
    if obj["kind"] == "Task":
        _default_param_specs(spec.get("params"))
        for result in spec.get("results") or []:  # result_defaults.go TaskResult.SetDefaults
            result.setdefault("type", "object" if result.get("properties") else "string")
    elif obj["kind"] == "Pipeline":
        _default_param_specs(spec.get("params"))
        for ptask in (spec.get("tasks") or []) + (spec.get("finally") or []):
            ref = ptask.get("taskRef")
            if ref and not ref.get("kind") and not ref.get("resolver"):
                ref["kind"] = "Task"  # PipelineTask.SetDefaults
    elif obj["kind"] == "PipelineRun":
        timeouts = spec.setdefault("timeouts", {})
        timeouts.setdefault("pipeline", "1h0m0s")  # default-timeout-minutes: 60
        template = spec.setdefault("taskRunTemplate", {})
        if not template.get("serviceAccountName"):
            template["serviceAccountName"] = "default"
    return obj


# --- admission: Validate ----------------------------------------------------------------------
class Errors(list):
    def add(self, message: str | None, path: str) -> None:
        if message:
            self.append(f"{message}: {path}")


UNSUPPORTED = ("matrix", "pipelineRef", "pipelineSpec", "taskSpec")


def admission(obj: dict) -> list[str]:
    """What Tekton's webhook says about a Task, Pipeline or PipelineRun: [] when accepted."""
    obj = set_defaults(obj)
    errors = Errors()
    validate_metadata(obj, errors)
    {"Task": validate_task, "Pipeline": validate_pipeline, "PipelineRun": validate_pipelinerun}[obj["kind"]](obj["spec"], errors)
    return sorted(errors)


def validate_metadata(obj: dict, errors: Errors) -> None:
    """pkg/apis/validate/metadata.go ObjectMetadata. A generateName object is checked as the
    API server names it (generateName plus 5 characters)."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") or (meta.get("generateName", "") + "x2x4x" if meta.get("generateName") else "")
    if not DNS_SUBDOMAIN.match(name) or len(name) > 253:
        errors.add(f'invalid resource name "{name}": must be a valid DNS label', "metadata.name")
    elif len(name) > 63:
        errors.add("Invalid resource name: length must be no more than 63 characters", "metadata.name")


def merge_step_template(spec: dict) -> list[dict]:
    """merge.go MergeStepsWithStepTemplate: every step over the stepTemplate (env by name);
    the merged steps are what every later check sees."""
    template = spec.get("stepTemplate") or {}
    merged = []
    for step in spec.get("steps") or []:
        new = {**copy.deepcopy(template), **copy.deepcopy(step)}
        if template.get("env") or step.get("env"):
            env = {e["name"]: e for e in template.get("env") or []}
            env.update({e["name"]: e for e in step.get("env") or []})
            new["env"] = list(env.values())
        for key in ("securityContext", "computeResources"):
            if isinstance(template.get(key), dict) and isinstance(step.get(key), dict):
                new[key] = {**template[key], **step[key]}
        merged.append(new)
    return merged


def _step_fields(step: dict):
    """The step fields validateStepVariables scans, with their FieldError paths."""
    for key in ("name", "image", "workingDir", "script"):
        yield key, step.get(key) or ""
    for key in ("command", "args"):
        for i, value in enumerate(step.get(key) or []):
            yield f"{key}[{i}]", value
    for env in step.get("env") or []:
        yield f"env[{env['name']}]", env.get("value") or ""
    for i, mount in enumerate(step.get("volumeMounts") or []):
        yield f"volumeMount[{i}].name", mount.get("name", "")
        yield f"volumeMount[{i}].MountPath", mount.get("mountPath", "")
        yield f"volumeMount[{i}].SubPath", mount.get("subPath", "")
    yield "onError", step.get("onError") or ""


def validate_task(spec: dict, errors: Errors) -> None:
    """task_validation.go TaskSpec.Validate, then Task.Validate's ValidateUsageOfDeclaredParameters."""
    for key in ("sidecars", "volumes"):
        if spec.get(key):
            errors.add(f"the checker does not cover spec.{key}", "spec")
    steps = spec.get("steps") or []
    if not steps:
        errors.add("missing field(s)", "spec.steps")
    # validateDeclaredWorkspaces
    seen, mounts = set(), set()
    for i, ws in enumerate(spec.get("workspaces") or []):
        if ws["name"] in seen:
            errors.add(f'workspace name "{ws["name"]}" must be unique', f"spec.workspaces[{i}].name")
        seen.add(ws["name"])
        mount = str(Path(ws.get("mountPath") or f"/workspace/{ws['name']}"))
        if mount in mounts:
            errors.add(f'workspace mount path "{mount}" must be unique', f"spec.workspaces[{i}].mountpath")
        mounts.add(mount)
    merged = merge_step_template(spec)
    params = spec.get("params") or []
    names = [p["name"] for p in params]
    arrays = {p["name"] for p in params if p.get("type") == "array"}
    # StepList.Validate / Step.Validate (container_validation.go)
    step_names = set()
    for i, step in enumerate(merged):
        where = f"spec.steps[{i}]"
        if step.get("ref"):
            errors.add("the checker does not cover StepActions (ref)", where)
            continue
        if not step.get("image"):
            errors.add("missing field(s)", f"{where}.Image")
        if step.get("script") and step.get("command"):
            errors.add("script cannot be used with command", f"{where}.script")
        if step.get("name"):
            if not DNS_LABEL.match(step["name"]) or len(step["name"]) > 63:
                errors.add(f'invalid value "{step["name"]}"', f"{where}.name")
            if step["name"] in step_names:
                errors.add("expected exactly one, got both", f"{where}.name")
            step_names.add(step["name"])
        on_error = step.get("onError")
        if on_error and not on_error.startswith("$(params") and on_error not in ("continue", "stopAndFail"):
            errors.add(f'invalid value: "{on_error}"', f"{where}.onError")
        for j, mount in enumerate(step.get("volumeMounts") or []):
            clean = str(Path(mount.get("mountPath", "/")))
            if clean.startswith("/tekton/") and not clean.startswith("/tekton/home"):
                errors.add(f'volumeMount cannot be mounted under /tekton/ (volumeMount "{mount["name"]}" mounted at "{clean}")',
                           f"{where}.volumeMounts[{j}].mountPath")
        # validateStepResultReference: $(steps.X.results.Y) only in env, command and args
        for key in ("name", "image", "script", "workingDir"):
            if re.search(r"\$\(steps\..*?\.results\..*?\)", step.get(key) or ""):
                errors.add("stepResult substitutions are only allowed in env, command and args. Found usage in", f"{where}.{key}")
    # ValidateParameterTypes (ParamSpec.ValidateType)
    for p in params:
        if p["type"] not in ("string", "array", "object"):
            errors.add(f"invalid value: {p['type']}", f"spec.params.{p['name']}.type")
        elif "default" in p and ("array" if isinstance(p["default"], list) else "object" if isinstance(p["default"], dict) else "string") != p["type"]:
            errors.add(f'"{p["type"]}" type does not match default value\'s type', f"spec.params.{p['name']}.type")
        if p["type"] == "object" or p.get("enum"):
            errors.add("the checker does not cover object params or enums", f"spec.params.{p['name']}")
    # ValidateParameterVariables: duplicates, name format, array usage
    for name in {n for n in names if names.count(n) > 1}:
        errors.add("parameter appears more than once", f"spec.params[{name}]")
    invalid = sorted(n for n in set(names) if not PARAM_NAME.match(n))
    if invalid:
        errors.add(f"The format of following array and string variable names is invalid: [{' '.join(invalid)}]", "spec.params")
    for i, step in enumerate(merged):
        where = f"spec.steps[{i}]"
        for key in ("name", "image", "workingDir", "script"):
            errors.add(prohibited_variables(step.get(key) or "", "params", arrays), f"{where}.{key}")
        for key in ("command", "args"):
            for j, value in enumerate(step.get(key) or []):
                errors.add(not_isolated(value, "params", arrays), f"{where}.{key}[{j}]")
        for env in step.get("env") or []:
            errors.add(prohibited_variables(env.get("value") or "", "params", arrays), f"{where}.env[{env['name']}]")
    # validateTaskContextVariables, validateTaskResultsVariables, validateResults
    results = {r["name"] for r in spec.get("results") or []}
    for i, step in enumerate(merged):
        for field, value in _step_fields(step):
            errors.add(unknown_variables(value, r"context\.taskRun", {"name", "namespace", "uid"}), f"spec.steps[{i}].{field}")
            errors.add(unknown_variables(value, r"context\.task", {"name", "retry-count"}), f"spec.steps[{i}].{field}")
        errors.add(unknown_variables(step.get("script") or "", "results", results), f"spec.steps[{i}].script")
    for i, result in enumerate(spec.get("results") or []):
        if not RESULT_NAME.match(result["name"]):
            errors.add(f'invalid key name "{result["name"]}"', f"spec.results[{i}].name")
        if result.get("type") not in ("string", "array", "object"):
            errors.add(f"invalid value: {result.get('type')}", f"spec.results[{i}].type")
    # Task.Validate: ValidateUsageOfDeclaredParameters (validateVariables over the steps)
    for i, step in enumerate(merged):
        for field, value in _step_fields(step):
            errors.add(unknown_variables(value, "params", set(names)), f"spec.steps[{i}].{field}")


def _ptasks(spec: dict):
    for section in ("tasks", "finally"):
        for i, ptask in enumerate(spec.get(section) or []):
            yield section, i, ptask


def _param_values(ptask: dict):
    """(name, string values) of a pipeline task's params: a string, each array item, each object value."""
    for param in ptask.get("params") or []:
        value = param.get("value")
        items = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else [value]
        yield param["name"], [v for v in items if isinstance(v, str)], value


def validate_pipeline(spec: dict, errors: Errors) -> None:
    """pipeline_validation.go PipelineSpec.Validate, then Pipeline.Validate's parameter and
    workspace usage checks."""
    tasks, final = spec.get("tasks") or [], spec.get("finally") or []
    dag_names = [t.get("name", "") for t in tasks]
    final_names = [t.get("name", "") for t in final]
    params = spec.get("params") or []
    param_names = {p["name"] for p in params}
    arrays = {p["name"] for p in params if p.get("type") == "array"}
    declared_ws = [w.get("name", "") for w in spec.get("workspaces") or []]
    if not any(spec.get(k) for k in ("description", "params", "tasks", "workspaces", "results", "finally")):
        errors.add("expected at least one, got none", "spec.description, spec.params, spec.resources, spec.tasks, spec.workspaces")
    # ValidatePipelineTasks: names (PipelineTask.ValidateName), uniqueness, ref or spec, taskRef
    seen = set()
    for section, i, ptask in _ptasks(spec):
        where = f"spec.{section}[{i}]"
        name = ptask.get("name", "")
        if not DNS_LABEL.match(name) or len(name) > 63:
            errors.add(f'invalid value "{name}"', f"{where}.name")
        if name in seen:
            errors.add("expected exactly one, got both", f"{where}.name")
        seen.add(name)
        for key in UNSUPPORTED:
            if ptask.get(key):
                errors.add(f"the checker does not cover PipelineTask {key}", f"{where}.{key}")
        ref = ptask.get("taskRef")
        if not ref and not any(ptask.get(k) for k in UNSUPPORTED):
            errors.add("expected exactly one, got neither", f"{where}.taskRef, {where}.taskSpec")
        elif ref:
            if not ref.get("name") and not ref.get("resolver"):
                errors.add("missing field(s)", f"{where}.taskRef.name")
            elif ref.get("name") and (not QUALIFIED_NAME.match(ref["name"]) or len(ref["name"]) > 63):
                errors.add(f"invalid value: {ref['name']}", f"{where}.taskRef.name")
            if ref.get("kind") not in ("Task", None) or ref.get("apiVersion"):
                errors.add("the checker does not cover custom tasks", f"{where}.taskRef")
        if ptask.get("onError") and ptask["onError"] not in ("continue", "stopAndFail"):
            errors.add(f"invalid value: {ptask['onError']}", f"{where}.OnError")
    if final and not tasks:
        errors.add(f"invalid value: spec.tasks is empty but spec.finally has {len(final)} tasks", "spec.finally")
    # validateGraph: dag.Build over spec.tasks (runAfter plus result references)
    graph: dict[str, set[str]] = {}
    for ptask in tasks:
        graph[ptask["name"]] = set(ptask.get("runAfter") or []) | {t for t, _ in result_refs(_ptask_expressions(ptask))}
    for name, deps in graph.items():
        for dep in sorted(deps):
            if dep not in graph:
                errors.add(f"invalid value: couldn't add link between {name} and {dep}: task {name} depends on {dep} "
                           f"but {dep} wasn't present in Pipeline", "spec.tasks")
    cycle = find_cycle({n: {d for d in deps if d in graph} for n, deps in graph.items()})
    if cycle:
        errors.add(f"invalid value: cycle detected; {cycle}", "spec.tasks")
    # ValidatePipelineParameterVariables: types, defaults, duplicates
    names = [p["name"] for p in params]
    for p in params:
        if p["type"] not in ("string", "array", "object"):
            errors.add(f"invalid value: {p['type']}", f"spec.tasks.params.{p['name']}.type")
        if p.get("enum"):
            errors.add("feature flag `enable-param-enum` should be set to true to use Enum", f"spec.tasks.params[{p['name']}]")
    for name in {n for n in names if names.count(n) > 1}:
        errors.add("parameter appears more than once", f"spec.tasks.params[{name}]")
    # validatePipelineContextVariables (upstream checks only the last task of each list; we check all)
    allowed_context = {r"context\.pipelineRun": {"name", "namespace", "uid"}, r"context\.pipeline": {"name"},
                       r"context\.pipelineTask": {"retries"}}
    for section, _i, ptask in _ptasks(spec):
        for _, values, _ in _param_values(ptask):
            for value in values:
                for prefix, known in allowed_context.items():
                    errors.add(unknown_variables(value, prefix, known), f"spec.{section}.value")
    # validateExecutionStatusVariables
    for section, i, ptask in _ptasks(spec):
        for pname, _values, raw in _param_values(ptask):
            exprs = expressions(raw)
            if any(looks_like_result_ref(e) for e in exprs):
                continue
            for e in exprs:
                if not (e.startswith("tasks.") and (e.endswith(".status") or e.endswith(".reason"))):
                    continue
                if section == "tasks":
                    errors.add("invalid value: pipeline tasks can not refer to execution status of any other pipeline task "
                               "or aggregate status of tasks", f"spec.tasks[{i}].params[{pname}].value")
                elif e != "tasks.status":
                    target = e.removeprefix("tasks.").rsplit(".", 1)[0]
                    if target not in dag_names:
                        errors.add(f"invalid value: pipeline task {target} is not defined in the pipeline",
                                   f"spec.finally[{i}].params[{pname}].value")
    # validatePipelineWorkspacesDeclarations
    for i, name in enumerate(declared_ws):
        if not name:
            errors.add(f"invalid value: workspace {i} has empty name", f"spec.workspaces[{i}]")
        elif declared_ws.count(name) > 1 and declared_ws.index(name) != i:
            errors.add(f'invalid value: workspace with name "{name}" appears more than once', f"spec.workspaces[{i}]")
    # validatePipelineResults (and taskContainsResult)
    for i, result in enumerate(spec.get("results") or []):
        where = f"spec.results[{i}].value"
        exprs = expressions(result.get("value"))
        if not exprs:
            errors.add("invalid value: expected pipeline results to be task result expressions but no expressions were found", where)
        if not any(looks_like_result_ref(e) for e in exprs):
            errors.add("invalid value: expected pipeline results to be task result expressions but an invalid expressions was found", where)
        refs = [e for e in exprs if looks_like_result_ref(e)]
        if len(result_refs(refs)) != len(refs):
            errors.add(f"invalid value: expected all of the expressions {refs} to be result expressions", where)
        if isinstance(result.get("value"), str) and not task_contains_result(result["value"], dag_names, final_names):
            errors.add("invalid value: referencing a nonexistent task", where)
    # validateFinalTasks: no runAfter; result references only to DAG tasks
    for i, ptask in enumerate(final):
        if ptask.get("runAfter"):
            errors.add(f"invalid value: no runAfter allowed under spec.finally, final task {ptask['name']} has runAfter specified",
                       f"spec.finally[{i}]")
        for pname, _, raw in _param_values(ptask):
            for target, _ in result_refs(expressions(raw)):
                if target in final_names:
                    errors.add(f"invalid value: invalid task result reference, final task has task result reference from a final task {target}",
                               f"spec.finally[{i}].params[{pname}].value")
                elif target not in dag_names:
                    errors.add(f"invalid value: invalid task result reference, final task has task result reference from a task {target} "
                               "which is not defined in the pipeline", f"spec.finally[{i}].params[{pname}].value")
    # validateWhenExpressions (when_validation.go validateWhenExpressionFields)
    for section, i, ptask in _ptasks(spec):
        for j, when in enumerate(ptask.get("when") or []):
            where = f"spec.{section}[{i}].when[{j}]"
            if when.get("cel"):
                errors.add(f"feature flag enable-cel-in-whenexpression should be set to true to use CEL: {when['cel']} in WhenExpression", where)
            elif when.get("operator") not in ("in", "notin"):
                errors.add(f'invalid value: operator "{when.get("operator")}" is not recognized. valid operators: in,notin', where)
            elif not when.get("values"):
                errors.add("invalid value: expecting non-empty values field", where)
    # validateVarSubstitutionExpressions: every $(...) in params and when has a known prefix
    prefixes = {"params", "tasks", "finally", "context", "workspaces", "results"}
    for section, i, ptask in _ptasks(spec):
        for pname, _, raw in _param_values(ptask):
            for e in expressions(raw):
                if e.split(".", 1)[0] not in prefixes:
                    errors.add(f'invalid value: invalid variable reference "$({e})", must start with a valid prefix: params, tasks, '
                               "finally, context, workspaces, or results; if you meant a shell variable, use ${VAR} instead",
                               f"spec.{section}[{i}].params[{pname}].value")
    # Pipeline.Validate: validatePipelineParameterUsage (params[].value and when), validatePipelineWorkspacesUsage
    for section, i, ptask in _ptasks(spec):
        where = f"spec.{section}[{i}]"
        given = [p["name"] for p in ptask.get("params") or []]
        for name in {n for n in given if given.count(n) > 1}:
            errors.add(f'parameter names must be unique, the parameter "{name}" is also defined at', f"{where}.params[{given.index(name)}].name")
        for pname, values, raw in _param_values(ptask):
            if isinstance(raw, str):
                whole = re.fullmatch(r"\$\(params(\.[_a-zA-Z0-9.-]+\[\*\]|\[\"[_a-zA-Z0-9.-]+\[\*\]\"\]|\['[_a-zA-Z0-9.-]+\[\*\]'\])\)", raw)
                if whole:
                    errors.add(unknown_variables(raw, "params", param_names), f"{where}.params[{pname}]")
                    continue
                errors.add(unknown_variables(raw, "params", param_names), f"{where}.params[{pname}]")
                errors.add(prohibited_variables(raw, "params", arrays), f"{where}.params[{pname}]")
            else:
                for k, value in enumerate(values):
                    errors.add(unknown_variables(value, "params", param_names), f"{where}.params[{pname}].value[{k}]")
                    errors.add(not_isolated(value, "params", arrays), f"{where}.params[{pname}].value[{k}]")
        for j, when in enumerate(ptask.get("when") or []):
            for value in [when.get("input") or ""] + list(when.get("values") or []):
                errors.add(unknown_variables(value, "params", param_names), f"{where}.when[{j}]")
        bound = [w.get("name") for w in ptask.get("workspaces") or []]
        for k, binding in enumerate(ptask.get("workspaces") or []):
            if bound.count(binding.get("name")) > 1 and bound.index(binding.get("name")) != k:
                errors.add(f'workspace name "{binding.get("name")}" must be unique', f"{where}.workspaces[{k}]")
            target = binding.get("workspace") or binding.get("name")
            if target not in declared_ws:
                errors.add(f'invalid value: pipeline task "{ptask.get("name")}" expects workspace with name "{target}" '
                           "but none exists in pipeline spec", f"{where}.workspaces[{k}]")


def find_cycle(graph: dict[str, set[str]]) -> str | None:
    """pkg/reconciler/pipeline/dag/dag.go findCyclesInDependencies: Kahn's algorithm; the
    lexicographically first task left, with the dependencies it still has."""
    left = {name: set(deps) for name, deps in graph.items()}
    while True:
        ready = [name for name, deps in left.items() if not deps]
        if not ready:
            break
        for name in ready:
            del left[name]
        for deps in left.values():
            deps.difference_update(ready)
    if not left:
        return None
    task = min(left)
    return f'task "{task}" depends on ' + ", ".join(f'"{d}"' for d in sorted(left[task]))


def _ptask_expressions(ptask: dict) -> list[str]:
    found = []
    for _, _, raw in _param_values(ptask):
        found += expressions(raw)
    for when in ptask.get("when") or []:
        found += expressions(when.get("input") or "") + expressions(list(when.get("values") or []))
    return found


def task_contains_result(value: str, dag: list[str], final: list[str]) -> bool:
    """pipeline_validation.go taskContainsResult: split on '$'; every piece must parse as a
    task result reference to an existing task (so no text before the first reference)."""
    for piece in value.split("$"):
        if not piece:
            continue
        expression = ("$" + piece).removeprefix("$(").removesuffix(")")
        parsed = parse_task_expression(expression)
        if parsed is None:
            return False
        if expression.startswith("tasks") and parsed[0] not in dag:
            return False
        if expression.startswith("finally") and parsed[0] not in final:
            return False
    return True


def validate_pipelinerun(spec: dict, errors: Errors) -> None:
    """pipelinerun_validation.go PipelineRunSpec.Validate (a CREATE)."""
    if bool(spec.get("pipelineRef")) == bool(spec.get("pipelineSpec")):
        errors.add("expected exactly one, got " + ("both" if spec.get("pipelineRef") else "neither"),
                   "spec.pipelineRef, spec.pipelineSpec")
    if spec.get("pipelineSpec"):
        errors.add("the checker does not cover an embedded pipelineSpec", "spec.pipelineSpec")
    elif spec.get("pipelineRef") and not spec["pipelineRef"].get("name") and not spec["pipelineRef"].get("resolver"):
        errors.add("missing field(s)", "spec.pipelineRef.name")
    # validatePipelineRunParameters: case-insensitive duplicates, no result references
    lowered = [p["name"].lower() for p in spec.get("params") or []]
    for param in spec.get("params") or []:
        if lowered.count(param["name"].lower()) > 1:
            errors.add("expected exactly one, got both", f"spec.params[{param['name']}].name")
        refs = [e for e in expressions(param.get("value")) if looks_like_result_ref(e)]
        if refs:
            errors.add(f"invalid value: cannot use result expressions in {refs} as PipelineRun parameter values",
                       f"spec.params[{param['name']}].value")
    # timeouts: validateTimeoutDuration and validatePipelineTimeout
    timeouts = spec.get("timeouts") or {}
    values = {}
    for key in ("pipeline", "tasks", "finally"):
        if key in timeouts:
            try:
                values[key] = seconds(str(timeouts[key]))
            except ValueError as err:
                errors.add(f"cannot decode incoming new object: {err}", f"spec.timeouts.{key}")
    limit = values.get("pipeline", 3600.0)
    for key in ("tasks", "finally"):
        if key in values and limit != 0 and (values[key] > limit or values[key] == 0):
            shown = "0s (no timeout)" if values[key] == 0 else go_duration(values[key])
            errors.add(f"invalid value: {shown} should be <= pipeline duration", f"spec.timeouts.{key}")
    if "tasks" in values and "finally" in values and values["tasks"] + values["finally"] > limit:
        message = f"invalid value: {go_duration(values['tasks'])} + {go_duration(values['finally'])} should be <= pipeline duration"
        errors.add(message, "spec.timeouts.tasks")
        errors.add(message, "spec.timeouts.finally")
    # validateTaskRunSpec
    for i, trs in enumerate(spec.get("taskRunSpecs") or []):
        if "timeout" in trs:
            bound, label = (values["tasks"], "pipeline tasks duration") if "tasks" in values else (limit, "pipeline duration")
            if bound and seconds(trs["timeout"]) > bound:
                errors.add(f"invalid value: {go_duration(seconds(trs['timeout']))} should be <= {label} {go_duration(bound)}",
                           f"spec.taskRunSpecs[{i}].timeout")
    # validateSpecStatus
    if spec.get("status") not in (None, "", "Cancelled", "CancelledRunFinally", "StoppedRunFinally", "PipelineRunPending"):
        errors.add(f"invalid value: {spec['status']} should be Cancelled, CancelledRunFinally, StoppedRunFinally or PipelineRunPending",
                   "spec.status")
    # workspaces: WorkspaceBinding.Validate and duplicates
    names = [w.get("name") for w in spec.get("workspaces") or []]
    sources = ("volumeClaimTemplate", "persistentVolumeClaim", "emptyDir", "configMap", "secret", "projected", "csi")
    for i, binding in enumerate(spec.get("workspaces") or []):
        where = f"spec.workspaces[{i}]"
        given = [s for s in sources if binding.get(s) is not None]
        paths = ", ".join(f"{where}.{s}" for s in ("configmap", "emptydir", "persistentvolumeclaim", "secret", "volumeclaimtemplate"))
        if len(given) > 1:
            errors.add("expected exactly one, got both", paths)
        elif not given:
            errors.add("expected exactly one, got neither", paths)
        elif given == ["secret"] and not binding["secret"].get("secretName"):
            errors.add("missing field(s)", f"{where}.secret.secretName")
        elif given == ["persistentVolumeClaim"] and not binding["persistentVolumeClaim"].get("claimName"):
            errors.add("missing field(s)", f"{where}.persistentvolumeclaim.claimname")
        if names.index(binding.get("name")) != i:
            errors.add(f'workspace "{binding.get("name")}" provided by pipelinerun more than once, at index '
                       f"{names.index(binding.get('name'))} and {i}", f"{where}.name")


# --- run time: the PipelineRun reconciler -------------------------------------------------------
def runtime(run: dict, pipeline: dict, tasks: dict[str, dict]) -> list[str]:
    """What fails a PipelineRun after admission (tektoncd/pipeline v1.15.0, pkg/reconciler/):
    pipelinerun/resources/validate_params.go ValidateRequiredParametersProvided and
    ValidateParamTypesMatching, pipelinerunresolution.go ValidateWorkspaceBindings and
    ValidateTaskRunSpecs, resolving each taskRef (TaskNotFoundError), taskrun/validate_taskrun.go
    validateParams (missing and mistyped params), pkg/workspace/validate.go ValidateBindings,
    and result references that name no result of the referenced Task
    (pipelinerunresolution.go CheckMissingResultReferences)."""
    problems = []
    pspec = set_defaults(pipeline)["spec"]
    rspec = run["spec"]
    given = {p["name"]: p.get("value") for p in rspec.get("params") or []}
    declared = {p["name"]: p for p in pspec.get("params") or []}
    missing = [n for n, p in declared.items() if "default" not in p and n not in given]
    if missing:
        problems.append(f"pipelineRun missing parameters: [{' '.join(missing)}]")
    for name, value in given.items():
        if name in declared and ("array" if isinstance(value, list) else "object" if isinstance(value, dict) else "string") != declared[name]["type"]:
            problems.append(f"parameters have mismatching types with Pipeline {pipeline['metadata']['name']}'s parameters: [{name}]")
    bound = {w["name"] for w in rspec.get("workspaces") or []}
    for ws in pspec.get("workspaces") or []:
        if not ws.get("optional") and ws["name"] not in bound:
            problems.append(f'pipeline requires workspace with name "{ws["name"]}" be provided by pipelinerun')
    names = {t["name"] for t in (pspec.get("tasks") or []) + (pspec.get("finally") or [])}
    for trs in rspec.get("taskRunSpecs") or []:
        if trs.get("pipelineTaskName") not in names:
            problems.append(f'pipelineRun\'s taskrunSpecs defined wrong taskName: "{trs.get("pipelineTaskName")}", does not exist in Pipeline')
    by_name = {t["name"]: t for t in pspec.get("tasks") or []}
    for section, _, ptask in _ptasks(pspec):
        ref = (ptask.get("taskRef") or {}).get("name")
        task = tasks.get(ref)
        if task is None:
            problems.append(f"{section} {ptask['name']}: Task {ref!r} not found")
            continue
        tspec = set_defaults(task)["spec"]
        given_params = {p["name"]: p.get("value") for p in ptask.get("params") or []}
        needed = [p["name"] for p in tspec.get("params") or [] if "default" not in p and p["name"] not in given_params]
        if needed:
            problems.append(f"{ptask['name']}: missing values for these params which have no default values: [{' '.join(needed)}]")
        types = {p["name"]: p["type"] for p in tspec.get("params") or []}
        # pkg/reconciler/taskrun/validate_taskrun.go wrongTypeParamsNames: a string holding a
        # variable reference may be given to an array or object param ($(tasks.x.results.y[*])).
        wrong = [n for n, v in given_params.items() if n in types and (isinstance(v, list)) != (types[n] == "array")
                 and not (isinstance(v, str) and types[n] in ("array", "object") and VARIABLE.search(v))]
        if wrong:
            problems.append(f"{ptask['name']}: param types don't match the user-specified type: [{' '.join(wrong)}]")
        task_ws = {w["name"]: w for w in tspec.get("workspaces") or []}
        ptask_ws = {w["name"] for w in ptask.get("workspaces") or []}
        for name, ws in task_ws.items():
            if not ws.get("optional") and name not in ptask_ws:
                problems.append(f'{ptask["name"]}: declared workspace "{name}" is required but has not been bound')
        for name in ptask_ws - set(task_ws):
            problems.append(f'{ptask["name"]}: workspace binding "{name}" does not match any declared workspace')
        for target, result in result_refs(_ptask_expressions(ptask)):
            source = tasks.get(((by_name.get(target) or {}).get("taskRef") or {}).get("name"))
            if source and result not in {r["name"] for r in source["spec"].get("results") or []}:
                problems.append(f'{ptask["name"]}: Could not find result with name {result} for task {target}')
    for result in pspec.get("results") or []:
        for target, name in result_refs(expressions(result.get("value"))):
            source = tasks.get(((by_name.get(target) or {}).get("taskRef") or {}).get("name"))
            if source and name not in {r["name"] for r in source["spec"].get("results") or []}:
                problems.append(f"pipeline result {result['name']}: Could not find result with name {name} for task {target}")
    return problems


# --- this project's own rules -----------------------------------------------------------------
def lint_task(task: dict) -> list[str]:
    """Ours, not Tekton's: every Task and param is described; every $(workspaces.x...) and
    $(steps.step-x.exitCode.path) names one (Tekton leaves both to run time)."""
    spec = task["spec"]
    problems = [f"param {p['name']} has no description" for p in spec.get("params") or [] if not p.get("description")]
    if not spec.get("description"):
        problems.append("the Task has no description")
    workspaces = {w["name"] for w in spec.get("workspaces") or []}
    steps = {f"step-{s['name']}" for s in spec.get("steps") or []}
    for path, text in strings(spec):
        for ref in VARIABLE.findall(text):
            parts = ref.split(".")
            if parts[0] == "workspaces" and (len(parts) != 3 or parts[1] not in workspaces or parts[2] not in ("path", "bound", "claim", "volume")):
                problems.append(f"{path}: $({ref}) names no workspace")
            elif parts[0] == "steps" and (len(parts) != 4 or parts[1] not in steps or parts[2:] != ["exitCode", "path"]):
                problems.append(f"{path}: $({ref}) names no step's exit code")
    return problems


def lint_pipeline(pipeline: dict, tasks: dict[str, dict]) -> list[str]:
    """Ours, not Tekton's: no param is passed that the Task does not declare (Tekton ignores it)."""
    problems = []
    for section, _, ptask in _ptasks(pipeline["spec"]):
        task = tasks.get((ptask.get("taskRef") or {}).get("name"))
        if task:
            declared = {p["name"] for p in task["spec"].get("params") or []}
            problems += [f"{section}.{ptask['name']}: unknown param {p['name']}" for p in ptask.get("params") or []
                         if p["name"] not in declared]
    return problems


# --- simulating a run -----------------------------------------------------------------------------
def _task_refs(value: str) -> set[str]:
    return {ref.split(".")[1] for ref in VARIABLE.findall(value) if ref.startswith("tasks.")}


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
    """Tekton substitution over a string, list or dict; array params expand in lists, and a
    string that is a whole reference to an array becomes that array (v1.15.0
    pkg/apis/pipeline/v1/param_types.go ParamValue.applyOrCorrect)."""
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
        whole = VARIABLE.fullmatch(value)
        if whole and whole.group(1).endswith("[*]") and isinstance(variables.get(whole.group(1)[:-3]), list):
            return list(variables[whole.group(1)[:-3]])

        def replace(match):
            key = match.group(1)
            if key not in variables:
                raise KeyError(f"$({key}) has no value")
            return str(variables[key])

        return VARIABLE.sub(replace, value)
    return value
