"""A push can deploy only its own candidate: what the app's kustomize folder renders and what
its experiment template sets are checked before anything exists (deploy --check-only is the
same check read-settings makes before the build, and deploy makes before it applies)."""

from __future__ import annotations

import shutil

import pytest
import yaml

import cluster
from cluster import NS, deployment, service
from conftest import APPS, ROOT, add_resources, need_tool

IMAGE = "registry.example.com/bookinfo/reviews@sha256:" + "ab" * 32


@pytest.fixture(autouse=True)
def serving(fake_api):
    """What deploy compares the candidate with: the serving version (bookinfo's reviews-v1
    shape), its Service, and the install's settings."""
    need_tool("kubectl")
    cluster.serving(fake_api)
    return fake_api


def app(tmp_path, name="reviews", extra: dict[str, str] | None = None, replace: dict[str, str] | None = None):
    target = tmp_path / "app"
    shutil.copytree(APPS / name / "kustomize", target)
    for filename, text in (replace or {}).items():
        (target / filename).write_text(text)
    if extra:
        add_resources(target, extra)
    return target


def check(run_step, directory, version="3f2a1bc"):
    return run_step("deploy", "--check-only", "--namespace", NS, "--service", "reviews", "--deployment", "reviews",
                    "--kustomize-dir", str(directory), "--version", version, "--image", IMAGE)


def test_the_sample_app_is_a_deployable_candidate(run_step, tmp_path):
    proc = check(run_step, APPS / "reviews" / "kustomize")
    assert proc.returncode == 0, proc.stderr
    assert "left alone: Service reviews (shared between the versions; the pipeline never applies it)" in proc.stdout
    assert "would apply ConfigMap reviews-settings-3f2a1bc" in proc.stdout
    assert "would apply Deployment reviews-3f2a1bc" in proc.stdout


CRB = """apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: owned}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: ServiceAccount, name: default, namespace: bookinfo}]
"""
FOREIGN_SECRET = "apiVersion: v1\nkind: Secret\nmetadata: {name: token, namespace: kube-system}\nstringData: {a: b}\n"
EVIL_SERVICE = """apiVersion: v1
kind: Service
metadata: {name: reviews-public}
spec: {selector: {app: productpage}, externalIPs: [203.0.113.7], ports: [{port: 80}]}
"""
PRIVILEGED = """apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews, labels: {app: reviews}}
spec:
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews}}
    spec:
      hostPID: true
      containers:
        - name: reviews
          image: docker.io/istio/examples-bookinfo-reviews-v1:1.20.2
          securityContext: {privileged: true, capabilities: {add: [SYS_ADMIN]}}
          volumeMounts: [{name: root, mountPath: /host}]
          ports: [{containerPort: 9080, hostPort: 80}]
      volumes: [{name: root, hostPath: {path: /}}]
"""


@pytest.mark.parametrize(("extra", "replace", "messages"), [
    ({"crb.yaml": CRB}, None, ["ClusterRoleBinding owned is cluster-scoped"]),
    ({"secret.yaml": FOREIGN_SECRET}, None, ["Secret token-3f2a1bc is in namespace kube-system"]),
    ({"svc.yaml": EVIL_SERVICE}, None, ["Service reviews-public: a candidate may not create or change Services"]),
    ({"sa.yaml": "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: reviews}\n"}, None,
     ["kind ServiceAccount is not deployed with a candidate", "extend APPLIED_KINDS in steps/candidate.py and the deploy Role"]),
    (None, {"deployment.yaml": PRIVILEGED}, [
        "hostPID: true is not allowed", "volume root is a hostPath volume", "container reviews is privileged",
        "container reviews adds capabilities SYS_ADMIN", "container reviews uses hostPort 80"]),
])
def test_what_a_candidate_may_not_render(run_step, tmp_path, extra, replace, messages):
    proc = check(run_step, app(tmp_path, extra=extra, replace=replace))
    assert proc.returncode == 2, proc.stdout
    errors = proc.stderr.strip().splitlines()
    for message in messages:
        assert any(message in line for line in errors), proc.stderr
    assert errors[-1].startswith("error: the kustomize output of") and errors[-1].endswith("nothing was applied")
    assert all(line.startswith("error: ") for line in errors)


