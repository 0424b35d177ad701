"""The Kubernetes API as the steps use it: plain dicts, retries, and a resumable watch.

Every call goes through `Kube._request`, which retries 429, 5xx and dropped
connections with bounded exponential backoff and jitter (honouring Retry-After),
and raises `ApiFailure` (exit code 4) when the API keeps failing.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from .common import EXIT_API, ApiFailure, BadInput, StepError, log


@dataclass(frozen=True)
class Kind:
    group: str  # "" for the core API
    version: str
    plural: str

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        """The REST path; namespace None for a cluster-scoped kind."""
        root = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        path = f"{root}/namespaces/{namespace}/{self.plural}" if namespace else f"{root}/{self.plural}"
        if name:
            path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
        return path

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


DEPLOYMENTS = Kind("apps", "v1", "deployments")
SERVICES = Kind("", "v1", "services")
CONFIGMAPS = Kind("", "v1", "configmaps")
SECRETS = Kind("", "v1", "secrets")
HPAS = Kind("autoscaling", "v2", "horizontalpodautoscalers")
PDBS = Kind("policy", "v1", "poddisruptionbudgets")
# v1alpha3 is served by every Istio release from the iter8 1.0 era to today.
VIRTUAL_SERVICES = Kind("networking.istio.io", "v1alpha3", "virtualservices")
DESTINATION_RULES = Kind("networking.istio.io", "v1alpha3", "destinationrules")
CRDS = Kind("apiextensions.k8s.io", "v1", "customresourcedefinitions")  # cluster-scoped: namespace None


class ApiError(StepError):
    """A non-retryable answer from the API server (404, 409, 422, ...). Callers handle the
    ones they expect; any other ends the step with exit code 4 and this one line."""

    exit_code = EXIT_API

    def __init__(self, status: int, reason: str, message: str = "", retry_after: float | None = None):
        super().__init__(f"Kubernetes API answered {status} {reason}: {message}".rstrip(": "))
        self.status = status
        self.reason = reason
        self.detail = message  # the server's own words
        self.retry_after = retry_after


class Gone(ApiError):
    """410: the resourceVersion a watch asked for is too old; list again."""


_RETRYABLE_STATUS = {429, 500, 502, 503, 504}
_CONNECTION_ERRORS = (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)


@dataclass
class RetryPolicy:
    attempts: int = 6
    base: float = 0.5  # seconds; the n-th retry waits up to base * 2**n, capped
    cap: float = 10.0

    @classmethod
    def from_env(cls) -> "RetryPolicy":
        return cls(
            attempts=int(os.environ.get("KUBE_RETRY_ATTEMPTS", cls.attempts)),
            base=float(os.environ.get("KUBE_RETRY_BASE_SECONDS", cls.base)),
        )

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.cap * 3)
        return random.uniform(self.base / 2, min(self.cap, self.base * 2**attempt))


def load_client() -> client.ApiClient:
    """In a pod: the pod's ServiceAccount. Elsewhere: KUBECONFIG or ~/.kube/config."""
    configuration = client.Configuration()
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            # KUBECONFIG is read now, not when the kubernetes package was imported.
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
    except (config.ConfigException, OSError) as err:
        raise BadInput(f"no Kubernetes credentials: {err}; run in a pod or set KUBECONFIG") from None
    configuration.retries = False  # Kube._request is the one place that retries
    return client.ApiClient(configuration)


