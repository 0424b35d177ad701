"""An in-process Kubernetes API server for the steps' integration tests.

It speaks enough of the REST and watch protocol for the real `kubernetes` client:
get/list (label and field selectors), create (201, 409), replace (409 on a stale
resourceVersion), merge patch, the /status subresource, delete, and watch (chunked,
resumable from a resourceVersion, 410 Gone below the compaction mark, timeoutSeconds,
bookmarks ignored). Faults are injected before any state changes: an HTTP status with
headers, a dropped connection, or a 410 ERROR event on a watch; once, N times or always.
Every request is logged as (verb, resource, subresource) so tests can derive RBAC.

We wrote this instead of using kmock 0.8, which has no resourceVersions, no label
selectors, no PUT, no watch resume and applies mutations before injected faults.
"""

from __future__ import annotations

import copy
import json
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)
CLUSTER_SCOPED = {"customresourcedefinitions", "namespaces", "clusterroles", "clusterrolebindings"}
_REQ = re.compile(r"^\s*(!?)([\w./-]+)\s*(?:(==|=|!=)\s*([\w./-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def _split_selector(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p for p in parts + [current] if p.strip()]


def label_match(selector: str, labels: dict) -> bool:
    """Kubernetes label selector syntax: a=b, a==b, a!=b, a in (x,y), a notin (x), a, !a."""
    for requirement in _split_selector(selector or ""):
        m = _REQ.match(requirement)
        if not m:
            raise ValueError(f"unable to parse requirement: {requirement!r}")
        negate, key, op, value, set_op, values = m.groups()
        present, actual = key in labels, labels.get(key)
        if op in ("=", "=="):
            ok = actual == value
        elif op == "!=":
            ok = actual != value
        elif set_op == "in":
            ok = actual in {v.strip() for v in values.split(",")}
        elif set_op == "notin":
            ok = actual not in {v.strip() for v in values.split(",")}
        else:
            ok = not present if negate else present
        if not ok:
            return False
    return True


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class Fault:
    """What to do to matching requests: `status` (+headers), `drop`, or a watch `gone` event."""

    verb: str | None  # get, list, watch, create, update, patch, delete; None for any
    resource: str | None  # plural, e.g. "experiments"; None for any
    # "status", "drop" (no answer), "hang" (answer after `delay` s), and for watches: "gone" (a 410
    # event), "cut" (a broken stream), "hold" (stay open and silent past timeoutSeconds) or
    # "chatter" (stay open past timeoutSeconds, sending a bookmark every 0.1 s).
    action: str
    status: int = 500
    headers: dict = field(default_factory=dict)
    times: int | None = 1  # None: always
    delay: float = 30.0  # "hang": seconds before answering
    user: str | None = None  # only this caller's requests (its token); None for any
    hits: int = 0

    def matches(self, verb: str, resource: str, user: str = "") -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return self.verb in (None, verb) and self.resource in (None, resource) and self.user in (None, user)


class Invalid(Exception):
    """A write the CRD's schema rejects: the API server answers 422."""


@dataclass
class Request:
    verb: str
    group: str
    plural: str
    subresource: str
    namespace: str
    name: str
    query: dict
    user: str = ""  # the bearer token: tests give each ServiceAccount its own
    implied: bool = False  # not a request: the authorization a server-side apply also needs
    at: float = field(default_factory=time.monotonic)  # when it arrived


class FakeApi:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.objects: dict[tuple, dict] = {}  # (group, version, plural, ns, name) -> object
        self.events: list[tuple[int, tuple, str, dict]] = []  # (rv, resource key, type, object)
        self.rv = 100
        self.compacted_below = 0
        self.faults: list[Fault] = []
        self.requests: list[Request] = []
        self.not_served: set[tuple[str, str, str]] = set()  # (group, version, plural)
        # Prune and validate custom resources with their upstream CRD's schema (tests/crdschema.py),
        # as a structural API server does on every write, status included.
        self.custom_resource_schemas = False
        self.stopping = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    # --- lifecycle -------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "FakeApi":
        self.thread.start()
        return self

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.lock.notify_all()
        self.server.shutdown()
        self.server.server_close()

    def write_kubeconfig(self, path: Path, token: str = "test-token") -> Path:
        """A kubeconfig for this server; `token` names the caller in the request log."""
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "steps", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "steps"}}],
        }))
        return path

    # --- state, for tests ---------------------------------------------------------------
    @staticmethod
    def _key(api_version: str, plural: str, namespace: str, name: str) -> tuple:
        group, _, version = api_version.rpartition("/")
        return (group, version, plural, namespace, name)

    def put(self, plural: str, obj: dict) -> dict:
        """Create or overwrite an object as a controller would (status included)."""
        meta = obj.setdefault("metadata", {})
        key = self._key(obj["apiVersion"], plural, "" if plural in CLUSTER_SCOPED else meta.get("namespace", "default"), meta["name"])
        with self.lock:
            old = self.objects.get(key)
            return self._store(key, copy.deepcopy(obj), "MODIFIED" if old else "ADDED", old)

    def get(self, api_version: str, plural: str, namespace: str, name: str) -> dict | None:
        with self.lock:
            obj = self.objects.get(self._key(api_version, plural, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def patch_status(self, api_version: str, plural: str, namespace: str, name: str, status: dict) -> dict:
        key = self._key(api_version, plural, namespace, name)
        with self.lock:
            old = self.objects[key]
            new = copy.deepcopy(old)
            new["status"] = merge_patch(old.get("status") or {}, status)
            return self._store(key, new, "MODIFIED", old)

    def remove(self, api_version: str, plural: str, namespace: str, name: str) -> None:
        key = self._key(api_version, plural, namespace, name)
        with self.lock:
            self._delete(key)

    def compact(self) -> None:
        """Forget the event history: watches from an older resourceVersion get 410."""
        with self.lock:
            self.compacted_below = self.rv
            self.events.clear()

    def inject(self, verb=None, resource=None, action="status", status=500, headers=None, times=1, delay=30.0, user=None) -> Fault:
        fault = Fault(verb, resource, action, status, headers or {}, times, delay=delay, user=user)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def calls(self, verb: str | None = None, plural: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if verb in (None, r.verb) and plural in (None, r.plural)]

    # --- internals (lock held) -----------------------------------------------------------
    def _store(self, key: tuple, obj: dict, event: str, old: dict | None) -> dict:
        if self.custom_resource_schemas:
            from crdschema import admit, version_schema

            # The installed CRD (a test may patch it) if there is one, else the upstream file.
            crd = self.objects.get(("apiextensions.k8s.io", "v1", "customresourcedefinitions", "", f"{key[2]}.{key[0]}"))
            obj, errors = admit(obj, version_schema(crd, key[1]) if crd else None)
            if errors:
                raise Invalid(f"{key[2]}.{key[0]} \"{key[4]}\" is invalid: {'; '.join(errors)}")
        self.rv += 1
        meta = obj.setdefault("metadata", {})
        meta.update(name=key[4], resourceVersion=str(self.rv))
        if key[3]:
            meta["namespace"] = key[3]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        if old is None:
            meta.setdefault("generation", 1)
        elif old.get("spec") != obj.get("spec"):
            meta["generation"] = old["metadata"].get("generation", 1) + 1
        self.objects[key] = obj
        self.events.append((self.rv, key, event, copy.deepcopy(obj)))
        self.lock.notify_all()
        return copy.deepcopy(obj)

    def _delete(self, key: tuple) -> dict | None:
        obj = self.objects.pop(key, None)
        if obj is not None:
            self.rv += 1
            gone = copy.deepcopy(obj)
            gone["metadata"]["resourceVersion"] = str(self.rv)
            self.events.append((self.rv, key, "DELETED", gone))
            self.lock.notify_all()
        return obj

    def _fault_for(self, verb: str, plural: str, user: str = "") -> Fault | None:
        for fault in self.faults:
            if fault.matches(verb, plural, user):
                fault.hits += 1
                return copy.copy(fault)
        return None


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message}


def _handler_for(api: FakeApi):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else headers and body in two writes cost a 40 ms delayed ACK

        def log_message(self, *args):  # quiet
            pass

        # --- responses ---------------------------------------------------------
        def send_json(self, code: int, body: dict, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def fail(self, code: int, reason: str, message: str, headers: dict | None = None) -> None:
            self.send_json(code, _status(code, reason, message), headers)

        def drop(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass

        def chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        # --- dispatch ----------------------------------------------------------
        def do_GET(self):
            self.handle_any("GET")

        def do_POST(self):
            self.handle_any("POST")

        def do_PUT(self):
            self.handle_any("PUT")

        def do_PATCH(self):
            self.handle_any("PATCH")

        def do_DELETE(self):
            self.handle_any("DELETE")

        def handle_any(self, method: str) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            m = _PATH.match(url.path)
            if not m:
                return self.fail(404, "NotFound", f"the server could not find the requested resource ({url.path})")
            group = m["group"] or ""
            version = m["core"] or m["version"]
            ns, plural, name, sub = m["ns"] or "", m["plural"], m["name"], m["sub"] or ""  # "": cluster-scoped
            watching = method == "GET" and query.get("watch") in ("true", "1")
            verb = {
                "GET": "watch" if watching else ("get" if name else "list"),
                "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete",
            }[method]
            with api.lock:
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                api.requests.append(Request(verb, group, plural, sub, ns, name or "", query, token))
                fault = api._fault_for(verb, plural, token)
                served = (group, version, plural) not in api.not_served
            if fault and fault.action == "drop":
                return self.drop()
            if fault and fault.action == "hang":
                deadline = time.monotonic() + fault.delay
                with api.lock:
                    while not api.stopping and time.monotonic() < deadline:
                        api.lock.wait(timeout=0.05)
            if fault and fault.action == "status":
                return self.fail(fault.status, "InjectedFault", f"injected {fault.status}", fault.headers)
            if not served:
                return self.fail(404, "NotFound", "the server could not find the requested resource")
            if watching:
                return self.watch(group, version, plural, ns, query, fault.action if fault else "")
            body = json.loads(raw) if raw else None
            key = (group, version, plural, ns, name)
            try:
                getattr(self, f"verb_{verb}")(key, body, query, sub)
            except Invalid as err:
                self.fail(422, "Invalid", str(err))

        # --- verbs -------------------------------------------------------------
        def verb_get(self, key, body, query, sub):
            with api.lock:
                obj = api.objects.get(key)
            if obj is None:
                return self.fail(404, "NotFound", f'{key[2]} "{key[4]}" not found')
            self.send_json(200, obj)

        def verb_list(self, key, body, query, sub):
            try:
                with api.lock:
                    items = [copy.deepcopy(o) for k, o in api.objects.items() if self.selected(k, o, key, query)]
                    rv = str(api.rv)
            except ValueError as err:
                return self.fail(400, "BadRequest", str(err))
            self.send_json(200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items})

        def verb_create(self, key, body, query, sub):
            metadata = body.setdefault("metadata", {})
            if not metadata.get("name") and metadata.get("generateName"):
                # k8s.io/apiserver pkg/storage/names/generate.go simpleNameGenerator: 5 random characters
                metadata["name"] = metadata["generateName"] + "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
            name = metadata.get("name")
            if not name:
                return self.fail(422, "Invalid", "metadata.name: Required value")
            key = key[:4] + (name,)
            with api.lock:
                if key in api.objects:
                    return self.fail(409, "AlreadyExists", f'{key[2]} "{name}" already exists')
                body.pop("status", None)  # status is a subresource: ignored on create
                obj = api._store(key, body, "ADDED", None)
            self.send_json(201, obj)

        def verb_update(self, key, body, query, sub):
            with api.lock:
                old = api.objects.get(key)
                if old is None:
                    return self.fail(404, "NotFound", f'{key[2]} "{key[4]}" not found')
                sent_rv = (body.get("metadata") or {}).get("resourceVersion")
                if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
                    return self.fail(409, "Conflict", "the object has been modified; please apply your changes to the latest version and try again")
                new = copy.deepcopy(old) if sub == "status" else body
                if sub == "status":
                    new["status"] = body.get("status")
                else:
                    new["status"] = old.get("status")
                    new.setdefault("metadata", {})["uid"] = old["metadata"]["uid"]
                obj = api._store(key, new, "MODIFIED", old)
            self.send_json(200, obj)

        def verb_patch(self, key, body, query, sub):
            if not isinstance(body, dict):
                return self.fail(415, "UnsupportedMediaType", "the fake supports merge patches and server-side apply only")
            if self.headers.get("Content-Type") == "application/apply-patch+yaml":
                return self.server_side_apply(key, body, query)
            with api.lock:
                old = api.objects.get(key)
                if old is None:
                    return self.fail(404, "NotFound", f'{key[2]} "{key[4]}" not found')
                if sub == "status":
                    new = copy.deepcopy(old)
                    new["status"] = merge_patch(old.get("status") or {}, body.get("status") or {})
                else:
                    body.pop("status", None)
                    new = merge_patch(old, body)
                obj = api._store(key, new, "MODIFIED", old)
            self.send_json(200, obj)

        def server_side_apply(self, key, body, query):
            """Server-side apply, as far as the steps use it: create when missing (which the API
            server also authorizes as `create`: api-concepts "patch-and-apply"), else merge.
            Field ownership is not modelled."""
            if not query.get("fieldManager"):
                return self.fail(422, "Invalid", "fieldManager is required for apply requests")
            if (body.get("metadata") or {}).get("name") != key[4]:
                return self.fail(400, "BadRequest", "the name of the object does not match the name on the URL")
            body.pop("status", None)
            with api.lock:
                old = api.objects.get(key)
                if old is None:
                    last = api.requests[-1]
                    api.requests.append(Request("create", last.group, last.plural, "", last.namespace, last.name, last.query, last.user, True))
                    obj = api._store(key, body, "ADDED", None)
                    code = 201
                else:
                    obj = api._store(key, merge_patch(old, body), "MODIFIED", old)
                    code = 200
            self.send_json(code, obj)

        def verb_delete(self, key, body, query, sub):
            with api.lock:
                obj = api._delete(key)
            if obj is None:
                return self.fail(404, "NotFound", f'{key[2]} "{key[4]}" not found')
            self.send_json(200, obj)

        # --- watch -------------------------------------------------------------
        @staticmethod
        def selected(k: tuple, obj: dict, want: tuple, query: dict) -> bool:
            if k[:4] != want[:4]:
                return False
            meta = obj.get("metadata") or {}
            for term in filter(None, (query.get("fieldSelector") or "").split(",")):
                field_name, _, value = term.partition("=")
                if field_name == "metadata.name" and meta.get("name") != value.lstrip("="):
                    return False
                if field_name == "metadata.namespace" and meta.get("namespace") != value.lstrip("="):
                    return False
            return label_match(query.get("labelSelector", ""), meta.get("labels") or {})

        def watch(self, group, version, plural, ns, query, fault=""):
            """Stream events; fault "gone" sends a 410 ERROR event, "cut" breaks the stream."""
            want = (group, version, plural, ns)
            deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.close_connection = True
            since = query.get("resourceVersion") or "0"
            try:
                if fault == "cut":
                    return self.drop()
                if fault in ("hold", "chatter"):  # a proxy or server that ignores timeoutSeconds
                    while not api.stopping:
                        time.sleep(0.1)
                        if fault == "chatter":
                            bookmark = {"kind": "Experiment", "metadata": {"resourceVersion": since}}
                            self.chunk(json.dumps({"type": "BOOKMARK", "object": bookmark}).encode() + b"\n")
                    return
                if fault == "gone" or (since != "0" and int(since) < api.compacted_below):
                    error = _status(410, "Expired", f"too old resource version: {since}")
                    self.chunk(json.dumps({"type": "ERROR", "object": error}).encode() + b"\n")
                    return self.chunk(b"")
                with api.lock:
                    if since == "0":  # a new watch: the current state as ADDED events
                        backlog = [("ADDED", copy.deepcopy(o)) for k, o in api.objects.items() if self.selected(k, o, want + ("",), query)]
                        position = api.rv
                    else:
                        position = int(since)
                        backlog = []
                for kind, obj in backlog:
                    self.chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                while not api.stopping and time.monotonic() < deadline:
                    with api.lock:
                        pending = [(rv, e, o) for rv, k, e, o in api.events if rv > position and self.selected(k, o, want + ("",), query)]
                        if not pending:
                            api.lock.wait(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
                            continue
                    for rv, kind, obj in pending:
                        self.chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                        position = rv
                self.chunk(b"")
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler
