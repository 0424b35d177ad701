"""A push may change its service's code, never its privileges or another service (issue 15,
part 1): the candidate's pods may differ from the serving version's only in their image, the
version label and references to their own version-suffixed ConfigMaps and Secrets; its
Secrets are of the ordinary types; its pods join no other Service; it overwrites no other
service's objects. Each attack goes through the entry points the Tasks run: read-settings
(`settings`, before the build) and deploy (`deploy --check-only`, the same check deploy
makes before it applies)."""

from __future__ import annotations


import pytest
import yaml

from cluster import NS, deployment, serving
from conftest import APPS, add_resources, checkout, need_tool

IMAGE = "registry.example.com/bookinfo/reviews@sha256:" + "ab" * 32
INSTALL = {"image-registry": "registry.example.com/bookinfo", "load-hosts": "istio-ingressgateway.istio-system",
           "default-load-url": "http://istio-ingressgateway.istio-system/productpage"}


@pytest.fixture(autouse=True)
def cluster(fake_api):
    """bookinfo's reviews and ratings serving (their v1, as bookinfo.yaml has them), their
    Services, the install's settings."""
    need_tool("kubectl")
    install(fake_api)
    return fake_api


def install(api, **extra: str) -> None:
    serving(api, "reviews", "ratings", settings={**INSTALL, **extra})


def changed_checkout(tmp_path, change_deployment=None, extra: dict[str, str] | None = None):
    """The sample app with its Deployment changed and more files added to its kustomization."""
    target = checkout(tmp_path)
    folder = target / "kustomize"
    if change_deployment:
        path = folder / "deployment.yaml"
        manifest = yaml.safe_load(path.read_text())
        change_deployment(manifest, manifest["spec"]["template"]["spec"])
        path.write_text(yaml.safe_dump(manifest))
    if extra:
        add_resources(folder, extra)
    return target


def read_settings(run_step, co, *extra):
    return run_step("settings", "--namespace", NS, "--checkout", str(co), "--version", "3f2a1bc", *extra)


def deploy_check(run_step, co):
    return run_step("deploy", "--check-only", "--namespace", NS, "--service", "reviews", "--deployment", "reviews",
                    "--kustomize-dir", str(co / "kustomize"), "--version", "3f2a1bc", "--image", IMAGE)


ENTRY_POINTS = {"read-settings": read_settings, "deploy": deploy_check}


