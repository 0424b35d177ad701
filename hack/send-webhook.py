#!/usr/bin/env python3
"""Send a GitHub push event to the EventListener, signed as GitHub signs it, and confirm
that it started a run.

    WEBHOOK_SECRET=... .venv/bin/python hack/send-webhook.py --url http://localhost:8080 --namespace bookinfo \\
        --repository OWNER/NAME --branch main --commit SHA
    WEBHOOK_SECRET=... .venv/bin/python hack/send-webhook.py --url URL --namespace NS --payload push.json

The body is sent byte for byte, with X-GitHub-Event, X-GitHub-Delivery and
X-Hub-Signature-256 (HMAC-SHA256 of those bytes with the webhook secret). Without
--payload, a minimal push event is built from --repository, --branch and --commit; it lists
no commits (which files changed is not known), so every listed app of that branch rolls out.

Tekton Triggers answers 202 Accepted to every request whose body is a JSON object, before
it runs the interceptors (tektoncd/triggers v0.37.0 pkg/sink/sink.go HandleEvent), so the
answer does not say whether a run started. So this then watches the namespace (your
kubeconfig) for a new PipelineRun labelled with the commit, for --wait seconds.
Exit 0 when one appears, 1 when none does (with the likely reasons) or the listener
refuses the request, 2 on bad usage. --wait 0 only sends.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from github_events import headers, push_payload  # noqa: E402

COMMIT_LABEL = "iter8-tekton.dev/commit"
REASONS = """The listener answers 202 even when it rejects a request. The likely reasons no run started:
  - the webhook secret differs from the github-webhook Secret's (the signature check fails);
  - {repository} is not in the install's `repositories`, or not with this branch, or its entry names no
    service (SERVICE=OWNER/NAME@BRANCH[:FILE], triggers/settings.env);
  - the push touched no listed app's folder (the folder of its settings file);
  - a tag push, a branch deletion, or an event other than push;
  - the listener's ServiceAccount may not create PipelineRuns, or the PipelineRun was invalid.
Where the reasons are logged:
  kubectl -n tekton-pipelines logs deploy/tekton-triggers-core-interceptors | grep 'Interceptor response'
  kubectl -n {namespace} logs deploy/el-canary-rollout   (creation errors; rejections only at debug level)
Preview offline what the listener does with this request: .venv/bin/python hack/preview --payload FILE --event push --secret ..."""


def runs_for(namespace: str, commit: str) -> set[str] | None:
    """Names of the PipelineRuns labelled with the commit; None when the cluster cannot be read."""
    try:
        from steps.common import StepError
        from steps.kube import Kind, Kube
    except ImportError:
        return None
    try:
        listed = Kube().items(Kind("tekton.dev", "v1", "pipelineruns"), namespace, f"{COMMIT_LABEL}={commit}")
    except StepError as err:
        print(f"warning: cannot list PipelineRuns in {namespace}: {err.message}", file=sys.stderr)
        return None
    return {r["metadata"]["name"] for r in listed}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="the EventListener, e.g. http://localhost:8080")
    p.add_argument("--namespace", help="where the listener creates PipelineRuns (to confirm one starts)")
    p.add_argument("--payload", type=Path, help="the JSON body to send (default: build a push event)")
    p.add_argument("--event", default="push", help="X-GitHub-Event (default: push)")
    p.add_argument("--secret", default=os.environ.get("WEBHOOK_SECRET"),
                   help="the webhook secret (default: $WEBHOOK_SECRET; prefer it to keep the secret out of shell history)")
    p.add_argument("--repository", help="OWNER/NAME, to build a push event")
    p.add_argument("--branch", default="main")
    p.add_argument("--commit", help="the pushed commit's full SHA, to build a push event")
    p.add_argument("--wait", type=float, default=30, help="seconds to wait for the PipelineRun (default: %(default)s; 0: do not wait)")
    p.add_argument("--timeout", type=float, default=30, help="seconds for the listener to answer")
    args = p.parse_args()
    if not args.secret:
        p.error("no webhook secret: set WEBHOOK_SECRET or pass --secret")
    if args.wait and not args.namespace:
        p.error("--namespace is needed to confirm that a run started (or pass --wait 0)")
    if args.payload:
        try:
            body = args.payload.read_bytes()
        except OSError as err:
            p.error(f"cannot read {args.payload}: {err.strerror}")
    elif args.repository and args.commit and "/" in args.repository:
        body = push_payload(args.repository, args.branch, args.commit)
    else:
        p.error("pass --payload FILE, or --repository OWNER/NAME and --commit SHA")
    try:
        event = json.loads(body)
        commit, repository = event.get("after", ""), (event.get("repository") or {}).get("full_name", "?")
    except (ValueError, AttributeError):
        commit, repository = "", "?"

    before = runs_for(args.namespace, commit) if args.wait and commit else None
    sent = headers(args.event, body, args.secret)
    try:
        resp = requests.post(args.url, data=body, headers=sent, timeout=args.timeout)
    except requests.RequestException as err:
        print(f"error: could not reach {args.url}: {err}; is the port-forward running?", file=sys.stderr)
        return 1
    print(f"{resp.status_code} {resp.reason} (delivery {sent['X-GitHub-Delivery']})")
    if resp.text:
        print(resp.text.strip())
    if not resp.ok:
        return 1
    if not args.wait:
        print("sent; not waiting for a PipelineRun (--wait 0): 202 does not mean a run started")
        return 0
    if before is None:
        print("error: cannot confirm a run started (no commit in the payload, or the cluster cannot be read); "
              f"check with: kubectl -n {args.namespace} get pipelineruns -l {COMMIT_LABEL}={commit}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        new = (runs_for(args.namespace, commit) or set()) - before
        if new:
            print(f"started: PipelineRun {', '.join(sorted(new))} in {args.namespace}")
            return 0
        time.sleep(0.5)
    print(REASONS.format(namespace=args.namespace, repository=repository))
    print(f"error: no PipelineRun for commit {commit} appeared in {args.namespace} within {args.wait:g}s; "
          "see the likely reasons above", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
