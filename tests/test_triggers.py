"""The webhook entry: hack/preview runs GitHub requests through the bundle's own
EventListener, TriggerBinding and TriggerTemplate; hack/send-webhook.py signs as GitHub."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, need, need_tool
from crdschema import crds_dir, errors
from tekton import admission, bundle, by_kind, runtime

EVENTS = ROOT / "tests" / "events"
SECRET = "It's a Secret to Everybody"
SHA = "3f2a1bc9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f"


def preview(*args: str) -> subprocess.CompletedProcess:
    need_tool("kubectl")
    return subprocess.run([sys.executable, str(ROOT / "hack" / "preview"), *args], capture_output=True, text=True, timeout=60)


def variant(tmp_path, name: str, change) -> str:
    body = json.loads((EVENTS / "push.json").read_text())
    change(body)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(body, indent=2))
    return str(path)


def test_signed_push_to_main_gives_a_valid_pipelinerun_for_that_commit():
    proc = preview("--payload", str(EVENTS / "push.json"), "--event", "push", "--secret", SECRET)
    assert proc.returncode == 0, proc.stderr
    (run,) = list(yaml.safe_load_all(proc.stdout))
    params = {p["name"]: p["value"] for p in run["spec"]["params"]}
    assert params == {"revision": SHA, "repo-url": "https://github.com/example/reviews.git", "settings-file": ".iter8-tekton.yaml",
                      "bound-service": "reviews"}
    assert run["metadata"]["generateName"] == "canary-reviews-3f2a1bc-"
    assert run["metadata"]["labels"]["iter8-tekton.dev/commit"] == SHA
    assert run["metadata"]["labels"]["iter8-tekton.dev/service"] == "reviews"
    assert "canary-rollout-app-0: service reviews, bound by reviews=example/reviews@main:.iter8-tekton.yaml" in proc.stderr
    assert run["metadata"]["labels"]["iter8-tekton.dev/repository"] == "reviews"
    assert run["metadata"]["annotations"] == {"iter8-tekton.dev/repository": "example/reviews", "iter8-tekton.dev/branch": "main",
                                              "tekton.dev/auto-cleanup-pvc": "true"}
    assert run["metadata"]["annotations"]["tekton.dev/auto-cleanup-pvc"] == "true"
    assert run["spec"]["workspaces"][0]["volumeClaimTemplate"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert run["spec"]["workspaces"][1]["secret"] == {"secretName": "registry-credentials", "optional": True}
    assert run["spec"]["taskRunTemplate"]["serviceAccountName"] == "canary-fetch"
    need(crds_dir(), "the upstream CRDs (../shared/crds, or run hack/fetch-crds.py)")
    assert errors(run) == []
    # Tekton's webhook accepts it, and its reconciler finds everything it names.
    objects = bundle()
    assert admission(run) == []
    assert runtime(run, by_kind(objects, "Pipeline")[run["spec"]["pipelineRef"]["name"]], by_kind(objects, "Task")) == []


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("--secret", SECRET, "--signature", "sha256=" + "0" * 64), "payload signature check failed"),
        (("--secret", "another secret", "--signature", None), "payload signature check failed"),
        (("--unsigned",), "no X-Hub-Signature-256 header set"),
    ],
)
def test_bad_or_missing_signature(args, reason, tmp_path):
    if None in args:  # signed correctly, but with a secret the listener does not have
        body = (EVENTS / "push.json").read_bytes()
        forged = "sha256=" + hmac.new(b"another secret", body, hashlib.sha256).hexdigest()
        args = ("--secret", SECRET, "--signature", forged)
    proc = preview("--payload", str(EVENTS / "push.json"), "--event", "push", *args)
    assert proc.returncode == 1 and proc.stdout == ""
    assert reason in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def raw_payload(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / f"{name}.json"
    path.write_bytes(data)
    return str(path)


def hmac_hex(algorithm: str, body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, getattr(hashlib, algorithm)).hexdigest()


@pytest.mark.parametrize("form", ["sha256-upper", "sha1", "sha512", "sha256-mixed"])
def test_the_listener_accepts_every_signature_form_go_github_validates(form):
    """go-github v31.0.0 github/messages.go ValidateSignature (which Triggers v0.37.0's
    pkg/interceptors/github/github.go Process calls with X-Hub-Signature-256): messageMAC takes
    the algorithm from the prefix before the first '=' (sha1, sha256 or sha512) and decodes the
    rest with hex.DecodeString, which accepts either case."""
    body = (EVENTS / "push.json").read_bytes()
    value = {"sha256-upper": "sha256=" + hmac_hex("sha256", body).upper(),
             "sha1": "sha1=" + hmac_hex("sha1", body),
             "sha512": "sha512=" + hmac_hex("sha512", body),
             "sha256-mixed": "sha256=" + hmac_hex("sha256", body)[:32].upper() + hmac_hex("sha256", body)[32:]}[form]
    proc = preview("--payload", str(EVENTS / "push.json"), "--event", "push", "--secret", SECRET, "--signature", value)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["kind"] == "PipelineRun"


@pytest.mark.parametrize(("value", "reason"), [
    ("SHA256={sha256}", 'unknown hash type prefix: "SHA256"'),  # the prefix is compared exactly
    ("sha384={sha256}", 'unknown hash type prefix: "sha384"'),
    ("{sha256}", 'error parsing signature "{sha256}"'),  # no '='
    ("sha256={sha256}0", 'error decoding signature "sha256={sha256}0": encoding/hex: odd length hex string'),
    ("sha256=zz{sha256}", 'error decoding signature "sha256=zz{sha256}": encoding/hex: invalid byte: U+007A \'z\''),
    ("sha256= {sha256}", 'error decoding signature "sha256= {sha256}": encoding/hex: invalid byte: U+0020 \' \''),  # unlike bytes.fromhex
    ("sha256=", "payload signature check failed"),  # decodes to no bytes: hmac.Equal is false
    ("sha512={sha256}", "payload signature check failed"),  # right HMAC, wrong algorithm
    ("sha1={sha256}", "payload signature check failed"),
])
def test_signature_forms_go_github_refuses(value, reason):
    """go-github v31.0.0 github/messages.go messageMAC and ValidateSignature; Go's
    encoding/hex Decode (InvalidByteError %#U, ErrLength) for the hex part."""
    body = (EVENTS / "push.json").read_bytes()
    value = value.format(sha256=hmac_hex("sha256", body))
    reason = reason.format(sha256=hmac_hex("sha256", body))
    proc = preview("--payload", str(EVENTS / "push.json"), "--event", "push", "--secret", SECRET, "--signature", value)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"rejected: github-push: interceptor github-signature-and-event: {reason}"]