def test_the_placeholder_cannot_hide_the_serving_version(run_step, tmp_path):
    """The seed's layout with a second, unsubstituted copy of the baseline: reviews-v1 would be
    rendered with the untested image and applied over the serving version."""
    target = app(tmp_path, "reviews-seed")
    baseline = yaml.safe_load((target / "reviews.yaml").read_text())
    baseline["metadata"]["name"] = "reviews-v1"
    (target / "hidden.yaml").write_text(yaml.safe_dump(baseline))
    kustomization = yaml.safe_load((target / "kustomization.yaml").read_text())
    kustomization["resources"].append("hidden.yaml")
    (target / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    proc = check(run_step, target, version="v2")
    assert proc.returncode == 2 and "reviews-v1" in proc.stderr


def test_only_one_deployment_named_for_the_version_passes_whatever_renders_it():
    """Whatever kustomize feature renders it, a second Deployment is refused by name."""
    from steps.candidate import check as candidate_check

    rendered = [deployment("reviews-v2", "v2"), deployment("reviews-v1", "v1"), service()]
    result = candidate_check(rendered, deployment="reviews", version="v2", namespace=NS, service="reviews", baseline=deployment("reviews-v1", "v1"))
    assert result.violations == ["Deployment reviews-v1: the only Deployment a candidate may have is reviews-v2 (the base name "
                                 "reviews plus the version); a second Deployment could replace the serving version"]
    assert [o["metadata"]["name"] for o in result.applied] == ["reviews-v2"] and result.shared == ["Service reviews"]


def test_an_unversioned_configmap_would_overwrite_a_shared_one(run_step, tmp_path):
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio-ca-root-cert}\ndata: {root-cert.pem: x}\n"
    target = app(tmp_path, "reviews-seed", extra={"cm.yaml": cm})
    proc = check(run_step, target, version="v2")
    assert proc.returncode == 2
    assert "ConfigMap istio-ca-root-cert is not named with the version suffix -v2" in proc.stderr


def test_deploy_applies_only_the_candidates_own_objects(run_step, fake_api, tmp_path):
    """Never the shared Service: kubectl's server-side apply would have migrated its
    client-side fields and stripped the serving Service (kubectl v1.32
    pkg/cmd/apply/apply.go migrateToSSAIfNecessary); deploy applies none."""
    target = app(tmp_path, replace={"service.yaml": EVIL_SERVICE.replace("reviews-public", "reviews")})
    from fakecontrollers import Deployments

    controller = Deployments(fake_api)
    try:
        proc = run_step("deploy", "--namespace", NS, "--service", "reviews", "--deployment", "reviews", "--kustomize-dir", str(target),
                        "--version", "3f2a1bc", "--image", IMAGE, "--rollout-timeout", "20")
    finally:
        controller.stop()
    assert proc.returncode == 0, proc.stderr
    written = {(r.plural, r.name) for r in fake_api.calls() if r.verb in ("create", "patch", "update", "delete")}
    assert written == {("configmaps", "reviews-settings-3f2a1bc"), ("deployments", "reviews-3f2a1bc")}
    assert fake_api.get("v1", "services", NS, "reviews")["spec"] == service()["spec"]
    applied = [r for r in fake_api.calls("patch") if r.plural in ("configmaps", "deployments")]
    assert all(r.query.get("fieldManager") == "iter8-tekton-reviews" for r in applied)


