"""The Tekton bundle: it builds, validates against the upstream schemas, lints clean, and
every reference in it resolves."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, need, need_tool
from crdschema import core_errors, crds_dir, errors, schema_for
from tekton import VARIABLE, admission, bundle, by_kind, lint_pipeline, lint_task, runtime, scripts, seconds, strings

LINT = ROOT / "hack" / "tekton-lint"
SAMPLE_RUN = ROOT / "tasks" / "samples" / "canary-rollout-run.yaml"
TEKTON_KINDS = {"Task", "Pipeline", "PipelineRun", "EventListener", "Trigger", "TriggerBinding", "TriggerTemplate"}


@pytest.fixture(scope="module")
def objects():
    need_tool("kubectl")
    return bundle()


def test_bundle_holds_the_tasks_pipeline_and_rbac(objects):
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for task in TASKS:
        assert ("Task", task) in kinds
    assert {name for kind, name in kinds if kind == "Task"} == set(TASKS)
    assert ("Pipeline", "canary-rollout") in kinds and ("ConfigMap", "canary-rollout-settings") in kinds
    for account in ("fetch", "settings", "doctor", "lock", "build", "experiment", "deploy", "load", "wait", "cleanup"):
        assert ("ServiceAccount", f"canary-{account}") in kinds
    assert all(o["apiVersion"] == "tekton.dev/v1" for o in objects if o["kind"] in ("Task", "Pipeline"))


def test_every_object_validates(objects):
    need(crds_dir(), "the upstream CRDs (../shared/crds, or run hack/fetch-crds.py)")
    for obj in objects + [yaml.safe_load(SAMPLE_RUN.read_text())]:
        where = f"{obj['kind']} {obj['metadata'].get('name', obj['metadata'].get('generateName'))}"
        if obj["kind"] in TEKTON_KINDS:
            assert schema_for(obj["apiVersion"], obj["kind"]) is not None, f"no schema for {where}"
            assert errors(obj) == [], where
        else:
            assert core_errors(obj) == [], where


def test_schema_check_rejects_a_misspelt_field(objects):
    need(crds_dir(), "the upstream CRDs")
    task = json.loads(json.dumps(by_kind(objects, "Task")["cleanup"]))
    task["spec"]["steps"][0]["agrs"] = task["spec"]["steps"][0].pop("args")
    assert any("agrs" in e for e in errors(task))


def images(objects) -> set[str]:
    return {text for obj in objects for path, text in strings(obj) if path.endswith(".image")}


def test_images_are_pinned(objects):
    assert images(objects), "the Tasks name their images"
    for image in images(objects):
        assert not VARIABLE.search(image), f"{image}: an image from a param escapes the one place images are set"
        assert re.search(r"(:[\w.-]+|@sha256:[0-9a-f]{64})$", image.rsplit("/", 1)[-1]), f"{image} is not pinned"
        assert not image.endswith(":latest"), image


def test_every_image_comes_from_the_install_settings():
    """Change each image in the install's settings (triggers/settings.env), render the bundle
    and the PipelineRun a push makes: no other image is left anywhere."""
    need_tool("kubectl")
    mine = {"steps-image": "mirror.example.com/iter8-tekton/steps@sha256:" + "1" * 64,
            "git-image": "mirror.example.com/iter8-tekton/git:7",
            "builder-image": "mirror.example.com/kaniko/executor:v1.25.0-fork"}
    objects = bundle(mine)
    assert images(objects) == set(mine.values())
    assert by_kind(objects, "Task")["build"]["spec"]["steps"][0]["image"] == mine["builder-image"]
    push = json.dumps(by_kind(objects, "TriggerTemplate")["canary-rollout"]["spec"]["resourcetemplates"])
    assert "image" not in push, "the PipelineRun a push makes names no image of its own"


def test_the_builders_extra_args_reach_kaniko(objects):
    """builder-extra-args: read-settings' array result, the build Task's extra-args, kaniko's
    argv (an array result is beta, on with Tekton's default enable-api-fields, v1.15.0
    docs/pipelines.md "Passing Results")."""
    read = {r["name"]: r for r in by_kind(objects, "Task")["read-settings"]["spec"]["results"]}
    assert read["builder-args"]["type"] == "array"
    build = next(t for t in by_kind(objects, "Pipeline")["canary-rollout"]["spec"]["tasks"] if t["name"] == "build")
    assert {"name": "extra-args", "value": "$(tasks.read-settings.results.builder-args[*])"} in build["params"]
    assert "$(params.extra-args[*])" in by_kind(objects, "Task")["build"]["spec"]["steps"][0]["args"]


def test_no_substitution_inside_any_script(objects):
    for obj in objects:
        if obj["kind"] == "Task":
            for step, script in scripts(obj):
                assert "$(" not in script, f"{obj['metadata']['name']}/{step}: values must come as env or args"


TASKS = ["fetch-source", "read-settings", "doctor", "acquire-lock", "build", "create-experiment", "deploy",
         "generate-load", "wait-completion", "cleanup"]


def test_tektons_admission_accepts_every_object(objects):
    """tektoncd/pipeline v1.15.0: SetDefaults then Validate, as its webhook runs them
    (cmd/webhook/main.go; pkg/apis/pipeline/v1 task_validation.go, pipeline_validation.go,
    pipelinerun_validation.go). The PipelineRun a push makes is checked in test_triggers."""
    for obj in objects + [yaml.safe_load(SAMPLE_RUN.read_text())]:
        if obj["kind"] in ("Task", "Pipeline", "PipelineRun"):
            assert admission(obj) == [], f"{obj['kind']} {obj['metadata'].get('name')}"


def test_admission_rejects_a_pipeline_result_that_is_not_only_task_results(objects):
    """pipeline_validation.go validatePipelineResults / taskContainsResult: the value that
    the previous release shipped, which Tekton's webhook refused."""
    pipeline = json.loads(json.dumps(by_kind(objects, "Pipeline")["canary-rollout"]))
    image = next(i for i, r in enumerate(pipeline["spec"]["results"]) if r["name"] == "image")
    pipeline["spec"]["results"][image]["value"] = "$(params.image-repository)@$(tasks.build.results.IMAGE_DIGEST)"
    assert f"invalid value: referencing a nonexistent task: spec.results[{image}].value" in admission(pipeline)
    pipeline["spec"]["results"][image]["value"] = "$(tasks.build.results.IMAGE_REF)"
    assert admission(pipeline) == []