def test_a_null_body_gets_202_and_the_first_cel_filter_rejects_it(tmp_path):
    """pkg/sink/validate_payload.go IsValidPayload: json.Unmarshal of `null` into a
    map[string]interface{} succeeds (Go encoding/json decode.go literalStore sets the map to nil),
    so the sink answers 202; the cel interceptor (pkg/interceptors/cel/cel.go makeEvalContext)
    decodes it the same way, and cel-go reads the nil map as an empty one: `body.ref` has no such key."""
    proc = preview("--payload", raw_payload(tmp_path, "null", b"null"), "--event", "push", "--secret", SECRET)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "rejected: github-push: interceptor not-a-tag: error evaluating cel expression: expression "
        "\"body.ref.startsWith('refs/heads/')\" failed to evaluate: no such key: ref"]
    assert tt.validate_payload(b"null") is None and tt.validate_payload(b" null\n") is None


@pytest.mark.parametrize(("name", "change", "error"), [
    ("bom", lambda text: "\ufeff" + text, "invalid character 'ï' looking for beginning of value"),
    ("nan", lambda text: text.replace('"size": 412', '"size": NaN'), "invalid character 'N' looking for beginning of value"),
    ("infinity", lambda text: text.replace('"size": 412', '"size": -Infinity'), "invalid character 'I' in numeric literal"),
])
def test_a_byte_order_mark_or_a_non_json_number_gets_400(tmp_path, name, change, error):
    """Go encoding/json scanner.go (checkValid, stateBeginValue): a BOM is not whitespace and
    NaN/Infinity are not JSON, so IsValidPayload (pkg/sink/validate_payload.go) answers 400."""
    text = change((EVENTS / "push.json").read_text())
    assert text != (EVENTS / "push.json").read_text()
    proc = preview("--payload", raw_payload(tmp_path, name, text.encode()), "--event", "push", "--secret", SECRET)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"rejected: the listener answers 400: Invalid event body format : {error}"]


def nested(total: int) -> bytes:
    """push.json with a field "deep" whose value nests arrays and objects so that the body is `total` levels deep."""
    text = (EVENTS / "push.json").read_text().rstrip()
    levels = total - 1  # the body itself is the first
    opening = "".join('{"d":' if i % 2 else "[" for i in range(levels))
    closing = "".join("}" if i % 2 else "]" for i in reversed(range(levels)))
    return (text[:-1] + ',"deep":' + opening + "0" + closing + "}").encode()


def depth(data: bytes) -> int:
    deepest = level = 0
    for c in data.decode():
        level += {"{": 1, "[": 1, "}": -1, "]": -1}.get(c, 0)
        deepest = max(deepest, level)
    return deepest


@pytest.mark.parametrize("total", [3000, 10000])
def test_a_body_nested_up_to_go_max_depth_starts_a_run(tmp_path, total):
    """Go encoding/json scanner.go pushParseState: nesting up to maxNestingDepth (10000) is valid,
    so the sink answers 202 and the run is created (cel-go reads only the fields it needs). The
    cel package converts the whole body, recursively: preview does not crash (tekton_triggers.deep_stack)."""
    body = nested(total)
    assert depth(body) == total
    proc = preview("--payload", raw_payload(tmp_path, "deep", body), "--event", "push", "--secret", SECRET)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert yaml.safe_load(proc.stdout)["metadata"]["labels"]["iter8-tekton.dev/commit"] == SHA


def test_a_body_nested_deeper_than_go_max_depth_gets_400(tmp_path):
    """Go encoding/json scanner.go pushParseState: the 10001st level is an error (scanner.error:
    "invalid character" and the bracket that opens it, "exceeded max depth"), even before the
    decoder would refuse a top-level array."""
    proc = preview("--payload", raw_payload(tmp_path, "deeper", nested(10001)), "--event", "push", "--secret", SECRET)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "rejected: the listener answers 400: Invalid event body format : invalid character '{' exceeded max depth"]
    body = b"[" * 10000 + b"{}" + b"]" * 10000
    with pytest.raises(tt.Rejected, match="^the listener answers 400: Invalid event body format : invalid character '{' exceeded max depth$"):
        tt.validate_payload(body)
    tt.validate_payload(b'{"a":' + b"[" * 9998 + b"{}" + b"]" * 9998 + b"}")  # 10000 levels


