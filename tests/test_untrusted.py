"""Issue 15: a push may change its service's code, never its privileges, another service or
the pipeline. Everything read from the commit (the settings file, the kustomize folder, the
experiment template) is bounded, read the same way by Python and by kustomize (Go), and can
never make kustomize reach the network or a step end in a traceback.

Upstream facts these tests rely on (each test names its own):
- kustomize api v0.18.0 (kubectl v1.32's kustomize v5.5.0) api/types/kustomization.go
  `Unmarshal`: sigs.k8s.io/yaml v1.4.0 `YAMLToJSON` (goyaml.v2, YAML 1.1), then
  encoding/json with DisallowUnknownFields, not strict: keys match fields by Unicode simple
  case folding (encoding/json fold.go `foldName`), and of two keys for one field the last
  in sorted order wins.
- api/internal/loader/fileloader.go `Load`/`httpClientGetContent`: http(s) URLs are fetched
  with `http.Client{}` (net/http DefaultTransport, Proxy: ProxyFromEnvironment);
  api/internal/git/gitrunner.go `newCmdRunner`: git is looked up on PATH.
- golang.org/x/net v0.30.0 http/httpproxy/proxy.go `useProxy`: "localhost" and loopback IPs
  are never proxied; `proxyForURL`: under CGI (REQUEST_METHOD set) an http URL with
  HTTP_PROXY set fails ("refusing to use HTTP_PROXY value in CGI environment").
"""

from __future__ import annotations

import base64
import http.server
import math
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from cluster import NS, deployment, serving
from conftest import APPS, checkout, need_tool

DIGEST_IMAGE = "registry.example.com/bookinfo/reviews@sha256:" + "ab" * 32
INSTALL = ("image-registry=registry.example.com/bookinfo\ndefault-load-url=http://istio-ingressgateway.istio-system/productpage\n"
           "load-hosts=istio-ingressgateway.istio-system\nmax-load-rate=100\n")


@pytest.fixture(autouse=True)
def cluster(fake_api):
    """What read-settings and deploy read besides the commit: the serving version of reviews
    (the candidate is compared with it), its Service, the install's settings."""
    if not shutil.which("kustomize"):
        need_tool("kubectl")
    serving(fake_api)
    return fake_api