def test_deploy_waits_for_the_candidate_and_says_where_it_is(run_step, fake_api, tmp_path):
    proc = run_step("deploy", "--namespace", NS, "--service", "reviews", "--deployment", "reviews",
                    "--kustomize-dir", str(APPS / "reviews" / "kustomize"), "--version", "3f2a1bc", "--image", IMAGE,
                    "--rollout-timeout", "1")
    assert proc.returncode == 3
    assert "reviews-3f2a1bc: 0/1 replicas ready, 0 available" in proc.stdout
    assert proc.stderr.strip() == ("error: Deployment bookinfo/reviews-3f2a1bc was not available within 1s; check its pods "
                                   "(kubectl describe) or raise rollout-timeout")


def test_a_stalled_candidate_fails_fast(run_step, fake_api, tmp_path):
    stalled = deployment("reviews-3f2a1bc", "3f2a1bc", labels={"iter8-tekton.dev/service": "reviews"})  # deployed by a first try
    stalled["metadata"]["generation"] = 1
    stalled["status"] = {"observedGeneration": 1, "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "reviews-3f2a1bc-5d8" has timed out progressing.'}]}
    fake_api.put("deployments", stalled)
    proc = run_step("deploy", "--namespace", NS, "--service", "reviews", "--deployment", "reviews",
                    "--kustomize-dir", str(APPS / "reviews" / "kustomize"), "--version", "3f2a1bc", "--image", IMAGE)
    assert proc.returncode == 1 and "did not progress: ReplicaSet" in proc.stderr


# --- the experiment template: it may only tune criteria, duration and traffic shifting ------------
def template(tmp_path, change) -> str:
    exp = yaml.safe_load((ROOT / "steps" / "templates" / "experiment-v1alpha2.yaml").read_text())
    change(exp)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(exp))
    return str(path)


@pytest.mark.parametrize(("change", "message"), [
    (lambda e: e["spec"]["service"].update(namespace="istio-system"), "spec.service.namespace may not be set"),
    (lambda e: e["spec"].update(networking={"hosts": [{"name": "shop.example.com", "gateway": "public-gateway"}]}),
     "spec.networking may not be set"),
    (lambda e: e["spec"].update(analyticsEndpoint="http://attacker.example.com"), "spec.analyticsEndpoint may not be set"),
    (lambda e: e["spec"].update(manualOverride={"action": "terminate", "trafficSplit": {"reviews-3f2a1bc": 100}}),
     "spec.manualOverride may not be set"),
    (lambda e: e["spec"].update(cleanup=True), "spec.cleanup may not be set"),
    (lambda e: e["spec"].update(metrics={"counter_metrics": []}), "spec.metrics may not be set"),
    (lambda e: e["metadata"].update(finalizers=["example.com/never"]), "metadata.finalizers may not be set"),
    (lambda e: e["metadata"].update(labels={"iter8-tekton.dev/run": "someone-else"}),
     "metadata.labels[iter8-tekton.dev/run] may not be set by the app's template: the iter8-tekton.dev/ keys are the pipeline's"),
    (lambda e: e["metadata"].update(annotations={"iter8-tekton.dev/note": "x"}), "metadata.annotations[iter8-tekton.dev/note] may not"),
    (lambda e: e["metadata"].update(labels={"app": 12}), "metadata.labels[app] must be a string (quote it), not 12"),
    (lambda e: e["metadata"].update(labels={"app": "-x-"}), "metadata.labels[app] '-x-' is not a valid label value"),
    (lambda e: e["spec"]["duration"].update(interval="8760h"), "the interval '8760h' must be a duration from 1s to 3600s"),
    (lambda e: e["spec"]["trafficControl"].update(maxIncrement=1000), "maxIncrement 1000 must be a whole number from 1 to 100"),
    (lambda e: e["spec"]["trafficControl"].update(maxIncrement=True), "maxIncrement True must be a whole number from 1 to 100"),
    (lambda e: e["spec"]["duration"].update(maxIterations=True), "maxIterations True must be a whole number from 1 to"),
    (lambda e: e["spec"]["trafficControl"].update(match={"http": [{"headers": {"x": {"exact": "v2"}}}]}), "spec.trafficControl.match may not"),
    (lambda e: e["spec"]["criteria"][0].update(extra=1), "spec.criteria[0].extra may not be set"),
])
def test_template_fields_the_pipeline_owns_are_refused(run_step, tmp_path, change, message):
    proc = run_step("create_experiment", "--namespace", NS, "--service", "reviews", "--candidate", "reviews-3f2a1bc",
                    "--baseline", "reviews", "--template", template(tmp_path, change), "--dry-run")
    assert proc.returncode == 2, proc.stdout
    assert any(message in line for line in proc.stderr.splitlines()), proc.stderr
    assert proc.stdout == ""


