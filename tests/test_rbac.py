"""Each Task's ServiceAccount is granted exactly the API calls its steps make, nothing wider.

The calls are recorded, per ServiceAccount (each has its own token, so the fake API
server's log names the caller), from whole pipeline runs through the bundle's YAML and
from the step paths that a run rarely takes: a watch answered 410 (a re-list), iter8
pausing over a slow candidate (a resume), an analytics outage (a rollback), a superseded
run, a candidate with a Secret, old runs to prune. Server-side apply is authorized as
`patch`, and also as `create` when the object is new (Kubernetes docs, API concepts,
"Patch and apply"); the fake API logs both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

import pytest
import yaml

from cluster import (NS, V2, deployment, destination_rule, experiment_v2, pipeline_run, prerequisites, service, v2_completed,
                     virtual_service)
from conftest import APPS, ROOT, need, need_tool, wait_for
from crdschema import crds_dir
from fakecontrollers import Deployments, Iter8
from pipelinerun import PipelineRun
from tekton import bundle, by_kind
from test_load import App

ACCOUNTS = {"read-settings": "canary-settings", "doctor": "canary-doctor", "acquire-lock": "canary-lock",
            "create-experiment": "canary-experiment", "deploy": "canary-deploy", "generate-load": "canary-load",
            "wait-completion": "canary-wait", "cleanup": "canary-cleanup"}
NO_API = ("canary-fetch", "canary-build")  # the clone and the build: no rights, no token
# Granted to every authenticated user by Tekton Pipelines itself (config/200-role.yaml
# tekton-pipelines-info), not by this bundle.
TEKTON_INFO = ("", "configmaps", "get", "tekton-pipelines", "pipelines-info")


def app_with_a_secret(tmp_path):
    """The sample app with every kind a candidate may have: a Secret, an autoscaler, a
    disruption budget (the overlay versions them; tests/apps/hello has the same)."""
    app = tmp_path / "app"
    shutil.copytree(APPS / "reviews", app)
    (app / "kustomize" / "secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: reviews-credentials}\nstringData: {token: x}\n")
    for name in ("hpa.yaml", "pdb.yaml"):
        text = (APPS / "hello" / "kustomize" / name).read_text()
        (app / "kustomize" / name).write_text(text.replace("hello", "reviews"))
    kustomization = app / "kustomize" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + "  - secret.yaml\n  - hpa.yaml\n  - pdb.yaml\n")
    return app


@pytest.fixture(scope="module")
def calls(tmp_path_factory):
    """(account, group, resource, verb, namespace, name) of every call, over all the scenarios."""
    from fakeapi import FakeApi

    need_tool("kubectl")
    need_tool("hey")
    need(crds_dir(), "the upstream CRDs")
    tmp = tmp_path_factory.mktemp("rbac")
    api = FakeApi().start()
    web = App()
    try:
        api.custom_resource_schemas = True
        prerequisites(api, {"image-registry": "registry.example.com/bookinfo", "default-load-url": web.url, "load-hosts": "127.0.0.1"})
        api.put("services", service())
        api.put("deployments", deployment("reviews", "v1"))
        for i in range(3):  # finished runs of the service, for prune
            old = pipeline_run(f"old-{i}", "True")
            old["metadata"]["labels"] = {"iter8-tekton.dev/service": "reviews"}
            api.put("pipelineruns", old)
        objects = bundle()
        # A: promotion. iter8 pauses over the slow candidate (deploy resumes it); every
        # first watch is answered 410 (the watchers list again).
        for account, resource in (("canary-deploy", "deployments"), ("canary-deploy", "experiments"),
                                  ("canary-load", "experiments"), ("canary-wait", "experiments")):
            api.inject("watch", resource, action="gone", times=1, user=account)
        # The candidate is ready only once iter8 has given up waiting for it (the experiment has
        # its name), and iter8 takes deploy's resume only once deploy watches for its answer.
        iter8 = Iter8(api, window=0.5, poll=0.1, traffic=lambda: web.count,
                      resume_when=lambda exp: any(r.user == "canary-deploy" for r in api.calls("watch", "experiments")))
        slow = "reviews-1111111"
        controllers = [Deployments(api, available_when=lambda dep: dep["metadata"]["name"] != slow or (NS, slow) in iter8.gave_up), iter8]
        run = PipelineRun(objects, api, tmp, name="run-a", app=app_with_a_secret(tmp), short="1111111", namespace=NS,
                          params={"keep-runs": "2", "load-url": web.url})
        assert run.execute() == "Succeeded", run.logs
        assert "resuming it" in run.logs["deploy"]
        # B: an analytics outage: wait-completion ends it, cleanup rolls it back.
        controllers[1].analytics_error = "analytics is down"
        run = PipelineRun(objects, api, tmp, name="run-b", app=app_with_a_secret(tmp / "b"), short="2222222", namespace=NS,
                          params={"load-url": web.url})
        assert run.execute() == "Failed" and run.status["cleanup"] == "Succeeded", run.logs
        for controller in controllers:
            controller.stop()
            assert controller.errors == []
        # C: wait-completion resumes an experiment iter8 paused over its targets.
        paused = experiment_v2("reviews-3333333", "reviews-1111111", "reviews-3333333", {
            "phase": "Pause", "conditions": [{"type": "TargetsProvided", "status": "False", "reason": "TargetsError",
                                              "message": "Candidate Not Ready"}]})
        api.custom_resource_schemas = False
        api.put("experiments", paused)
        kubeconfig = api.write_kubeconfig(tmp / "kubeconfig-wait", token="canary-wait")

        def finish():
            wait_for(lambda: api.get(V2, "experiments", NS, "reviews-3333333")["spec"].get("manualOverride"))
            api.patch_status(V2, "experiments", NS, "reviews-3333333",
                             v2_completed("reviews-1111111", "reviews-3333333", "Traffic To Winner", "reviews-1111111", (100, 0)))

        threading.Thread(target=finish, daemon=True).start()
        proc = run_step("wait_completion", kubeconfig, "--namespace", NS, "--experiment", "reviews-3333333", "--timeout", "20")
        assert "resuming it (1/3)" in proc.stdout, proc.stdout + proc.stderr
        # D: a second run supersedes a running one (the same calls as cleanup's, as canary-lock).
        api.put("pipelineruns", pipeline_run("run-d1"))
        version = {"iter8-tekton.dev/version": "4444444", "iter8-tekton.dev/service": "reviews"}
        api.put("deployments", deployment("reviews-4444444", "4444444", labels=version))
        api.put("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "reviews-settings-4444444", "namespace": NS, "labels": version}})
        api.put("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "reviews-credentials-4444444", "namespace": NS, "labels": version}})
        api.put("horizontalpodautoscalers", {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                                             "metadata": {"name": "reviews-4444444", "namespace": NS, "labels": version}})
        api.put("poddisruptionbudgets", {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                         "metadata": {"name": "reviews-4444444", "namespace": NS, "labels": version}})
        running = experiment_v2("reviews-4444444", "reviews-1111111", "reviews-4444444")
        running["metadata"]["labels"] = {"iter8-tekton.dev/run": "run-d1"}
        api.put("experiments", running)
        lock = api.write_kubeconfig(tmp / "kubeconfig-lock", token="canary-lock")
        assert run_step("lock", lock, "acquire", "--namespace", NS, "--service", "reviews", "--run", "run-d1").returncode == 0
        api.put("pipelineruns", pipeline_run("run-d2"))
        finishing = complete_when_watched(api, "canary-lock", "reviews-4444444", "reviews-1111111", "reviews-4444444")
        proc = run_step("lock", lock, "acquire", "--namespace", NS, "--service", "reviews", "--run", "run-d2", "--policy", "supersede")
        assert proc.returncode == 0, proc.stderr
        finishing.join()
        # F: cleanup rolls back an unfinished experiment and watches it finish.
        api.put("deployments", deployment("reviews-6666666", "6666666", labels={"iter8-tekton.dev/version": "6666666", "iter8-tekton.dev/service": "reviews"}))
        unfinished = experiment_v2("reviews-6666666", "reviews-1111111", "reviews-6666666")
        unfinished["metadata"]["labels"] = {"iter8-tekton.dev/run": "run-f"}
        api.put("experiments", unfinished)
        finishing = complete_when_watched(api, "canary-cleanup", "reviews-6666666", "reviews-1111111", "reviews-6666666")
        cleanup = api.write_kubeconfig(tmp / "kubeconfig-cleanup", token="canary-cleanup")
        proc = run_step("cleanup", cleanup, "--namespace", NS, "--run", "run-f", "--roll-back-unfinished", "30")
        assert proc.returncode == 0, proc.stderr
        finishing.join()
        # E: create-experiment for a service Istio already routes, retried (the experiment is reused).
        api.put("services", service("ratings", {"app": "ratings"}))
        api.put("deployments", deployment("ratings", "v1", app="ratings"))
        api.put("virtualservices", virtual_service({"stable": 100}, host="ratings"))
        api.put("destinationrules", destination_rule({"stable": "v1"}, host="ratings"))
        # ... and read-settings for it finds its serving version through Istio's rules, as create-experiment does.
        settings = api.write_kubeconfig(tmp / "kubeconfig-settings", token="canary-settings")
        proc = run_step("settings", settings, "--namespace", NS, "--checkout", str(APPS / "ratings"), "--version", "5555555",
                        "--load-url", web.url)
        assert proc.returncode == 0, proc.stderr
        create = api.write_kubeconfig(tmp / "kubeconfig-create", token="canary-experiment")
        for _ in range(2):
            proc = run_step("create_experiment", create, "--namespace", NS, "--service", "ratings", "--candidate", "ratings-5555555", "--run", "run-e")
            assert proc.returncode == 0, proc.stderr
        return {(r.user, r.group, r.plural, r.verb, r.namespace, r.name) for r in api.requests}
    finally:
        web.server.shutdown()
        api.stop()


def complete_when_watched(api, account: str, name: str, baseline: str, candidate: str) -> threading.Thread:
    """Play iter8 finishing a rolled-back experiment, once `account` watches it (so the watch
    is always part of what the account does)."""
    def finish():
        wait_for(lambda: any(r.user == account and r.verb == "watch" for r in api.calls("watch", "experiments")), timeout=30)
        api.patch_status(V2, "experiments", NS, name, v2_completed(baseline, candidate, "Traffic User Specified (Abort)", None, (100, 0)))

    thread = threading.Thread(target=finish, daemon=True)
    thread.start()
    return thread


def run_step(name, kubeconfig, *args):
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KUBE_RETRY_BASE_SECONDS": "0.001"}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run([sys.executable, "-m", f"steps.{name}", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def granted(rules: list[dict]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in rules:
        for value in rule.get("apiGroups", []) + rule.get("resources", []) + rule.get("verbs", []):
            assert value != "*", f"wildcard in {rule}"
        assert not rule.get("nonResourceURLs")
        out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


@pytest.mark.parametrize("task", sorted(ACCOUNTS))
def test_each_task_is_granted_exactly_the_calls_it_makes(calls, task):
    account = ACCOUNTS[task]
    objects = bundle()
    role = by_kind(objects, "Role")[account]
    used = {(g, r, v) for user, g, r, v, ns, _ in calls if user == account and ns == NS}
    assert used, f"{task} made no calls in the scenarios"
    rules = granted(role["rules"])
    assert used - rules == set(), f"the {account} Role lacks these"
    assert rules - used == set(), f"the {account} Role grants more than {task} uses"
    for rule in role["rules"]:  # a rule limited to names is used only with those names
        if rule.get("resourceNames"):
            names = {n for user, g, r, v, ns, n in calls if user == account and r in rule["resources"]}
            assert names <= set(rule["resourceNames"]), names


def test_doctor_reads_only_what_its_cluster_role_names(calls):
    """doctor's calls outside the app's namespace: the iter8 CRD, iter8's Deployments and
    metrics ConfigMap (the ClusterRole iter8-tekton-doctor), Tekton's version (Tekton's own RBAC)."""
    cluster_role = by_kind(bundle(), "ClusterRole")["iter8-tekton-doctor"]
    used = {(g, r, v, ns, n) for user, g, r, v, ns, n in calls if user == "canary-doctor" and ns != NS}
    allowed = {(g, r, v, n) for rule in cluster_role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"] for n in rule["resourceNames"]}
    assert {(g, r, v, n) for g, r, v, ns, n in used if (g, r, v, ns, n) != TEKTON_INFO} == allowed
    assert TEKTON_INFO in used


def test_the_clone_and_the_build_have_no_api_access_and_no_token(calls):
    objects = bundle()
    for account in NO_API:
        sa = by_kind(objects, "ServiceAccount")[account]
        assert sa["automountServiceAccountToken"] is False
        assert not [b for b in by_kind(objects, "RoleBinding").values() if any(s["name"] == account for s in b["subjects"])]
        assert not [c for c in calls if c[0] == account]
    run = yaml.safe_load((ROOT / "tasks" / "samples" / "canary-rollout-run.yaml").read_text())
    assert run["spec"]["taskRunTemplate"]["serviceAccountName"] == "canary-fetch"
    specs = {s["pipelineTaskName"]: s["serviceAccountName"] for s in run["spec"]["taskRunSpecs"]}
    assert specs == {**ACCOUNTS, "build": "canary-build"}


def test_every_account_has_its_role_bound(calls):
    objects = bundle()
    bindings = by_kind(objects, "RoleBinding")
    for account in ACCOUNTS.values():
        assert bindings[account]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account}
        assert bindings[account]["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NS}]
