"""The Tekton bundle: it builds, validates against the upstream schemas, lints clean, and
every reference in it resolves."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, need, need_tool
from crdschema import core_errors, crds_dir, errors, schema_for
from tekton import VARIABLE, bundle, by_kind, check_pipeline, check_task, scripts, strings

LINT = ROOT / "hack" / "tekton-lint"
SAMPLE_RUN = ROOT / "tasks" / "samples" / "canary-rollout-run.yaml"
TEKTON_KINDS = {"Task", "Pipeline", "PipelineRun", "EventListener", "TriggerBinding", "TriggerTemplate"}


@pytest.fixture(scope="module")
def objects():
    need_tool("kubectl")
    return bundle()


def test_bundle_holds_the_tasks_pipeline_and_rbac(objects):
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for task in TASKS:
        assert ("Task", task) in kinds
    assert {name for kind, name in kinds if kind == "Task"} == set(TASKS)
    assert {("Pipeline", "canary-rollout"), ("ServiceAccount", "canary-pipeline"), ("Role", "canary-pipeline"),
            ("RoleBinding", "canary-pipeline")} <= kinds
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


def test_images_are_pinned(objects):
    for obj in objects:
        for path, text in strings(obj):
            if path.endswith(".image") and not VARIABLE.fullmatch(text):
                assert re.search(r"(:[\w.-]+|@sha256:[0-9a-f]{64})$", text.rsplit("/", 1)[-1]), f"{path}: {text} is not pinned"
                assert not text.endswith(":latest"), f"{path}: {text}"
    for task in by_kind(objects, "Task").values():  # images given by params default to pinned ones
        for param in task["spec"].get("params") or []:
            if param["name"].endswith("-image"):
                assert re.search(r":v?\d[\w.-]*$", param["default"]), f"{task['metadata']['name']}: {param}"


def test_no_substitution_inside_any_script(objects):
    for obj in objects:
        if obj["kind"] == "Task":
            for step, script in scripts(obj):
                assert "$(" not in script, f"{obj['metadata']['name']}/{step}: values must come as env or args"


TASKS = ["acquire-lock", "fetch-source", "build", "create-experiment", "deploy", "generate-load", "wait-completion", "cleanup"]


@pytest.mark.parametrize("name", TASKS)
def test_task_references_resolve(objects, name):
    assert check_task(by_kind(objects, "Task")[name]) == []


def test_pipeline_references_resolve(objects):
    assert check_pipeline(by_kind(objects, "Pipeline")["canary-rollout"], by_kind(objects, "Task")) == []


def test_pipeline_check_catches_mistakes(objects):
    tasks = by_kind(objects, "Task")
    pipeline = json.loads(json.dumps(by_kind(objects, "Pipeline")["canary-rollout"]))
    spec = pipeline["spec"]
    spec["tasks"][0]["runAfter"] = ["wait-completion"]  # a cycle
    spec["tasks"][1]["params"].append({"name": "nope", "value": "$(tasks.fetch-source.results.nothing)"})
    spec["finally"][0]["params"][1]["value"] = "$(tasks.no-such-task.results.experiment)"
    spec["tasks"][2]["taskRef"]["name"] = "missing-task"
    problems = "\n".join(check_pipeline(pipeline, tasks))
    for expected in ("cycle", "unknown param nope", "names no result of fetch-source", "names no DAG task", "'missing-task' is not in the bundle"):
        assert expected in problems


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


def test_step_image_has_one_name_replaced_by_kustomize(tmp_path):
    need_tool("kubectl")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    shutil.copytree(ROOT, tmp_path / "repo", ignore=shutil.ignore_patterns(".venv", ".git", "node_modules", ".cache"))
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": ["../repo"],
        "images": [{"name": "ghcr.io/iter8-tekton/steps", "newName": "registry.local/steps", "digest": "sha256:" + "1" * 64}],
    }))
    images = {text for obj in bundle(overlay) for path, text in strings(obj) if path.endswith(".image")}
    assert "registry.local/steps@sha256:" + "1" * 64 in images
    assert not any("ghcr.io/iter8-tekton/steps" in image for image in images)


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


def test_readme_documents_every_task(objects):
    readme = (ROOT / "README.md").read_text()
    for name, task in by_kind(objects, "Task").items():
        section = readme.split(f"### Task `{name}`", 1)
        assert len(section) == 2, f"README has no section for Task {name}"
        body = section[1].split("\n### ", 1)[0]
        spec = task["spec"]
        for param in spec.get("params") or []:
            assert f"| `{param['name']}` |" in body, f"{name}: param {param['name']} missing from its table"
        for result in spec.get("results") or []:
            assert f"| `{result['name']}` |" in body, f"{name}: result {result['name']} missing"
        for ws in spec.get("workspaces") or []:
            assert f"| `{ws['name']}` |" in body, f"{name}: workspace {ws['name']} missing"
        assert "```yaml" in body, f"{name}: no usage example"