def test_a_template_longer_than_the_wait_is_refused(run_step, tmp_path):
    path = template(tmp_path, lambda e: e["spec"]["duration"].update(interval="5m", maxIterations=12))
    proc = run_step("create_experiment", "--namespace", NS, "--service", "reviews", "--candidate", "reviews-3f2a1bc",
                    "--baseline", "reviews", "--template", path, "--experiment-timeout", "3600", "--dry-run")
    assert proc.returncode == 2
    assert "runs up to 3900s (12+1 iterations of 5m), longer than the pipeline waits (3600s)" in proc.stderr


# --- an ordinary kustomize folder: Deployment, Service, autoscaler, disruption budget ---------
def hello_cluster(api):
    """hello's serving version, deployed from its own folder as it is: Deployment hello, its
    Service, its autoscaler and budget (the candidate must leave those alone)."""
    objects = {d["kind"]: d for name in ("deployment", "service", "hpa", "pdb")
               for d in yaml.safe_load_all((APPS / "hello" / "kustomize" / f"{name}.yaml").read_text())}
    serving = objects["Deployment"]
    serving["metadata"]["namespace"] = NS
    serving["status"] = deployment("x", "v1")["status"]
    api.put("deployments", serving)
    for kind, plural in (("Service", "services"), ("HorizontalPodAutoscaler", "horizontalpodautoscalers"),
                         ("PodDisruptionBudget", "poddisruptionbudgets")):
        objects[kind]["metadata"]["namespace"] = NS
        api.put(plural, objects[kind])


def hello(run_step, version="3f2a1bc", *extra):
    return run_step("deploy", "--namespace", NS, "--service", "hello", "--deployment", "hello", "--kustomize-dir",
                    str(APPS / "hello" / "kustomize"), "--version", version, "--image", "registry.example.com/hello@sha256:" + "cd" * 32,
                    *extra)


def test_an_ordinary_folder_deploys_its_autoscaler_and_budget_with_the_candidate(run_step, fake_api):
    """kustomize retargets the autoscaler (its name references: api/konfig/builtinpluginconsts
    namereference.go, HorizontalPodAutoscaler spec/scaleTargetRef/name); the overlay adds
    the version to the budget's selector. The serving version's own are left as they are."""
    from fakecontrollers import Deployments

    hello_cluster(fake_api)
    before = {plural: fake_api.get(version, plural, NS, "hello") for version, plural in
              (("autoscaling/v2", "horizontalpodautoscalers"), ("policy/v1", "poddisruptionbudgets"))}
    check = hello(run_step, "3f2a1bc", "--check-only")
    assert check.returncode == 0, check.stderr
    assert "left alone: Service hello" in check.stdout
    controller = Deployments(fake_api)
    try:
        proc = hello(run_step, "3f2a1bc", "--rollout-timeout", "20")
    finally:
        controller.stop()
    assert proc.returncode == 0, proc.stderr
    hpa = fake_api.get("autoscaling/v2", "horizontalpodautoscalers", NS, "hello-3f2a1bc")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hello-3f2a1bc"}
    pdb = fake_api.get("policy/v1", "poddisruptionbudgets", NS, "hello-3f2a1bc")
    assert pdb["spec"]["selector"]["matchLabels"] == {"app": "hello", "version": "3f2a1bc"}
    for obj in (hpa, pdb):
        assert obj["metadata"]["labels"] == {"iter8-tekton.dev/version": "3f2a1bc", "iter8-tekton.dev/service": "hello"}
    assert fake_api.get("autoscaling/v2", "horizontalpodautoscalers", NS, "hello") == before["horizontalpodautoscalers"]
    assert fake_api.get("policy/v1", "poddisruptionbudgets", NS, "hello") == before["poddisruptionbudgets"]
    written = {(r.plural, r.name) for r in fake_api.calls() if r.verb in ("create", "patch", "update", "delete")}
    assert written == {("deployments", "hello-3f2a1bc"), ("horizontalpodautoscalers", "hello-3f2a1bc"),
                       ("poddisruptionbudgets", "hello-3f2a1bc")}