def _mutated(objects, change):
    pipeline = json.loads(json.dumps(by_kind(objects, "Pipeline")["canary-rollout"]))
    change(pipeline["spec"], {t["name"]: t for t in pipeline["spec"]["tasks"]}, pipeline["spec"]["finally"][0])
    return admission(pipeline)


@pytest.mark.parametrize(("change", "message"), [
    # dag.go Build (findCyclesInDependencies), via pipeline_validation.go validateGraph
    (lambda s, t, f: t["fetch-source"].update(runAfter=["wait-completion"]), "invalid value: cycle detected; task "),
    (lambda s, t, f: t["build"].update(runAfter=["no-such-task"]), "but no-such-task wasn't present in Pipeline: spec.tasks"),
    # validatePipelineParameterUsage: an undeclared $(params.x)
    (lambda s, t, f: t["build"]["params"].append({"name": "x", "value": "$(params.nope)"}),
     'non-existent variable in "$(params.nope)": spec.tasks[4].params[x]'),
    # validateFinalTasks
    (lambda s, t, f: f.update(runAfter=["build"]), "no runAfter allowed under spec.finally"),
    (lambda s, t, f: f["params"].append({"name": "x", "value": "$(tasks.no-such-task.results.r)"}),
     "final task has task result reference from a task no-such-task which is not defined in the pipeline"),
    # validateExecutionStatusVariables
    (lambda s, t, f: t["build"]["params"].append({"name": "x", "value": "$(tasks.status)"}),
     "pipeline tasks can not refer to execution status of any other pipeline task"),
    (lambda s, t, f: f["params"].append({"name": "x", "value": "$(tasks.nope.status)"}), "pipeline task nope is not defined in the pipeline"),
    # validatePipelineContextVariables
    (lambda s, t, f: f["params"].append({"name": "x", "value": "$(context.pipelineRun.labels)"}),
     'non-existent variable in "$(context.pipelineRun.labels)": spec.finally.value'),
    # validateVarSubstitutionExpressions
    (lambda s, t, f: t["build"]["params"].append({"name": "x", "value": "$(date)"}), 'invalid variable reference "$(date)"'),
    # validateWhenExpressions
    (lambda s, t, f: t["build"].update(when=[{"input": "a", "operator": "is", "values": ["a"]}]), 'operator "is" is not recognized'),
    # validatePipelineWorkspacesUsage
    (lambda s, t, f: t["build"]["workspaces"].append({"name": "cache", "workspace": "cache"}),
     'expects workspace with name "cache" but none exists in pipeline spec'),
    # PipelineTask.ValidateName
    (lambda s, t, f: t["build"].update(name="Build"), 'invalid value "Build": spec.tasks[4].name'),
])
def test_admission_rules_catch_mistakes(objects, change, message):
    problems = "\n".join(_mutated(objects, change))
    assert message in problems, problems


def test_admission_checks_task_references(objects):
    """task_validation.go ValidateUsageOfDeclaredParameters, validateTaskResultsVariables,
    validateArrayUsage; container_validation.go Step.Validate."""
    task = json.loads(json.dumps(by_kind(objects, "Task")["fetch-source"]))
    task["spec"]["steps"][0]["env"].append({"name": "X", "value": "$(params.nope)"})
    task["spec"]["steps"][0]["script"] += 'echo "$(results.nope.path)"\n'
    task["spec"]["steps"][0]["onError"] = "ignore"
    problems = "\n".join(admission(task))
    assert 'non-existent variable in "$(params.nope)": spec.steps[0].env[X]' in problems
    assert "spec.steps[0].script" in problems
    assert 'invalid value: "ignore": spec.steps[0].onError' in problems
    build = json.loads(json.dumps(by_kind(objects, "Task")["build"]))
    build["spec"]["steps"][0]["args"][-1] = "--x=$(params.extra-args[*])"
    assert any("variable is not properly isolated" in p for p in admission(build))


def test_admission_checks_pipelinerun_timeouts_and_workspaces():
    """pipelinerun_validation.go validatePipelineTimeout, workspace_validation.go."""
    run = yaml.safe_load(SAMPLE_RUN.read_text())
    run["spec"]["timeouts"] = {"pipeline": "1h", "tasks": "50m", "finally": "15m"}
    assert "invalid value: 50m0s + 15m0s should be <= pipeline duration: spec.timeouts.tasks" in admission(run)
    run = yaml.safe_load(SAMPLE_RUN.read_text())
    del run["spec"]["timeouts"]["pipeline"]  # SetDefaults makes it 60m
    assert any("should be <= pipeline duration" in p for p in admission(run))
    run = yaml.safe_load(SAMPLE_RUN.read_text())
    run["spec"]["workspaces"][1]["emptyDir"] = {}
    assert any(p.startswith("expected exactly one, got both: spec.workspaces[1]") for p in admission(run))


def test_the_sample_run_resolves(objects):
    """What the PipelineRun reconciler checks when the run starts (test/tekton.py runtime)."""
    run = yaml.safe_load(SAMPLE_RUN.read_text())
    assert runtime(run, by_kind(objects, "Pipeline")["canary-rollout"], by_kind(objects, "Task")) == []


def test_runtime_catches_what_admission_leaves_to_the_run(objects):
    tasks = by_kind(objects, "Task")
    pipeline = json.loads(json.dumps(by_kind(objects, "Pipeline")["canary-rollout"]))
    deploy = next(t for t in pipeline["spec"]["tasks"] if t["name"] == "deploy")
    next(p for p in deploy["params"] if p["name"] == "image")["value"] = "$(tasks.build.results.IMAGE)"
    deploy["params"] = [p for p in deploy["params"] if p["name"] != "version"]
    run = yaml.safe_load(SAMPLE_RUN.read_text())
    run["spec"]["taskRunSpecs"].append({"pipelineTaskName": "nope", "serviceAccountName": "x"})
    run["spec"]["workspaces"] = run["spec"]["workspaces"][1:]
    problems = "\n".join(runtime(run, pipeline, tasks))
    assert admission(pipeline) == []  # none of this is an admission error
    for expected in ("Could not find result with name IMAGE for task build", "missing values for these params which have no default values: [version]",
                     'taskrunSpecs defined wrong taskName: "nope"', 'pipeline requires workspace with name "source"'):
        assert expected in problems


@pytest.mark.parametrize("name", TASKS)
def test_task_lint(objects, name):
    assert lint_task(by_kind(objects, "Task")[name]) == []


def test_pipeline_lint(objects):
    assert lint_pipeline(by_kind(objects, "Pipeline")["canary-rollout"], by_kind(objects, "Task")) == []


def test_timeouts_are_explicit(objects):
    spec = by_kind(objects, "Pipeline")["canary-rollout"]["spec"]
    for ptask in spec["tasks"] + spec["finally"]:
        assert ptask.get("timeout"), ptask["name"]
    run = yaml.safe_load(SAMPLE_RUN.read_text())
    assert set(run["spec"]["timeouts"]) == {"pipeline", "tasks", "finally"}


def test_experiment_exists_before_the_candidate_and_load_waits_for_it(objects):
    tasks = {t["name"]: t for t in by_kind(objects, "Pipeline")["canary-rollout"]["spec"]["tasks"]}
    assert tasks["deploy"]["runAfter"] == ["create-experiment"]
    assert tasks["generate-load"]["runAfter"] == ["deploy"] and tasks["wait-completion"]["runAfter"] == ["deploy"]


def test_pods_run_as_non_root_except_kaniko(objects):
    for task in by_kind(objects, "Task").values():
        template = (task["spec"].get("stepTemplate") or {}).get("securityContext") or {}
        for step in task["spec"]["steps"]:
            context = {**template, **(step.get("securityContext") or {})}
            assert context.get("allowPrivilegeEscalation") is False, step["name"]
            if step["name"] == "build-and-push":
                assert context.get("runAsUser") == 0
            else:
                assert context.get("runAsNonRoot") is True, f"{task['metadata']['name']}/{step['name']}"
    assert "must run as root" in (ROOT / "tasks" / "build.yaml").read_text()


def run_lint(target: Path) -> subprocess.CompletedProcess:
    binary = LINT / "node_modules" / ".bin" / "tekton-lint"
    need(binary.exists(), "tekton-lint (hack/test runs npm ci in hack/tekton-lint)")
    return subprocess.run(
        [str(binary), "--color=false", "--format", "json", "--config", str(LINT / ".tektonlintrc.yaml"), str(target)],
        capture_output=True, text=True, cwd=LINT, env={**os.environ, "TL_CACHE_DIR": str(target.parent / ".tlcache")},
    )


def test_tekton_lint_reports_nothing(objects, tmp_path):
    target = tmp_path / "bundle.yaml"
    target.write_text(yaml.safe_dump_all(objects + [yaml.safe_load(SAMPLE_RUN.read_text())]))
    proc = run_lint(target)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout) == []


def test_tekton_lint_custom_rule_fires(objects, tmp_path):
    task = json.loads(json.dumps(by_kind(objects, "Task")["fetch-source"]))
    task["spec"]["steps"][0]["script"] += 'echo "$(params.revision)"\n'
    target = tmp_path / "bad.yaml"
    target.write_text(yaml.safe_dump(task))
    proc = run_lint(target)
    assert proc.returncode == 1
    found = [p for p in json.loads(proc.stdout) if p["rule"].endswith("no-substitution-in-script")]
    assert len(found) == 1 and "$(params.revision)" in found[0]["message"] and found[0]["level"] == "error"