class Kube:
    """The few verbs the steps need, on any kind, as dicts."""

    def __init__(self, api: client.ApiClient | None = None, retry: RetryPolicy | None = None):
        self.api = api or load_client()
        self.retry = retry or RetryPolicy.from_env()

    # --- verbs -----------------------------------------------------------------------
    def get(self, kind: Kind, namespace: str | None, name: str) -> dict | None:
        try:
            return self._json("GET", kind.path(namespace, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def list(self, kind: Kind, namespace: str, label_selector: str | None = None, field_selector: str | None = None) -> dict:
        query = [(k, v) for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v]
        return self._json("GET", kind.path(namespace), query=query)

    def items(self, kind: Kind, namespace: str, label_selector: str | None = None) -> list[dict]:
        return self.list(kind, namespace, label_selector).get("items") or []

    def create(self, kind: Kind, namespace: str, body: dict) -> dict:
        return self._json("POST", kind.path(namespace), body=body)

    def patch(self, kind: Kind, namespace: str, name: str, patch: dict, subresource: str | None = None) -> dict:
        return self._json(
            "PATCH", kind.path(namespace, name, subresource), body=patch, content_type="application/merge-patch+json"
        )

    def apply(self, kind: Kind, namespace: str, body: dict, manager: str) -> dict:
        """Server-side apply (creates or updates; a field another manager owns is a 409 conflict)."""
        return self._json(
            "PATCH", kind.path(namespace, body["metadata"]["name"]), query=[("fieldManager", manager)],
            body=body, content_type="application/apply-patch+yaml",
        )

    def replace(self, kind: Kind, namespace: str, name: str, body: dict) -> dict:
        return self._json("PUT", kind.path(namespace, name), body=body)

    def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        """Delete (dependents in the background, like kubectl); False when it was already gone."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            self._json("DELETE", kind.path(namespace, name), body=body)
            return True
        except ApiError as err:
            if err.status == 404:
                return False
            raise

    def watch(self, kind: Kind, namespace: str, name: str, resource_version: str, deadline: float) -> Iterator[dict]:
        """Raw watch events for one object until `deadline` (time.monotonic()), at the latest.

        Raises Gone on 410 and connection errors on drops. The server is asked to end the
        watch at the deadline, but a proxy may hold it open and a server may keep sending
        events, so the stream is also shut from our side when the deadline passes.
        """
        remaining = max(0.0, deadline - time.monotonic())
        query = [
            ("watch", "true"),
            ("fieldSelector", f"metadata.name={name}"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(max(1, math.ceil(remaining)))),
        ]
        resp = self._request("GET", kind.path(namespace), query=query, stream=True, timeout=(10, remaining + 2))
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), _shut, (resp,))
        timer.daemon = True
        timer.start()
        try:
            for line in iter_resp_lines(resp):
                if time.monotonic() >= deadline:
                    return
                if not line:
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    code = status.get("code", 500)
                    error = Gone if code == 410 else ApiError
                    raise error(code, status.get("reason", ""), status.get("message", ""))
                yield event
        finally:
            timer.cancel()
            resp.release_conn()

    # --- plumbing ------------------------------------------------------------------------
    def _json(self, method: str, path: str, **kwargs: Any) -> dict:
        resp = self._request(method, path, **kwargs)
        return json.loads(resp.data or b"{}")

    def _request(self, method: str, path: str, *, query=(), body=None, content_type=None, stream=False, timeout=None):
        """One API call with retries; returns the urllib3 response (read unless stream)."""
        attempt = 0
        while True:
            try:
                return self._once(method, path, list(query), body, content_type, stream, timeout or (10, 60))
            except ApiError as err:
                if err.status not in _RETRYABLE_STATUS:
                    raise
                problem, retry_after = f"{err.status} {err.reason}", err.retry_after
            except _CONNECTION_ERRORS as err:
                problem, retry_after = f"connection failed ({type(err).__name__})", None
            attempt += 1
            if attempt >= self.retry.attempts:
                raise ApiFailure(
                    f"Kubernetes API {method} {path} failed {attempt} times, last: {problem}; "
                    "check that the API server is reachable and healthy, then re-run"
                )
            wait = self.retry.delay(attempt, retry_after)
            log(f"Kubernetes API {method} {path}: {problem}; retrying in {wait:.1f}s ({attempt}/{self.retry.attempts - 1})")
            time.sleep(wait)

    def _once(self, method, path, query, body, content_type, stream, timeout):
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        request = self.api.param_serialize(
            method, path, query_params=query, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        try:
            resp = self.api.call_api(*request, _request_timeout=timeout).response
        except ApiException as err:  # the REST layer reports connection failures this way
            raise ConnectionError(str(err.reason)) from None
        if resp.status in (401, 403):
            raise ApiFailure(
                f"Kubernetes API refused {method} {path} ({resp.status}): {_error_from(resp).detail}; "
                "check the ServiceAccount and its Role (docs/security.md, RBAC)"
            )
        if not 200 <= resp.status <= 299:
            raise _error_from(resp)
        if not stream:
            resp.read(cache_content=True)  # the whole body now, inside the retry loop; kept for .data
        return resp


def _shut(resp) -> None:
    """End a streaming response now: a blocked read returns, the stream ends."""
    try:
        resp.shutdown()
    except (ValueError, RuntimeError, OSError):  # already released or closed
        pass


def _error_from(resp) -> ApiError:
    data = resp.read()
    try:
        status = json.loads(data)
        reason, message = status.get("reason", ""), status.get("message", "")
    except ValueError:
        reason, message = resp.reason or "", data[:200].decode("utf-8", "replace")
    retry_after = resp.headers.get("Retry-After")
    try:
        retry_after = float(retry_after) if retry_after is not None else None
    except ValueError:
        retry_after = None
    error = Gone if resp.status == 410 else ApiError
    return error(resp.status, reason or resp.reason or "", message, retry_after)


def follow(
    kube: Kube, kind: Kind, namespace: str, name: str, deadline: float, initial: dict | None = None
) -> Iterator[dict | None]:
    """Yield the object now and after every change until the deadline; None once deleted.

    Resumes from the last resourceVersion after a dropped stream or a server-side watch
    timeout; after 410 Gone it lists again and watches from the list's resourceVersion.
    A missing object raises BadInput before anything is yielded.
    """
    obj = initial or kube.get(kind, namespace, name)
    if obj is None:
        raise BadInput(f"{kind} {namespace}/{name} does not exist; check the name and namespace")
    yield obj
    version = obj["metadata"].get("resourceVersion", "0")
    failures = 0
    while time.monotonic() < deadline:
        try:
            for event in kube.watch(kind, namespace, name, version, deadline):
                failures = 0
                current = event.get("object") or {}
                version = current.get("metadata", {}).get("resourceVersion", version)
                if event["type"] == "BOOKMARK":
                    continue
                if event["type"] == "DELETED":
                    yield None
                    return
                yield current
            continue  # the server ended the watch (its timeout): watch again from `version`
        except Gone:
            listed = kube.list(kind, namespace, field_selector=f"metadata.name={name}")
            version = listed["metadata"]["resourceVersion"]
            if not listed.get("items"):
                yield None
                return
            yield listed["items"][0]
            problem = "410 Gone"
        except _CONNECTION_ERRORS as err:  # dropped mid-stream: resume from `version`
            problem = f"stream broken ({type(err).__name__})"
        if time.monotonic() >= deadline:  # our own shutdown at the deadline, or a drop right at it
            return
        failures += 1
        if failures >= kube.retry.attempts:
            raise ApiFailure(
                f"watching {kind} {namespace}/{name} failed {failures} times in a row ({problem}); "
                "check that the API server is reachable and healthy, then re-run"
            )
        time.sleep(min(kube.retry.delay(failures, None), max(0.0, deadline - time.monotonic())))