class _Recorder(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.hits.append(self.path)
        body = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fetched}\ndata: {a: b}\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def web():
    """A local web server that records every request; `url` is reachable without the wall
    through 0.0.0.0 (Linux connects that to the loopback), an address Go does proxy."""
    servers = []

    def start(host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
        server = http.server.ThreadingHTTPServer((host, 0), _Recorder)
        server.hits = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    server = start()
    server.url = f"http://0.0.0.0:{server.server_address[1]}"
    server.start = start
    yield server
    for s in servers:
        s.shutdown()
        s.server_close()


def read_settings(run_step, tmp_path: Path, co: Path, *extra: str):
    (tmp_path / "install.env").write_text(INSTALL)
    return run_step("settings", "--namespace", NS, "--checkout", str(co), "--version", "3f2a1bc",
                    "--install-settings-file", str(tmp_path / "install.env"), *extra)


def check_only(run_step, directory: Path, version: str = "3f2a1bc"):
    return run_step("deploy", "--check-only", "--namespace", NS, "--service", "reviews", "--deployment", "reviews",
                    "--kustomize-dir", str(directory), "--version", version, "--image", DIGEST_IMAGE)


def one_error(proc) -> str:
    """Exit 2 and one `error:` line, no traceback; the line."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def problems(proc) -> list[str]:
    """Exit 2, one `error:` line per problem and the summary, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert all(line.startswith("error: ") for line in lines) and len(lines) >= 2, proc.stderr
    return lines


# --- Part 3: the kustomization allowlist, through read-settings ---------------------------

# The five ways past the old blocklist (issue 15), and two more spellings of the first.
# Each made kustomize fetch from the network during read-settings; now the allowlist
# refuses them before kustomize runs, so the server sees nothing.
BYPASSES = {
    "upper-case key": ("RESOURCES:\n  - deployment.yaml\n  - {url}/upper.yaml\n", {}, "RESOURCES entry"),
    "long s (U+017F)": ("re\u017fources:\n  - deployment.yaml\n  - {url}/longs.yaml\n", {}, "re\u017fources entry"),
    "binary tag": ("resources:\n  - deployment.yaml\n  - !!binary {b64}\n", {}, "explicit YAML tags"),
    "generator folder": ("resources: [deployment.yaml]\ngenerators: [gen]\n",
                         {"gen/kustomization.yaml": "resources:\n  - {url}/gen.yaml\n"}, "generators is not allowed"),
    "PatchTransformer path": ("resources: [deployment.yaml]\ntransformers: [t.yaml]\n",
                              {"t.yaml": "apiVersion: builtin\nkind: PatchTransformer\nmetadata: {name: p}\npath: {url}/patch.yaml\n"},
                              "transformers is not allowed"),
    "ConfigMapGenerator plugin files": ("resources: [deployment.yaml]\ngenerators: [g.yaml]\n",
                                        {"g.yaml": "apiVersion: builtin\nkind: ConfigMapGenerator\nmetadata: {name: m}\n"
                                                   "files: [meta={url}/latest/meta-data]\n"}, "generators is not allowed"),
    "configMapGenerator files": ("resources: [deployment.yaml]\nconfigMapGenerator:\n  - name: m\n    files: [meta={url}/latest/meta-data]\n",
                                 {}, "files entry"),
}


@pytest.mark.parametrize("case", BYPASSES)
def test_the_ways_past_the_old_blocklist_are_refused_before_kustomize_runs(run_step, tmp_path, web, case):
    kustomization, extra, message = BYPASSES[case]
    co = checkout(tmp_path)
    fill = {"url": web.url, "b64": base64.b64encode(f"{web.url}/binary.yaml".encode()).decode()}
    (co / "kustomize" / "kustomization.yaml").write_text(kustomization.format(**fill))
    for name, text in extra.items():
        (co / "kustomize" / name).parent.mkdir(exist_ok=True)
        (co / "kustomize" / name).write_text(text.replace("{url}", web.url))
    proc = read_settings(run_step, tmp_path, co)
    assert web.hits == [], f"kustomize fetched {web.hits} during read-settings"
    line = one_error(proc)
    assert "kustomize/kustomization.yaml" in line and message in line, line


def test_kustomize_folds_keys_as_encoding_json_does(tmp_path):
    """The decoder rule the allowlist copies, checked on the real kubectl 1.32 (Go 1.23):
    encoding/json fold.go `foldName` matches `reſources` (U+017F) and `RESOURCES` to the field
    `resources` and `\u212aind` (U+212A KELVIN SIGN) to `kind`; of two keys for one field the
    last in sorted order wins (YAMLToJSON's json.Marshal sorts the map's keys)."""
    from steps import kustomization, kustomize

    (tmp_path / "c.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    for key in ("resources", "RESOURCES", "re\u017fources", "ReSoUrCeS"):
        (tmp_path / "kustomization.yaml").write_text(f"\u212aind: Kustomization\n{key}: [c.yaml]\n")
        assert [d["metadata"]["name"] for d in kustomize.build(tmp_path)] == ["c"], key
        assert kustomization.fold(key) == kustomization.fold("resources")
    (tmp_path / "kustomization.yaml").write_text("resources: [c.yaml]\nnameSuffix: -lower\nNAMESUFFIX: -upper\n")
    assert [d["metadata"]["name"] for d in kustomize.build(tmp_path)] == ["c-lower"]  # "NAMESUFFIX" < "nameSuffix"


@pytest.mark.parametrize(("kustomization", "message"), [
    ("resources: [deployment.yaml]\nnameSuffix: -a\nNAMESUFFIX: -b\n", "are the same field to kustomize"),
    ("resources: [deployment.yaml]\nimages:\n  - {name: x, newTag: y}\n", "reads differently"),  # goyaml.v2: y is true
    ("resources: [deployment.yaml]\nnamePrefix: &p x-\nnameSuffix: *p\n", "anchors and aliases"),
    ("<<: {resources: [deployment.yaml]}\n", "merge keys"),
    ("resources: [deployment.yaml]\nreplicas: [{name: reviews, count: 1.5}]\n", "count must be a whole number"),
    ("resources: [deployment.yaml]\ncommonLabels: {tier: 1}\n", "commonLabels.tier must be text"),
    ("resources: [deployment.yaml]\nconfigMapGenerator: [reviews-settings]\n", "configMapGenerator[0] must be a mapping"),
    ("resources: [deployment.yaml]\nhelmCharts: [{name: x, repo: 'https://charts.example.com'}]\n", "helmCharts is not allowed"),
    ("resources: [deployment.yaml]\nbases: [../x]\n", "bases is not allowed in a kustomization the pipeline builds (list the folder under resources)"),
    ("resources: [deployment.yaml]\nopenapi: {path: 'https://example.com/s.json'}\n", "openapi is not allowed"),
    ("resources: [deployment.yaml]\npatchesStrategicMerge: ['https://example.com/p.yaml']\n", "is not a file or folder inside"),
    ("resources: [deployment.yaml]\npatches: [{path: 'p.yaml', target: {kind: Deployment}}]\n", "is not a file or folder inside"),
    ("resources: [deployment.yaml]\nreplacements: [{path: 'http://169.254.169.254/r.yaml'}]\n", "is not a file or folder inside"),
    ("resources: [deployment.yaml]\ncomponents: [deployment.yaml]\n", "must be a folder holding a Component"),
    ("kind: Component\nresources: [deployment.yaml]\n", "must be a Kustomization"),
    ("resources: [deployment.yaml]\nmetadata: {name: x, annotations: {a: b}}\n", "metadata.annotations is not allowed"),
    ("resources:\n", "resources is empty"),
])
def test_what_the_allowlist_refuses(run_step, tmp_path, kustomization, message):
    co = checkout(tmp_path)
    (co / "kustomize" / "kustomization.yaml").write_text(kustomization)
    line = one_error(check_only(run_step, co / "kustomize"))
    assert message in line, line


def test_what_ordinary_apps_use_is_allowed(run_step, tmp_path, cluster):
    """Every allowed field at once: a base folder, a component, patches of all three kinds,
    generators with literals, files and envs, replacements from a file, images, replicas.
    (The serving version was deployed from the same folder, so its pods carry the same
    labels and annotations: the candidate's may not differ from them, tests/test_privileges.py.)"""
    serving = deployment("reviews", "v1")
    serving["spec"]["template"]["metadata"]["labels"] = {"app": "reviews", "version": "v1", "owner": "books"}
    serving["spec"]["template"]["metadata"]["annotations"] = {"team": "books"}
    cluster.put("deployments", serving)
    co = checkout(tmp_path)
    k = co / "kustomize"
    (k / "base").mkdir()
    for name in ("deployment.yaml", "service.yaml", "configmap.yaml"):
        (k / name).rename(k / "base" / name)
    (k / "base" / "kustomization.yaml").write_text("resources: [deployment.yaml, service.yaml, configmap.yaml]\n")
    (k / "extra").mkdir()
    (k / "extra" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\ncommonAnnotations: {team: books}\n")
    (k / "patch.yaml").write_text("- {op: add, path: /spec/minReadySeconds, value: 5}\n")
    (k / "smp.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: reviews}\nspec: {revisionHistoryLimit: 2}\n")
    (k / "app.env").write_text("MODE=canary\n")
    (k / "motd.txt").write_text("hello\n")
    (k / "repl.yaml").write_text("- source: {kind: ConfigMap, name: reviews-settings, fieldPath: data.LOG_LEVEL}\n"
                                 "  targets: [{select: {kind: Deployment}, fieldPaths: [metadata.annotations.log-level],"
                                 " options: {create: true}}]\n")
    (k / "kustomization.yaml").write_text("""\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
metadata: {name: reviews}
resources: [base]
components: [extra]
namePrefix: ""
labels: [{pairs: {owner: books}, includeSelectors: false, includeTemplates: true}]
commonLabels: {app: reviews}
images: [{name: docker.io/istio/examples-bookinfo-reviews-v1, newTag: "1.20.3"}]
replicas: [{name: reviews, count: 2}]
patches: [{path: patch.yaml, target: {group: apps, version: v1, kind: Deployment, name: reviews}}]
patchesJson6902: [{target: {group: apps, version: v1, kind: Deployment, name: reviews}, patch: '[{"op": "add", "path": "/spec/paused", "value": false}]'}]
patchesStrategicMerge:
  - smp.yaml
  - |
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: reviews}
    spec: {progressDeadlineSeconds: 300}
configMapGenerator: [{name: reviews-extra, literals: [A=1], files: [motd=motd.txt], envs: [app.env], options: {labels: {x: y-z}}}]
secretGenerator: [{name: reviews-secret, literals: [token=abc], type: Opaque}]
generatorOptions: {disableNameSuffixHash: false}
replacements: [{path: repl.yaml}]
""")
    proc = check_only(run_step, k)
    assert proc.returncode == 0, proc.stderr
    assert "would apply ConfigMap reviews-extra-3f2a1bc" in proc.stdout and "would apply Secret reviews-secret-3f2a1bc" in proc.stdout


def test_an_alias_bomb_in_a_manifest_is_refused_before_kustomize(run_step, tmp_path):
    """kubectl 1.32's kustomize expands YAML aliases in a resource file without bound (it
    grew past 5 GB in a minute here), so a manifest kustomize reads may not use them."""
    co = checkout(tmp_path)
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata: {name: c}", "data:", "  a0: &a0 [lol, lol, lol, lol, lol]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    (co / "kustomize" / "configmap.yaml").write_text("\n".join(lines) + "\n")
    line = one_error(check_only(run_step, co / "kustomize"))
    assert "configmap.yaml" in line and "anchors and aliases" in line


# --- Part 3: the second wall, on the private kustomize runner -----------------------------

def test_the_closed_proxy_stops_what_the_allowlist_might_miss(tmp_path, web):
    """steps.kustomize.run on a kustomization the allowlist never saw: a URL kustomize GETs
    goes to the closed proxy (net/http DefaultTransport, ProxyFromEnvironment), so the
    server sees nothing; a git URL finds no git. Without the wall the same URL arrives."""
    from steps import common, kustomize

    (tmp_path / "kustomization.yaml").write_text(f"resources:\n  - {web.url}/missed.yaml\n")
    plain = subprocess.run(kustomize.command(tmp_path), capture_output=True, text=True, check=False,
                           env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()})
    assert plain.returncode == 0 and web.hits == ["/missed.yaml"], "without the wall the request arrives"
    web.hits.clear()
    with pytest.raises(common.BadInput, match="proxyconnect tcp: dial tcp 127.0.0.1:[0-9]+: connect: connection refused"):
        kustomize.run(tmp_path)
    assert web.hits == []
    # Link-local (a cloud's metadata service) is proxied too: the error names the proxy.
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - http://169.254.169.254/latest/meta-data\n")
    with pytest.raises(common.BadInput, match="proxyconnect tcp: dial tcp 127.0.0.1"):
        kustomize.run(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - https://github.com/example/evil//deploy?ref=main\n")
    with pytest.raises(common.BadInput, match="no 'git' program on path"):
        kustomize.run(tmp_path)


def test_the_wall_does_not_cover_the_loopback(tmp_path, web):
    """The documented limit: httpproxy `useProxy` never proxies loopback IPs (or
    "localhost"), so a URL naming one the allowlist missed would be fetched from the step
    pod's own loopback. The allowlist refuses every URL; this only shows the wall's edge."""
    from steps import kustomize

    loopback = web.start("127.0.0.2")
    (tmp_path / "kustomization.yaml").write_text(f"resources:\n  - http://127.0.0.2:{loopback.server_address[1]}/x.yaml\n")
    assert [d["metadata"]["name"] for d in kustomize.build(tmp_path)] == ["fetched"]
    assert loopback.hits == ["/x.yaml"]


def test_the_sandbox_environment(tmp_path):
    from steps import kustomize

    env = kustomize.sandbox_env(4242, str(tmp_path))
    assert "PATH" not in env and "REQUEST_METHOD" not in env and env["NO_PROXY"] == env["no_proxy"] == ""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        assert env[name] == "http://127.0.0.1:4242"
    assert os.path.isabs(kustomize.command(tmp_path)[0])


@pytest.mark.parametrize(("make", "message"), [
    (lambda k: (k / "big.txt").write_bytes(b"x" * (1024 * 1024 + 1)), "big.txt is larger than 1024 KiB"),
    (lambda k: [(k / f"f{i}.txt").write_text("") for i in range(1001)], "more than 1000 files and folders"),
    (lambda k: [(k / f"f{i}.txt").write_bytes(b"x" * 1024 * 1024) for i in range(9)], "add up to more than 8 MiB"),
    (lambda k: os.mkfifo(k / "fifo.yaml"), "fifo.yaml in"),
])
def test_the_kustomize_folder_is_bounded(run_step, tmp_path, make, message):
    co = checkout(tmp_path)
    make(co / "kustomize")
    assert message in one_error(check_only(run_step, co / "kustomize"))


# --- Part 4: every value is bounded and no file can crash a step --------------------------

def settings_file(tmp_path: Path, text: str) -> Path:
    co = checkout(tmp_path)
    (co / ".iter8-tekton.yaml").write_text(text)
    return co


SETTINGS = (APPS / "reviews" / ".iter8-tekton.yaml").read_text()


@pytest.mark.parametrize(("text", "message"), [
    (SETTINGS.replace("rate: 10", "rate: .nan"), ".nan is not a finite number"),
    (SETTINGS.replace("rate: 10", "rate: .inf"), ".inf is not a finite number"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 64 levels"),
    ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
                                                     for p, c in zip("abcdefgh", "bcdefghi", strict=True)), "anchors and aliases"),
    ("service: reviews\nservice: ratings\n", "duplicate key 'service'"),
    ("service: !!python/object:os.system reviews\n", "explicit YAML tags"),
    ("x: " + "y" * (256 * 1024) + "\n", "is larger than 256 KiB"),
])
def test_a_bad_settings_file_is_one_line(run_step, tmp_path, text, message):
    line = one_error(read_settings(run_step, tmp_path, settings_file(tmp_path, text)))
    assert message in line, line


def test_settings_files_that_are_not_text_or_not_files(run_step, tmp_path):
    co = settings_file(tmp_path, "")
    (co / ".iter8-tekton.yaml").write_bytes(b"service: r\xe9views\n")
    assert "is not UTF-8 text" in one_error(read_settings(run_step, tmp_path, co))
    (co / ".iter8-tekton.yaml").unlink()
    (co / ".iter8-tekton.yaml").mkdir()
    assert "is not a regular file" in one_error(read_settings(run_step, tmp_path, co))


@pytest.mark.parametrize(("change", "message"), [
    ("  host: bookinfo.example.com", '  host: "bookinfo.example.com\\n"'),  # Python's $ matches before a final \n
    ("  url: http://istio-ingressgateway.istio-system/productpage", "  url: http://[::1/"),
])
def test_values_are_checked_whole(run_step, tmp_path, change, message):
    lines = problems(read_settings(run_step, tmp_path, settings_file(tmp_path, SETTINGS.replace(change, message))))
    assert any("load.host" in line or "load.url" in line for line in lines[:-1]), lines


def test_a_context_linked_out_of_the_checkout_is_refused(run_step, tmp_path):
    """kaniko reads the context through the link: a context linked to / would let the
    build COPY the build pod's own files (its registry credential) into the image."""
    co = checkout(tmp_path)
    (co / "root").symlink_to("/")  # root/<the checkout's own path>/Dockerfile is inside the checkout
    proc = read_settings(run_step, tmp_path, co, "--context", "root", "--dockerfile", f"{co.relative_to('/')}/Dockerfile")
    assert one_error(proc) == "error: context 'root' leads outside the repository (through a symbolic link)"


def test_a_non_finite_rate_param_is_refused(run_step, tmp_path):
    lines = problems(read_settings(run_step, tmp_path, checkout(tmp_path), "--load-rate", "nan"))
    assert "param load-rate: 'nan' is not a number" in lines[0]


def test_the_schema_refuses_non_finite_numbers_and_partial_matches():
    """jsonschema compares NaN False with every bound and its `pattern` uses re.search;
    settings.Validator's types exclude non-finite floats and its patterns match whole."""
    from steps import settings

    install = settings.Install()
    base = {"apiVersion": "iter8-tekton.dev/v1alpha1", "kind": "RolloutSettings", "service": "reviews"}
    assert settings.schema_problems(base, install, "f") == []
    for rate in (math.nan, math.inf, -math.inf):
        assert settings.schema_problems({**base, "load": {"rate": rate}}, install, "f"), rate
    assert settings.schema_problems({**base, "timeouts": {"rollout": math.inf}}, install, "f")
    assert settings.schema_problems({**base, "service": "reviews\n"}, install, "f")
    assert settings.schema_problems({**base, "load": {"host": "h.example.com\n"}}, install, "f")


def test_every_schema_pattern_is_anchored():
    import json

    from conftest import ROOT

    def patterns(node):
        if isinstance(node, dict):
            yield from ([node["pattern"]] if "pattern" in node else [])
            for value in node.values():
                yield from patterns(value)

    found = list(patterns(json.loads((ROOT / "steps/schemas/rollout-settings.schema.json").read_text())))
    assert len(found) == 4 and all(p.startswith("^") and p.endswith("$") for p in found), found


def test_load_refuses_a_non_finite_rate(run_step):
    for rate in ("nan", "inf"):
        assert "positive finite" in one_error(run_step("load", "--url", "http://127.0.0.1:9/", "--rate", rate))


TEMPLATE = (APPS / "reviews-seed" / "iter8" / "experiment.yaml").read_text()


@pytest.mark.parametrize(("content", "message"), [
    (TEMPLATE.replace('analyticsService: "http://iter8-analytics.iter8"', "analyticsService: [a, b]"),
     "analyticsService ['a', 'b'] is not iter8's analytics service"),
    (TEMPLATE.replace("  trafficControl:\n", "  trafficControl: [x]\n  unused:\n"), "spec.trafficControl must be a mapping"),
    (b"apiVersion: iter8.tools/v1alpha2\nkind: Experiment\nspec: {name: \xff}\n", "is not UTF-8 text"),
    ("apiVersion: iter8.tools/v1alpha2\nkind: Experiment\nspec: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
     "nested deeper than 64 levels"),
    ("apiVersion: [iter8.tools/v1alpha2]\nkind: Experiment\nspec: {}\n", "has no apiVersion"),
    ("apiVersion: iter8.tools/v1alpha2\nkind: Experiment\nspec: {criteria: 5}\n", "spec.criteria must be a list of mappings"),
])
def test_a_bad_template_is_one_line(run_step, tmp_path, content, message):
    template = tmp_path / "experiment.yaml"
    template.write_bytes(content if isinstance(content, bytes) else content.encode())
    proc = run_step("create_experiment", "--namespace", NS, "--service", "reviews", "--candidate", "reviews-3f2a1bc",
                    "--baseline", "reviews-v1", "--template", str(template), "--dry-run")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert all(line.startswith("error: ") for line in lines) and any(message in line for line in lines), proc.stderr


def test_python_and_go_agree_on_every_plain_scalar_accepted():
    """steps.untrusted reads a plain scalar only where PyYAML and goyaml.v2 (sigs.k8s.io/yaml
    v1.4.0 goyaml.v2/resolve.go `resolve`) agree; the table is v2's own cases."""
    from steps import common, untrusted

    text = {"reviews", "3f2a1bc", "1.20.2", "./base", "-suffix", "30s", "v1", "http://x/y", "a b", "0x"}
    not_text = {"y", "Yes", "ON", "off", "~", "null", "", ".nan", "-.Inf", "<<", "1234567", "1234e56", "-1234e56", "0b10101",
                "0o17", "017", "0x1F", "1_000", "+1", ".5", "1.", "2024-01-02", "2024-1-2T10:00:00Z", "99999999999999999999"}
    assert {v for v in text | not_text if untrusted.go_reads_as_text(v)} == text
    assert untrusted.load_yaml("a: [1, -2, 1.5, true, false, null, 3f2a1bc]\n", "f") == [{"a": [1, -2, 1.5, True, False, None, "3f2a1bc"]}]
    for value in sorted(not_text - {"", "~", "null"}):
        if value not in ("1234567",) and not value.lstrip("-").isdigit():
            with pytest.raises(common.BadInput):
                untrusted.load_yaml(f"a: {value}\n", "f")


# --- Part 6: every commit can roll out -----------------------------------------------------

# Short SHAs that YAML readers take for numbers: 1234567 an integer (everywhere), 1234e56 a
# float to Go (goyaml.v2 and yaml.v3 resolve: yamlStyleFloat) though text to PyYAML, 0b10101
# an integer to both. Bare, they became `version: 1.234e+59` (sigs.k8s.io/yaml
# convertToJSONableObject: strconv.FormatFloat(f, 'g', -1, 32) into a string field) or a
# number label. kustomize re-emits a text scalar quoted whenever yaml.v3 would resolve its
# plain form to anything else (yaml.v3 v3.0.1 encode.go `stringv`), so text in, text out.
SHAS = ("1234e56", "1234567", "0b10101", "0123456")


@pytest.mark.parametrize("app", ["reviews", "reviews-seed"])
@pytest.mark.parametrize("sha", SHAS)
def test_numeric_looking_shas_render_as_text(run_step, tmp_path, app, sha):
    out = tmp_path / "out.yaml"
    image = f"registry.example.com/bookinfo/reviews:{sha}"
    proc = run_step("patch_kustomize", "--kustomize-dir", str(APPS / app / "kustomize"), "--version", sha, "--image", image,
                    "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    (dep,) = [d for d in yaml.safe_load_all(out.read_text()) if d["kind"] == "Deployment"]
    assert dep["metadata"]["name"] == f"reviews-{sha}"
    for labels in (dep["metadata"]["labels"], dep["spec"]["selector"]["matchLabels"], dep["spec"]["template"]["metadata"]["labels"]):
        assert labels["version"] == sha
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == image
    # The manifest is safe for Go readers too (kubectl apply -f): the version is quoted.
    assert f"version: {sha}\n" not in out.read_text()
    proc = check_only(run_step, APPS / app / "kustomize", sha)
    assert proc.returncode == 0, proc.stderr
    assert f"would apply Deployment reviews-{sha}" in proc.stdout


def test_a_number_label_in_the_render_is_refused(run_step, tmp_path):
    """A label the API server would refuse (422) is one line before anything is applied."""
    co = checkout(tmp_path)
    deployment = (co / "kustomize" / "deployment.yaml").read_text()
    (co / "kustomize" / "deployment.yaml").write_text(deployment.replace("    version: v1\n", "    version: v1\n    build: 42\n", 1))
    lines = problems(check_only(run_step, co / "kustomize"))
    assert "Deployment reviews: label build: 42 is not text" in lines[0], lines


@pytest.mark.parametrize(("old", "new", "message"), [
    ("spec:\n  replicas: 1\n", "spec: []\nx:\n  replicas: 1\n", "Deployment reviews: spec has the wrong type"),
    ("            - containerPort: 9080\n", "            - 9080\n", "spec.template.spec.containers[0].ports[0] has the wrong type"),
    ("          securityContext:\n", "          securityContext:\n            capabilities: {add: [1, NET_ADMIN]}\n",
     "securityContext.capabilities.add[0] has the wrong type"),
])
def test_a_misshapen_deployment_is_one_line_not_a_traceback(run_step, tmp_path, old, new, message):
    """kustomize passes any shape through; the checks that read the pod template need the
    types of k8s.io/api (apps/v1 Deployment, core/v1 PodSpec)."""
    co = checkout(tmp_path)
    deployment = (co / "kustomize" / "deployment.yaml").read_text()
    assert old in deployment
    (co / "kustomize" / "deployment.yaml").write_text(deployment.replace(old, new, 1))
    lines = problems(check_only(run_step, co / "kustomize"))
    assert message in lines[0], lines
