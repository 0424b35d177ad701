"""Linters over the project's own files: ruff (Python), yamllint (YAML); the shell,
Dockerfile and Tekton linters run in test_image.py and test_bundle.py."""

from __future__ import annotations

import subprocess

from conftest import ROOT, need_tool


def test_python_passes_ruff():
    ruff = need_tool("ruff")
    proc = subprocess.run([ruff, "check", "steps", "hack", "tests", "hack/preview"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_yaml_passes_yamllint():
    yamllint = need_tool("yamllint")
    files = ["kustomization.yaml", "replacements.yaml", "tasks", "triggers", "tests/apps", ".hadolint.yaml", "hack/tekton-lint/.tektonlintrc.yaml"]
    proc = subprocess.run([yamllint, "--strict", "-c", ".yamllint.yaml", *files], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