def test_invalid_utf8_gets_202_and_then_fails_the_signature_check(tmp_path):
    """The sink decodes invalid UTF-8 in a string to U+FFFD (Go encoding/json decode.go
    unquoteBytes), so it answers 202. It sends the body to the interceptors as a JSON string
    (pkg/sink/sink.go ExecuteInterceptors: InterceptorRequest.Body = string(event);
    pkg/interceptors/interceptors.go Execute: json.Marshal), and Go's encode.go appendString
    writes each invalid byte as \\ufffd: the github interceptor HMACs those re-encoded bytes,
    not what GitHub signed."""
    body = (EVENTS / "push.json").read_bytes().replace(b"show star ratings", b"show \xe2\x98 ratings \xff\xc3(")
    path = raw_payload(tmp_path, "latin", body)
    proc = preview("--payload", path, "--event", "push", "--secret", SECRET)  # signed as GitHub signs: the bytes sent
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["rejected: github-push: interceptor github-signature-and-event: payload signature check failed"]
    assert tt.validate_payload(body) is None
    # Each invalid byte (a truncated sequence too: e2 98) becomes one U+FFFD, as utf8.DecodeRune reads it.
    reencoded = tt.interceptor_body(body)
    assert reencoded == (EVENTS / "push.json").read_bytes().replace(b"show star ratings", "show \ufffd\ufffd ratings \ufffd\ufffd(".encode())
    # A signature over the re-encoded bytes passes: they are what the interceptor checks.
    proc = preview("--payload", path, "--event", "push", "--secret", SECRET, "--signature", "sha256=" + hmac_hex("sha256", reencoded))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("event", "payload"), [("ping", "ping.json"), ("pull_request", "pull_request.json"), ("create", "create.json")])
def test_other_events_are_rejected(event, payload):
    proc = preview("--payload", str(EVENTS / payload), "--event", event, "--secret", SECRET)
    assert proc.returncode == 1
    assert f"interceptor github-signature-and-event: event type {event} is not allowed" in proc.stderr


def test_tag_push_is_rejected(tmp_path):
    def tag(body):
        body["ref"] = "refs/tags/v1.4.0"
        body["base_ref"] = "refs/heads/main"

    proc = preview("--payload", variant(tmp_path, "tag", tag), "--event", "push", "--secret", SECRET)
    assert proc.returncode == 1 and "interceptor not-a-tag: expression" in proc.stderr


def test_branch_deletion_is_rejected(tmp_path):
    def delete(body):
        body.update(after="0" * 40, deleted=True, commits=[], head_commit=None)

    proc = preview("--payload", variant(tmp_path, "delete", delete), "--event", "push", "--secret", SECRET)
    assert proc.returncode == 1 and "interceptor not-a-deletion: expression" in proc.stderr


def test_push_to_another_branch_is_rejected(tmp_path):
    proc = preview("--payload", variant(tmp_path, "dev", lambda b: b.update(ref="refs/heads/dev")), "--event", "push", "--secret", SECRET)
    assert proc.returncode == 1 and "interceptor configured-branch: expression" in proc.stderr


def test_push_from_another_repository_is_rejected(tmp_path):
    def fork(body):
        body["repository"].update(full_name="mallory/reviews", clone_url="https://github.com/mallory/reviews.git")

    proc = preview("--payload", variant(tmp_path, "fork", fork), "--event", "push", "--secret", SECRET)
    assert proc.returncode == 1 and "interceptor configured-repository: expression" in proc.stderr


def test_pushes_from_each_listed_repository_are_accepted_and_others_rejected(tmp_path):
    """The install lists repositories, each with its branch (and optionally its settings file)."""
    def release(body):
        body["ref"] = "refs/heads/release/2.x"
        body["repository"].update(name="shop", full_name="acme/shop", clone_url="https://evil.example.com/acme/shop.git")
        body["commits"][0]["modified"] = ["deploy/kustomize/deployment.yaml"]  # the app's folder

    listed = "reviews=example/reviews@main,shop=acme/shop@release/2.x:deploy/iter8-tekton.yaml"
    shop = variant(tmp_path, "release", release)
    for payload, repository, settings in ((str(EVENTS / "push.json"), "example/reviews", ".iter8-tekton.yaml"),
                                          (shop, "acme/shop", "deploy/iter8-tekton.yaml")):
        proc = preview("--payload", payload, "--event", "push", "--secret", SECRET, "--repositories", listed)
        assert proc.returncode == 0, proc.stderr
        params = {p["name"]: p["value"] for p in yaml.safe_load(proc.stdout)["spec"]["params"]}
        # The clone URL is built from the listed name, never taken from the payload (clone_url).
        assert params["repo-url"] == f"https://github.com/{repository}.git"
        assert params["settings-file"] == settings
    unlisted = variant(tmp_path, "unlisted", lambda b: b["repository"].update(full_name="mallory/shop", name="shop"))
    proc = preview("--payload", unlisted, "--event", "push", "--secret", SECRET, "--repositories", listed)
    assert proc.returncode == 1 and "interceptor configured-repository" in proc.stderr
    proc = preview("--payload", shop, "--event", "push", "--secret", SECRET)  # not in the bundle's default list
    assert proc.returncode == 1 and "interceptor configured-repository" in proc.stderr