def refused(proc, message: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert any(message in line for line in lines), proc.stderr
    assert all(line.startswith("error: ") for line in lines) and "Traceback" not in proc.stderr


def env_secret(name: str):
    def change(_, pod):
        pod["containers"][0]["env"] = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": "secret"}}}]
    return change


ATTACKS = {
    # The pushed code would run with the rights to delete every Deployment, ConfigMap, Secret and PipelineRun.
    "the cleanup's ServiceAccount": (lambda _, pod: pod.update(serviceAccountName="canary-cleanup"), None,
                                     "serviceAccountName canary-cleanup is not the serving version's (bookinfo-reviews)"),
    "the deprecated serviceAccount field": (lambda _, pod: (pod.pop("serviceAccountName"), pod.update(serviceAccount="canary-deploy")),
                                            None, "serviceAccountName canary-deploy is not the serving version's"),
    # Kubernetes writes canary-deploy's token into a Secret of this type.
    "a service-account-token Secret": (None, {"token.yaml": (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: deploy-token\n  annotations: {kubernetes.io/service-account.name: canary-deploy}\n"
        "type: kubernetes.io/service-account-token\n")},
        "Secret deploy-token-3f2a1bc has type kubernetes.io/service-account-token; a candidate's Secrets may only be of the ordinary types"),
    # The webhook secret would let the pushed code forge signed pushes.
    "the webhook Secret in env": (env_secret("github-webhook"), None,
                                  "container reviews env TOKEN uses Secret github-webhook, which neither the serving version nor"),
    "the registry credentials in envFrom": (
        lambda _, pod: pod["containers"][0].setdefault("envFrom", []).append({"secretRef": {"name": "registry-credentials"}}), None,
        "container reviews envFrom uses Secret registry-credentials"),
    "the webhook Secret as a volume": (
        lambda _, pod: pod.update(volumes=[{"name": "s", "secret": {"secretName": "github-webhook"}}]), None,
        "volume s uses Secret github-webhook"),
    "the webhook Secret projected": (
        lambda _, pod: pod.update(volumes=[{"name": "s", "projected": {"sources": [{"secret": {"name": "github-webhook"}}]}}]), None,
        "volume s uses Secret github-webhook"),
    "a pull secret": (lambda _, pod: pod.update(imagePullSecrets=[{"name": "registry-credentials"}]), None,
                      "imagePullSecrets uses Secret registry-credentials"),
    # The candidate would join another team's Service and get its traffic.
    "another service's pod labels": (
        lambda d, pod: [labels.update(app="ratings") for labels in (d["spec"]["template"]["metadata"]["labels"], d["spec"]["selector"]["matchLabels"])],
        None, "its pod labels match the selector of Service ratings, another service"),
    "a token mounted that the serving version does not mount": (
        lambda _, pod: pod.update(automountServiceAccountToken=True), None,
        "automountServiceAccountToken is True, the serving version's is None"),
    "the host network": (lambda _, pod: pod.update(hostNetwork=True), None, "spec.template.spec.hostNetwork differs"),
    "a node of its choosing": (lambda _, pod: pod.update(nodeName="control-plane"), None, "spec.template.spec.nodeName differs"),
    "tolerating the control plane": (
        lambda _, pod: pod.update(tolerations=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]), None,
        "spec.template.spec.tolerations differs"),
    "a root user": (lambda _, pod: pod["containers"][0]["securityContext"].update(runAsUser=0), None,
                    "container reviews's securityContext.runAsUser is 0, the serving version's is None"),
    "privilege escalation back on": (
        lambda d, pod: pod["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True), "baseline-hardened",
        "container reviews's securityContext.allowPrivilegeEscalation is True, the serving version's is False"),
    "another team's volume": (
        lambda _, pod: pod.update(volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "ratings-data"}}]), None,
        "volume data is not one of the serving version's volumes"),
    # Istio's injector would mount this volume into the sidecar (or run another proxy image).
    "Istio's sidecar annotations": (
        lambda d, pod: d["spec"]["template"]["metadata"].setdefault("annotations", {}).update(
            {"sidecar.istio.io/userVolume": '{"host":{"hostPath":{"path":"/"}}}'}), None,
        "the pod annotations sidecar.istio.io/userVolume differ from the serving version's"),
    "a label of the pipeline's": (lambda d, _: d["metadata"].setdefault("labels", {}).update({"iter8-tekton.dev/stable": "true"}), None,
                                  "sets the label(s) iter8-tekton.dev/stable: the iter8-tekton.dev/ labels are the pipeline's"),
    "a Deployment of another apiVersion": (lambda d, _: d.update(apiVersion="apps/v1beta2"), None,
                                           "has apiVersion apps/v1beta2; a candidate's Deployment must be apps/v1"),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_candidate_may_not_gain_rights(run_step, tmp_path, cluster, entry, attack):
    change, extra, message = ATTACKS[attack]
    if extra == "baseline-hardened":  # the serving version turned escalation off; the candidate may not turn it on
        hardened = deployment("reviews", "v1")
        hardened["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False}
        cluster.put("deployments", hardened)
        extra = None
    co = changed_checkout(tmp_path, change, extra)
    refused(ENTRY_POINTS[entry](run_step, co), message)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_what_a_new_version_may_change(run_step, tmp_path, entry):
    """Its code and its own config, resources and probes; hardening; its own Secrets."""
    def change(d, pod):
        d["spec"]["replicas"] = 3
        container = pod["containers"][0]
        container.update(command=["/opt/run"], args=["--fast"], resources={"limits": {"memory": "256Mi"}},
                         readinessProbe={"httpGet": {"path": "/health", "port": 9080}},
                         env=[{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "reviews-db", "key": "url"}}}],
                         volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}, {"name": "creds", "mountPath": "/creds"}])
        container["securityContext"].update(runAsNonRoot=True, readOnlyRootFilesystem=True, capabilities={"drop": ["ALL"]})
        pod["volumes"] = [{"name": "tmp", "emptyDir": {}}, {"name": "creds", "secret": {"secretName": "reviews-db"}}]
        pod["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        d["spec"]["template"]["metadata"]["annotations"] = {"prometheus.io/scrape": "true"}

    secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: reviews-db}\nstringData: {url: postgres://db}\n"
    proc = ENTRY_POINTS[entry](run_step, changed_checkout(tmp_path, change, {"secret.yaml": secret}))
    assert proc.returncode == 0, proc.stderr


def test_the_install_may_allow_a_service_more(run_step, tmp_path, cluster):
    co = changed_checkout(tmp_path, lambda _, pod: (pod.update(serviceAccountName="reviews-v2"),
                                            env_secret("reviews-api-key")(_, pod)))
    refused(read_settings(run_step, co), "serviceAccountName reviews-v2 is not the serving version's")
    install(cluster, **{"candidate-service-accounts": "reviews:reviews-v2", "candidate-secrets": "reviews:reviews-api-key"})
    assert read_settings(run_step, co).returncode == 0
    install(cluster, **{"candidate-service-accounts": "ratings:reviews-v2", "candidate-secrets": "ratings:reviews-api-key"})
    refused(read_settings(run_step, co), "uses Secret reviews-api-key")


def test_a_deployment_restarted_by_kubectl_still_compares_equal(run_step, tmp_path, cluster):
    """`kubectl rollout restart` stamps the serving version's template; server defaults are
    filled in (k8s.io/kubernetes pkg/apis/core/v1/defaults.go SetDefaults_PodSpec)."""
    serving = deployment("reviews", "v1")
    serving["spec"]["template"]["metadata"]["annotations"] = {"kubectl.kubernetes.io/restartedAt": "2026-12-01T10:00:00Z"}
    serving["spec"]["template"]["spec"].update(dnsPolicy="ClusterFirst", restartPolicy="Always", schedulerName="default-scheduler",
                                               securityContext={}, terminationGracePeriodSeconds=30, serviceAccount="bookinfo-reviews")
    cluster.put("deployments", serving)
    assert read_settings(run_step, checkout(tmp_path)).returncode == 0


def deploy(run_step, api):
    """deploy the sample app for real (the fake Deployment controller makes it available)."""
    from fakecontrollers import Deployments

    controller = Deployments(api)
    try:
        return run_step("deploy", "--namespace", NS, "--service", "reviews", "--deployment", "reviews", "--kustomize-dir",
                        str(APPS / "reviews" / "kustomize"), "--version", "3f2a1bc", "--image", IMAGE, "--rollout-timeout", "20")
    finally:
        controller.stop()


def test_a_candidate_overwrites_no_other_services_object(run_step, fake_api, tmp_path):
    """Two services from one commit name a ConfigMap alike: the second deploy refuses rather
    than taking over the first's (which the first's cleanup would otherwise delete)."""
    fake_api.put("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "reviews-settings-3f2a1bc", "namespace": NS,
        "labels": {"iter8-tekton.dev/service": "ratings", "iter8-tekton.dev/version": "3f2a1bc"}}, "data": {"x": "y"}})
    refused(deploy(run_step, fake_api), "ConfigMap reviews-settings-3f2a1bc exists already and belongs to service ratings")
    assert not [r for r in fake_api.calls("patch")], "nothing was applied"
    assert fake_api.get("v1", "configmaps", NS, "reviews-settings-3f2a1bc")["data"] == {"x": "y"}