def test_scripts_pass_shellcheck(objects, tmp_path):
    shellcheck = need_tool("shellcheck")
    for task in by_kind(objects, "Task").values():
        for step, script in scripts(task):
            path = tmp_path / f"{task['metadata']['name']}-{step}.sh"
            path.write_text(script)
            proc = subprocess.run([shellcheck, "--shell=sh", str(path)], capture_output=True, text=True)
            assert proc.returncode == 0, proc.stdout


def test_every_run_frees_its_pvc_and_states_the_minimum_tekton(objects):
    """pkg/reconciler/pipelinerun/affinity_assistant.go cleanupAffinityAssistantsAndPVCs: with
    the default coschedule: workspaces, a volumeClaimTemplate's PVC is deleted when the run
    ends only with tekton.dev/auto-cleanup-pvc: "true" (tektoncd/pipeline v1.11.0 and later)."""
    run = yaml.safe_load(SAMPLE_RUN.read_text())
    template = by_kind(objects, "TriggerTemplate")["canary-rollout"]["spec"]["resourcetemplates"][0]
    for pipeline_run in (run, template):
        assert pipeline_run["metadata"]["annotations"]["tekton.dev/auto-cleanup-pvc"] == "true"
        assert pipeline_run["spec"]["workspaces"][1]["secret"]["optional"] is True  # no Secret: an empty volume, no stuck pod
    docs = "".join(p.read_text() for p in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
    assert "kubectl annotate --local -f - tekton.dev/auto-cleanup-pvc=true" in docs, "the tkn start annotates too"
    for obj in objects:
        if obj["kind"] in ("Task", "Pipeline"):
            assert obj["metadata"]["annotations"]["tekton.dev/pipelines.minVersion"] == "1.11.0", obj["metadata"]["name"]


def test_one_experiment_timeout_drives_every_limit(objects):
    """Tekton takes no task timeout from a param (PipelineTask.timeout is a metav1.Duration),
    so the experiment timeout is capped at 3600 s and both tasks that wait on it get 65m."""
    tasks = {t["name"]: t for t in by_kind(objects, "Pipeline")["canary-rollout"]["spec"]["tasks"]}
    value = "$(tasks.read-settings.results.experiment-timeout)"
    params = lambda name: {p["name"]: p["value"] for p in tasks[name]["params"]}  # noqa: E731
    assert params("wait-completion")["timeout"] == value and params("generate-load")["max-duration"] == value
    assert params("create-experiment")["experiment-timeout"] == value
    cap = int(by_kind(objects, "ConfigMap")["canary-rollout-settings"]["data"]["max-experiment-timeout"])
    for name in ("wait-completion", "generate-load"):
        assert seconds(tasks[name]["timeout"]) >= cap + 60
    run = yaml.safe_load(SAMPLE_RUN.read_text())
    critical = sum(seconds(tasks[n]["timeout"]) for n in ("fetch-source", "read-settings", "doctor", "acquire-lock", "build",
                                                           "create-experiment", "deploy", "wait-completion"))
    assert critical <= seconds(run["spec"]["timeouts"]["tasks"])


def test_everything_happens_in_the_runs_own_namespace(objects):
    """No namespace param that must equal the run's: the Tasks use $(context.taskRun.namespace)."""
    for obj in objects:
        if obj["kind"] in ("Task", "Pipeline"):
            names = {p["name"] for p in obj["spec"].get("params") or []}
            assert not names & {"namespace", "app-namespace"}, obj["metadata"]["name"]
    for task in by_kind(objects, "Task").values():
        args = [a for s in task["spec"]["steps"] for a in s.get("args") or []]
        assert all(a == "--namespace=$(context.taskRun.namespace)" for a in args if a.startswith("--namespace"))