def test_the_commit_must_be_a_full_sha(tmp_path):
    for after in ("main", "3f2a1bc", "3F2A1BC9D0E1F2A3B4C5D6E7F8091A2B3C4D5E6F", "$(params.x)"):
        proc = preview("--payload", variant(tmp_path, "sha", lambda b, a=after: b.update(after=a)), "--event", "push", "--secret", SECRET)
        assert proc.returncode == 1 and "interceptor exact-commit" in proc.stderr, after


@pytest.mark.parametrize("name", ["-reviews", "reviews.", "_x", "a" * 62 + ".b", "r" * 70, "..."])
def test_the_repository_label_is_always_a_valid_label_value(tmp_path, name):
    """A repository name cut to 63 characters can end in '.', '-' or '_'; the API server would
    refuse the PipelineRun (only logged by the sink). translate() trims it (triggers.go)."""
    def renamed(body):
        body["repository"].update(name=name, full_name=f"example/{name}")

    proc = preview("--payload", variant(tmp_path, "named", renamed), "--event", "push", "--secret", SECRET,
                   "--repositories", f"reviews=example/{name}@main")
    assert proc.returncode == 0, proc.stderr
    run = yaml.safe_load(proc.stdout)
    assert run["metadata"]["annotations"]["iter8-tekton.dev/repository"] == f"example/{name}"
    label = run["metadata"]["labels"]["iter8-tekton.dev/repository"]
    assert len(label) <= 63 and (label == "" or (label[0].isalnum() and label[-1].isalnum()))


def test_webhook_values_never_reach_a_script():
    """Branch, repository and commit flow only into PipelineRun params, which Tasks pass as args/env."""
    objects = bundle()
    template = by_kind(objects, "TriggerTemplate")["canary-rollout"]
    text = json.dumps(template["spec"]["resourcetemplates"])
    assert '"script"' not in text and "taskSpec" not in text and "pipelineSpec" not in text
    params = {p["name"] for p in template["spec"]["resourcetemplates"][0]["spec"]["params"]}
    assert params == {"repo-url", "revision", "settings-file", "bound-service"}


def test_listener_uses_only_the_standard_triggers_roles():
    objects = bundle()
    listener = by_kind(objects, "EventListener")["canary-rollout"]
    account = listener["spec"]["serviceAccountName"]
    bindings = [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
                and any(s["name"] == account for s in o["subjects"])]
    assert {(b["kind"], b["roleRef"]["name"]) for b in bindings} == {
        ("RoleBinding", "tekton-triggers-eventlistener-roles"),
        ("ClusterRoleBinding", "tekton-triggers-eventlistener-clusterroles"),
    }
    assert all(s["namespace"] == "bookinfo" for b in bindings for s in b["subjects"])
    assert by_kind(objects, "ClusterRoleBinding")["iter8-tekton-triggers.bookinfo"]
    github = listener["spec"]["triggerGroups"][0]["interceptors"][0]
    params = {p["name"]: p["value"] for p in github["params"]}
    assert github["ref"] == {"name": "github", "kind": "ClusterInterceptor"}
    assert params == {"secretRef": {"secretName": "github-webhook", "secretKey": "secret"}, "eventTypes": ["push"]}


def test_ingress_component_is_valid(tmp_path):
    from crdschema import core_errors

    need_tool("kubectl")
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(ROOT, tmp_path)],
        "components": [os.path.relpath(ROOT / "triggers" / "ingress", tmp_path)],
    }))
    ingress = by_kind(bundle(tmp_path), "Ingress")["canary-rollout-webhook"]
    assert core_errors(ingress) == []
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "el-canary-rollout", "port": {"number": 8080}}