def test_deploy_labels_what_it_applies_with_service_and_version(run_step, fake_api):
    proc = deploy(run_step, fake_api)
    assert proc.returncode == 0, proc.stderr
    for plural, name in (("configmaps", "reviews-settings-3f2a1bc"), ("deployments", "reviews-3f2a1bc")):
        version = "v1" if plural == "configmaps" else "apps/v1"
        labels = fake_api.get(version, plural, NS, name)["metadata"]["labels"]
        assert labels["iter8-tekton.dev/service"] == "reviews" and labels["iter8-tekton.dev/version"] == "3f2a1bc"


def test_offline_check_compares_with_a_given_manifest(run_step, tmp_path):
    """`deploy --check-only --baseline-manifest` reads no cluster (KUBECONFIG points nowhere)."""
    manifest = tmp_path / "serving.yaml"
    manifest.write_text(yaml.safe_dump(deployment("reviews", "v1")))
    args = ("deploy", "--check-only", "--namespace", NS, "--service", "reviews", "--deployment", "reviews",
            "--kustomize-dir", str(APPS / "reviews" / "kustomize"), "--version", "3f2a1bc", "--image", IMAGE,
            "--baseline-manifest", str(manifest))
    proc = run_step(*args, env={"KUBECONFIG": str(tmp_path / "none")})
    assert proc.returncode == 0, proc.stderr
    other = deployment("reviews", "v1")
    other["spec"]["template"]["spec"]["serviceAccountName"] = "someone"
    manifest.write_text(yaml.safe_dump(other))
    refused(run_step(*args, env={"KUBECONFIG": str(tmp_path / "none")}), "serviceAccountName bookinfo-reviews is not the serving version's (someone)")