AUTOSCALER = """apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: reviews-VERSION}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: TARGET}
  minReplicas: 1
  maxReplicas: 3
"""
BUDGET = """apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: reviews-VERSION}
spec:
  minAvailable: 1
  selector: {matchLabels: SELECTOR}
"""


@pytest.mark.parametrize(("extra", "message"), [
    ({"hpa.yaml": AUTOSCALER.replace("TARGET", "reviews-v1")},
     "HorizontalPodAutoscaler reviews-v2 scales Deployment reviews-v1; a candidate's autoscaler may only scale its own Deployment"),
    ({"pdb.yaml": BUDGET.replace("SELECTOR", "{app: reviews}")},
     "PodDisruptionBudget reviews-v2 also selects the serving version's pods"),
    ({"pdb.yaml": BUDGET.replace("SELECTOR", "{app: ratings, version: VERSION}")},
     "PodDisruptionBudget reviews-v2 does not select the candidate's pods"),
    ({"hpa.yaml": AUTOSCALER.replace("reviews-VERSION", "reviews").replace("TARGET", "reviews")},
     "HorizontalPodAutoscaler reviews is not named with the version suffix -v2"),
])
def test_the_placeholder_layout_may_not_retarget_the_serving_versions_autoscaling(run_step, tmp_path, extra, message):
    """In the seed's layout the app renames and retargets them itself; whatever it writes,
    only the candidate may be scaled or covered."""
    target = app(tmp_path, "reviews-seed", extra=extra)
    proc = check(run_step, target, version="v2")
    assert proc.returncode == 2, proc.stdout
    assert any(message in line for line in proc.stderr.splitlines()), proc.stderr


def test_anything_else_is_still_refused(run_step, tmp_path):
    ingress = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: reviews}\nspec: {defaultBackend: {service: {name: reviews, port: {number: 80}}}}\n"
    proc = check(run_step, app(tmp_path, extra={"ingress.yaml": ingress}))
    assert proc.returncode == 2
    assert "Ingress reviews: kind Ingress is not deployed with a candidate (only ConfigMap, Secret, HorizontalPodAutoscaler, " \
           "PodDisruptionBudget, Deployment)" in proc.stderr


def test_the_tutorials_template_with_its_labels_is_accepted(run_step, tmp_path):
    """The seed tutorial's app labels its template (app.kubernetes.io/name); labels and
    annotations are kept, the pipeline's own keys are set over them."""
    exp = yaml.safe_load((APPS / "reviews-seed" / "iter8" / "experiment.yaml").read_text())
    assert exp["metadata"]["labels"] == {"app.kubernetes.io/name": "reviews"}
    exp["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "someone"
    exp["metadata"]["annotations"] = {"team": "books"}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(exp))
    proc = run_step("create_experiment", "--namespace", NS, "--service", "reviews", "--candidate", "reviews-3f2a1bc",
                    "--baseline", "reviews", "--template", str(path), "--run", "run-1", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    made = yaml.safe_load(proc.stdout)["metadata"]
    assert made["labels"] == {"app.kubernetes.io/name": "reviews", "app.kubernetes.io/managed-by": "iter8-tekton",
                              "iter8-tekton.dev/run": "run-1"}
    assert made["annotations"] == {"team": "books"}