def test_send_webhook_signs_the_exact_bytes(httpserver, tmp_path):
    received = {}

    def handler(request):
        from werkzeug import Response

        body = request.get_data()
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        received.update(headers=dict(request.headers), body=body, valid=hmac.compare_digest(expected, request.headers["X-Hub-Signature-256"]))
        return Response('{"eventListener":"canary-rollout","eventID":"e1"}', status=202)

    httpserver.expect_request("/", method="POST").respond_with_handler(handler)
    payload = EVENTS / "push.json"
    proc = subprocess.run([sys.executable, str(ROOT / "hack" / "send-webhook.py"), "--url", httpserver.url_for("/"), "--payload", str(payload),
                           "--wait", "0"],
                          capture_output=True, text=True, env={"WEBHOOK_SECRET": SECRET, "PATH": "/usr/bin:/bin"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "202 ACCEPTED" in proc.stdout.upper()
    assert received["valid"] and received["body"] == payload.read_bytes()
    assert received["headers"]["X-Github-Event"] == "push" and received["headers"]["Content-Type"] == "application/json"
    assert len(received["headers"]["X-Github-Delivery"]) == 36


def test_send_webhook_builds_a_push_the_bundle_accepts(httpserver, tmp_path):
    bodies = []

    def handler(request):
        from werkzeug import Response

        bodies.append(request.get_data())
        return Response("", status=202)

    httpserver.expect_request("/").respond_with_handler(handler)
    proc = subprocess.run([sys.executable, str(ROOT / "hack" / "send-webhook.py"), "--url", httpserver.url_for("/"),
                           "--repository", "example/reviews", "--branch", "main", "--commit", SHA, "--wait", "0"],
                          capture_output=True, text=True, env={"WEBHOOK_SECRET": SECRET, "PATH": "/usr/bin:/bin"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "sent.json").write_bytes(bodies[0])
    accepted = preview("--payload", str(tmp_path / "sent.json"), "--event", "push", "--secret", SECRET)
    assert accepted.returncode == 0, accepted.stderr


def test_send_webhook_reports_a_refusal(httpserver):
    httpserver.expect_request("/").respond_with_data("forbidden", status=403)
    proc = subprocess.run([sys.executable, str(ROOT / "hack" / "send-webhook.py"), "--url", httpserver.url_for("/"),
                           "--payload", str(EVENTS / "push.json"), "--secret", SECRET, "--wait", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout.startswith("403")


def send_and_confirm(httpserver, fake_api, create: bool, wait: str = "10"):
    """The listener answers 202 either way; only a new PipelineRun for the commit shows acceptance."""
    from werkzeug import Response

    from cluster import pipeline_run

    old = pipeline_run("canary-rollout-3f2a1bc-old", "True")
    old["metadata"]["labels"] = {"iter8-tekton.dev/commit": SHA}
    fake_api.put("pipelineruns", old)  # an earlier run of the same commit does not count

    def handler(request):
        if create:
            run = pipeline_run("canary-rollout-3f2a1bc-x7k2p")
            run["metadata"]["labels"] = {"iter8-tekton.dev/commit": SHA}
            fake_api.put("pipelineruns", run)
        return Response('{"eventListener":"canary-rollout","namespace":"bookinfo","eventListenerUID":"u","eventID":"e"}', status=202)

    httpserver.expect_request("/").respond_with_handler(handler)
    return subprocess.run([sys.executable, str(ROOT / "hack" / "send-webhook.py"), "--url", httpserver.url_for("/"),
                           "--namespace", "bookinfo", "--payload", str(EVENTS / "push.json"), "--wait", wait],
                          capture_output=True, text=True, env={**os.environ, "WEBHOOK_SECRET": SECRET}, timeout=60)


def test_send_webhook_confirms_that_a_run_started(httpserver, fake_api):
    proc = send_and_confirm(httpserver, fake_api, create=True)
    assert proc.returncode == 0, proc.stderr
    assert "started: PipelineRun canary-rollout-3f2a1bc-x7k2p in bookinfo" in proc.stdout


def test_send_webhook_fails_with_the_likely_reasons_when_no_run_starts(httpserver, fake_api):
    """tektoncd/triggers v0.37.0 pkg/sink/sink.go HandleEvent answers 202 before the
    interceptors run; a rejection is only logged."""
    proc = send_and_confirm(httpserver, fake_api, create=False, wait="1.5")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: no PipelineRun for commit {SHA} appeared in bookinfo within 1.5s; see the likely reasons above"]
    assert "202" in proc.stdout and "not in the install's `repositories`" in proc.stdout
    assert "tekton-triggers-core-interceptors" in proc.stdout


# --- the emulator itself, against tektoncd/triggers v0.37.0's code -------------------------------
sys.path.insert(0, str(ROOT / "hack"))
import tekton_triggers as tt  # noqa: E402


@pytest.mark.parametrize(("body", "error"), [
    (b"{}", None), (b' \t\r\n{"a":1}\n', None), (b"null", None),
    (b'{"a":1e-400}', None),  # strconv.ParseFloat: an underflow is 0, not an error
    (b"[]", "json: cannot unmarshal array into Go value of type map[string]interface {}"),
    (b'"x"', "json: cannot unmarshal string into Go value of type map[string]interface {}"),
    (b"1", "json: cannot unmarshal number into Go value of type map[string]interface {}"),
    (b"", "unexpected end of JSON input"),
    (b'{"a":', "unexpected end of JSON input"),
    (b"not json", "invalid character 'o' in literal null (expecting 'u')"),
    (b"\x0c{}", "invalid character '\\f' looking for beginning of value"),  # only space, \t, \r, \n are whitespace
    (b"{} {}", "invalid character '{' after top-level value"),
    (b'{"a":[1,]}', "invalid character ']' looking for beginning of value"),
    (b'{"a":01}', "invalid character '1' after object key:value pair"),
    (b'{"a":1.}', "invalid character '}' after decimal point in numeric literal"),
    (b'{"a":"\x01"}', "invalid character '\\x01' in string literal"),
    (b'{"a":"\\x"}', "invalid character 'x' in string escape code"),
    (b'{"a":"\\u00g0"}', "invalid character 'g' in \\u hexadecimal character escape"),
    (b"-", "invalid character ' ' in numeric literal"),  # scanner.eof reads the end as a space
    (b'{"a":1e400}', "json: cannot unmarshal number 1e400 into Go value of type float64"),
    (b'{"a":1e400,"b":x}', "invalid character 'x' looking for beginning of value"),  # checkValid runs first
])
def test_the_sink_answers_400_when_go_cannot_decode_the_body_into_a_map(body, error):
    """pkg/sink/validate_payload.go IsValidPayload: json.Unmarshal into a map[string]interface{}
    (Go encoding/json scanner.go checkValid, then decode.go); everything else gets 202
    (sink.go HandleEvent)."""
    if error is None:
        tt.validate_payload(body)
    else:
        with pytest.raises(tt.Rejected) as why:
            tt.validate_payload(body)
        assert str(why.value) == f"the listener answers 400: Invalid event body format : {error}"


def test_bodies_decode_as_go_decodes_them():
    """Go encoding/json decode.go: objectInterface (a later duplicate key wins), convertNumber
    (every number is a float64), unquoteBytes (U+FFFD for each byte that is not UTF-8 and for
    each unpaired surrogate escape)."""
    assert tt.go_unmarshal(b'{"a":1,"a":2}') == {"a": 2.0}
    assert [type(v) for v in tt.go_unmarshal(b"[412, 1.5, 1e2]", into_map=False)] == [float, float, float]
    text = tt.go_unmarshal(b'{"s":"\\ud83d\\ude00 \\ud800 \\udc00\\ud800\\u0041 \xe2\x98( \xff \xed\xa0\x80"}')["s"]
    assert text == "\U0001f600 \ufffd \ufffd\ufffdA \ufffd\ufffd( \ufffd \ufffd\ufffd\ufffd"
    # The cel interceptor gets the same text (interceptor_body), and decodes it to the same value.
    body = b'{"s":"\xff\xe2\x98"}'
    assert tt.interceptor_body(body) == '{"s":"\ufffd\ufffd\ufffd"}'.encode()
    assert tt.go_unmarshal(tt.interceptor_body(body)) == tt.go_unmarshal(body)


def test_parse_json_decodes_as_go_does():
    """triggers.go parseJSONString: json.Unmarshal into a map, so `null` is an empty map."""
    request = tt.Request.of(b"{}", {})
    assert tt.evaluate("'null'.parseJSON()", request, {}) == {}
    assert tt.evaluate("'{\"n\": 1}'.parseJSON().n", request, {}) == 1.0
    with pytest.raises(tt.Rejected, match="in parseJSON: json: cannot unmarshal array into Go value of type map"):
        tt.evaluate("'[1]'.parseJSON()", request, {})


def test_binding_values_print_numbers_as_go_does():
    """pkg/template/jsonpath.go getResults json.Marshals what is not a string; Go encoding/json
    encode.go floatEncoder writes a float64 like ES6: positional from 1e-6 to 1e21."""
    values = {"n": b"412", "f": b"1.50", "big": b"1e21", "e20": b"1e20", "small": b"0.000015", "tiny": b"1e-7",
              "z": b"-0", "list": b'[1,2.5,{"b":true,"a":null}]', "html": b'"<a&b>"'}
    body = b"{" + b",".join(b'"%s":%s' % (k.encode(), v) for k, v in values.items()) + b"}"
    binding = {"spec": {"params": [{"name": k, "value": f"$(body.{k})"} for k in values]}}
    assert tt.bind(binding, tt.Request.of(body, {}), {}) == {
        "n": "412", "f": "1.5", "big": "1e+21", "e20": "100000000000000000000", "small": "0.000015", "tiny": "1e-7",
        "z": "-0", "list": '[1,2.5,{"a":null,"b":true}]', "html": "\\u003ca\\u0026b\\u003e"}


def test_interceptor_extensions_merge_shallowly_by_top_level_key():
    """pkg/sink/sink.go ExecuteInterceptors: request.Extensions[k] = v for each returned key."""
    def cel_step(key):
        return {"ref": {"name": "cel"}, "params": [{"name": "overlays", "value": [{"key": key, "expression": "'x'"}]}]}

    request = tt.Request.of(b"{}", {})
    tt.run_interceptors({"interceptors": [cel_step("git.branch"), cel_step("git.sha"), cel_step("other")]}, request, {})
    assert request.extensions == {"git": {"sha": "x"}, "other": "x"}
    # Within one interceptor, dotted keys merge (sjson.SetRawBytes) and each overlay sees the original input.
    one = {"ref": {"name": "cel"}, "params": [{"name": "overlays", "value": [
        {"key": "a.b", "expression": "'1'"}, {"key": "a.c", "expression": "has(extensions.a) ? 'saw' : 'original'"}]}]}
    request = tt.Request.of(b"{}", {})
    tt.run_interceptors({"interceptors": [one]}, request, {})
    assert request.extensions == {"a": {"b": "1", "c": "original"}}


@pytest.mark.parametrize(("expression", "bad"), [
    ("'abc'.truncate(7u)", True), ("'abc'.truncate('7')", True), ("body.x.truncate(7)", False), ("'abc'.truncate(7)", False),
    ("header.match('a', 1)", True), ("requestURL.truncate(2)", False), ("requestURL.match('a', 'b')", True),
    ("'a,b'.split(',').exists(r, r.split('@')[0] == body.x)", False),
])
def test_cel_is_type_checked_before_it_runs(expression, bad):
    """cel.go evaluate: env.Parse then env.Check; truncate is string.truncate(int)
    (triggers.go: the overload id says uint, the declared type is IntType)."""
    if bad:
        with pytest.raises(tt.Rejected, match="check failed: found no matching overload"):
            tt.check_types(expression)
    else:
        tt.check_types(expression)


def test_compare_secret_ignores_its_namespace_argument():
    """triggers.go makeCompareSecret: the Secret is always read from the trigger's namespace."""
    request = tt.Request.of(b'{"token": "s3cret"}', {})
    body = {"token": "s3cret"}
    secrets = {("hook", "token"): "s3cret"}
    assert tt.evaluate("body.token.compareSecret('token', 'hook')", request, body, secrets) is True
    assert tt.evaluate("body.token.compareSecret('token', 'hook', 'elsewhere')", request, body, secrets) is True
    assert tt.evaluate("'wrong'.compareSecret('token', 'hook')", request, body, secrets) is False


def test_bindings_fall_back_to_the_template_default_and_values_are_escaped_as_triggers_does():
    """pkg/template/event.go ApplyEventValuesToParams and pkg/template/resource.go."""
    binding = {"spec": {"params": [{"name": "a", "value": "$(body.missing)"}, {"name": "b", "value": "x-$(body.text)"},
                                   {"name": "c", "value": "literal text"}]}}
    defaults = {"a": "fallback", "d": "$(context.pipelineRun.name)"}
    template = {"spec": {"params": [{"name": "a", "default": "fallback"}, {"name": "b"}, {"name": "c"},
                                    {"name": "d", "default": defaults["d"]}, {"name": "e"}],
                         "resourcetemplates": [{"kind": "X", "metadata": {"labels": {}}, "spec": {
                             k: f"$(tt.params.{k})" for k in "abcde"}}]}}
    body = b'{"text": "<$(params.y)>\\n"}'
    params = tt.bind(binding, tt.Request.of(body, {}), defaults)
    assert params["a"] == "fallback"
    (obj,) = tt.render(template, params)
    assert obj["spec"]["a"] == "fallback"
    assert obj["spec"]["b"] == "x-<$$(params.y)>\n"  # JSON-escaped event text, then $( -> $$(
    assert obj["spec"]["c"] == "literal text"
    assert obj["spec"]["d"] == "$$(context.pipelineRun.name)"  # defaults too (since v0.34.0)
    assert obj["spec"]["e"] == "$(tt.params.e)"  # no value: left as it is
    for value in ("$(body.missing)", "$(tasks.x)"):  # no default of the same name: the trigger is abandoned
        with pytest.raises(tt.Rejected, match="failed to replace JSONPath value for param z"):
            tt.bind({"spec": {"params": [{"name": "z", "value": value}]}}, tt.Request.of(b"{}", {}), {})
    # A raw default with a quote breaks the JSON: nothing is created.
    with pytest.raises(tt.Rejected, match="couldn't unmarshal json"):
        tt.render(template, {**params, "c": 'say "hi"'})


def test_the_trigger_template_declares_every_param_it_uses():
    """trigger_template_validation.go verifyParamDeclarations (the Triggers webhook)."""
    template = by_kind(bundle(), "TriggerTemplate")["canary-rollout"]
    assert tt.validate_template(template) == []
    broken = json.loads(json.dumps(template))
    broken["spec"]["params"] = broken["spec"]["params"][1:]
    assert tt.validate_template(broken) == ["invalid value: undeclared param '$(tt.params.repo-url)'"]


# --- a monorepo: one push, one run per listed app whose folder it touched ------------------------
SHOP = "reviews=acme/shop@main:reviews/.iter8-tekton.yaml,ratings=acme/shop@main:ratings/.iter8-tekton.yaml"


def shop_push(tmp_path, name: str, *changed: list[str], commits=None):
    def change(body):
        body["repository"].update(name="shop", full_name="acme/shop")
        if commits is not None:
            body["commits"] = commits
        else:
            body["commits"] = [{**body["commits"][0], "added": [], "removed": [], "modified": files} for files in changed]
    return variant(tmp_path, name, change)


def runs_of(proc) -> dict[str, dict]:
    """The PipelineRuns a push makes, by the service each rolls out."""
    assert proc.returncode == 0, proc.stderr
    runs = list(yaml.safe_load_all(proc.stdout))
    by_service = {r["metadata"]["labels"]["iter8-tekton.dev/service"]: r for r in runs}
    assert len(by_service) == len(runs)
    return by_service


@pytest.mark.parametrize(("changed", "services"), [
    ([["reviews/src/app.py"]], {"reviews"}),
    ([["ratings/kustomize/deployment.yaml"], ["docs/x.md"]], {"ratings"}),
    ([["reviews/Dockerfile", "ratings/Dockerfile"]], {"reviews", "ratings"}),
    ([["reviews/a"], ["ratings/b"]], {"reviews", "ratings"}),  # over two commits of one push
])
def test_a_push_rolls_out_each_listed_app_whose_folder_it_touched(tmp_path, changed, services):
    proc = preview("--payload", shop_push(tmp_path, "shop", *changed), "--event", "push", "--secret", SECRET, "--repositories", SHOP)
    runs = runs_of(proc)
    assert set(runs) == services
    for service, run in runs.items():
        params = {p["name"]: p["value"] for p in run["spec"]["params"]}
        assert params["bound-service"] == service and params["settings-file"] == f"{service}/.iter8-tekton.yaml"
        assert run["metadata"]["generateName"] == f"canary-{service}-3f2a1bc-"
        assert f"service {service}, bound by {service}=acme/shop@main:{service}/.iter8-tekton.yaml" in proc.stderr
        assert admission(run) == []


def test_a_push_that_touches_no_listed_app_starts_nothing(tmp_path):
    proc = preview("--payload", shop_push(tmp_path, "docs", ["docs/README.md", "reviewsX/a"]), "--event", "push", "--secret", SECRET,
                   "--repositories", SHOP)
    assert proc.returncode == 1
    assert "interceptor touched-a-listed-app: expression extensions.apps.size() > 0 did not return true" in proc.stderr


FILE = {"id": SHA, "message": "m", "added": [], "removed": [], "modified": ["docs/a"]}


@pytest.mark.parametrize(("why", "commits"), [
    ("no commits listed (a new branch at an old commit, or a force push back)", []),
    ("GitHub lists at most 2048 commits", [FILE] * 2048),
    ("GitHub lists at most 3000 files of a commit", [{**FILE, "added": [f"docs/{i}" for i in range(3000)]}]),
])
def test_when_githubs_lists_may_be_incomplete_every_listed_app_rolls_out(tmp_path, why, commits):
    """The push webhook's `commits` holds at most 2048 commits, and each commit's
    added/removed/modified at most 3000 files (GitHub's webhook payload schema, push event)."""
    proc = preview("--payload", shop_push(tmp_path, "truncated", commits=commits), "--event", "push", "--secret", SECRET,
                   "--repositories", SHOP)
    assert set(runs_of(proc)) == {"reviews", "ratings"}, why


def test_an_app_at_the_repositorys_root_rolls_out_on_every_push(tmp_path):
    proc = preview("--payload", shop_push(tmp_path, "any", ["anything/at/all"]), "--event", "push", "--secret", SECRET,
                   "--repositories", "shop=acme/shop@main," + SHOP)
    assert set(runs_of(proc)) == {"shop"}


def test_more_apps_than_triggers_are_reported(tmp_path):
    apps = [f"app{i}=acme/shop@main:app{i}/.iter8-tekton.yaml" for i in range(10)]
    proc = preview("--payload", shop_push(tmp_path, "many", commits=[]), "--event", "push", "--secret", SECRET,
                   "--repositories", ",".join(apps))
    assert len(runs_of(proc)) == 8
    assert "note: 10 apps matched, but the group github-push has only 8 Triggers" in proc.stderr


def test_an_entry_without_a_service_starts_nothing_and_preview_says_why(tmp_path):
    """The old list format (OWNER/NAME@BRANCH) binds no service: the listener skips it."""
    proc = preview("--payload", str(EVENTS / "push.json"), "--event", "push", "--secret", SECRET, "--repositories", "example/reviews@main")
    assert proc.returncode == 1 and "interceptor configured-repository" in proc.stderr
    assert "note: repositories entry 'example/reviews@main' is not SERVICE=OWNER/NAME@BRANCH[:SETTINGS-FILE]; it starts no run" in proc.stderr


def test_the_listener_and_read_settings_parse_the_list_alike():
    """The EventListener's CEL matches each entry with steps/install.py's pattern."""
    from steps.install import ENTRY

    listener = by_kind(bundle(), "EventListener")["canary-rollout"]
    expressions = json.dumps(listener["spec"]["triggerGroups"][0]["interceptors"])
    used = set(re.findall(r"matches\('(\^\(\?P<service>[^']*)'\)", expressions))
    assert used == {ENTRY.pattern}


def test_each_app_trigger_differs_only_in_its_number():
    triggers = sorted(by_kind(bundle(), "Trigger").values(), key=lambda t: t["metadata"]["name"])
    assert [t["metadata"]["name"] for t in triggers] == [f"canary-rollout-app-{i}" for i in range(len(triggers))]
    first = json.dumps(triggers[0])
    for i, trigger in enumerate(triggers):
        assert json.dumps(trigger) == re.sub(r"(app-|\[|> )0\b", lambda m, i=i: m.group(1) + str(i), first)
        assert trigger["metadata"]["labels"]["iter8-tekton.dev/trigger-group"] == "github-push"


def test_a_hand_start_makes_the_same_pipelinerun_as_a_push(fake_api, run_step):
    """canary-start fills the installed TriggerTemplate as the TriggerBinding would for a push of
    the same commit: the same run, but for the labels the sink adds."""
    objects = bundle()
    for obj in objects:
        if obj["kind"] in ("TriggerTemplate", "ConfigMap"):
            obj["metadata"]["namespace"] = "bookinfo"
            fake_api.put("triggertemplates" if obj["kind"] == "TriggerTemplate" else "configmaps", obj)
    proc = run_step("start", "reviews", "--namespace", "bookinfo", "--revision", SHA, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    by_hand = yaml.safe_load(proc.stdout)
    pushed = runs_of(preview("--payload", str(EVENTS / "push.json"), "--event", "push", "--secret", SECRET))["reviews"]
    for label in ("eventlistener", "trigger", "triggers-eventid"):
        del pushed["metadata"]["labels"][f"triggers.tekton.dev/{label}"]
    assert by_hand == pushed
    assert admission(by_hand) == []
    assert runtime(by_hand, by_kind(objects, "Pipeline")["canary-rollout"], by_kind(objects, "Task")) == []
    created = run_step("start", "reviews", "--namespace", "bookinfo", "--revision", SHA)
    assert created.returncode == 0, created.stderr
    (made,) = [r for r in fake_api.calls("create") if r.plural == "pipelineruns"]
    assert created.stdout.strip().startswith("canary-reviews-3f2a1bc-")


def test_a_hand_start_names_what_is_wrong(fake_api, run_step):
    objects = bundle()
    settings = by_kind(objects, "ConfigMap")["canary-rollout-settings"]
    settings["metadata"]["namespace"] = "bookinfo"
    fake_api.put("configmaps", settings)
    proc = run_step("start", "ratings", "--namespace", "bookinfo", "--revision", SHA)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no repositories entry binds service ratings")
    proc = run_step("start", "reviews", "--namespace", "bookinfo", "--revision", SHA)
    assert proc.returncode == 2 and "TriggerTemplate bookinfo/canary-rollout does not exist" in proc.stderr
    assert run_step("start", "reviews", "--namespace", "bookinfo", "--revision", "main").returncode == 2
