#!/usr/bin/env python3
"""Send a GitHub push event to an EventListener, signed as GitHub signs it.

    WEBHOOK_SECRET=... hack/send-webhook.py --url http://localhost:8080 --payload push.json
    WEBHOOK_SECRET=... hack/send-webhook.py --url URL --repository OWNER/NAME --branch main --commit SHA

The body is sent byte for byte, with X-GitHub-Event, X-GitHub-Delivery and
X-Hub-Signature-256 (HMAC-SHA256 of those bytes with the webhook secret). Without
--payload, a minimal push event is built from --repository, --branch and --commit.
For a real installation: `kubectl port-forward svc/el-canary-rollout 8080` first.
Exit 0 when the listener accepts the request (2xx), 1 when it does not, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from github_events import headers, push_payload  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="the EventListener, e.g. http://localhost:8080")
    p.add_argument("--payload", type=Path, help="the JSON body to send (default: build a push event)")
    p.add_argument("--event", default="push", help="X-GitHub-Event (default: push)")
    p.add_argument("--secret", default=os.environ.get("WEBHOOK_SECRET"),
                   help="the webhook secret (default: $WEBHOOK_SECRET; prefer it to keep the secret out of shell history)")
    p.add_argument("--repository", help="OWNER/NAME, to build a push event")
    p.add_argument("--branch", default="main")
    p.add_argument("--commit", help="the pushed commit's full SHA, to build a push event")
    p.add_argument("--timeout", type=float, default=30)
    args = p.parse_args()
    if not args.secret:
        p.error("no webhook secret: set WEBHOOK_SECRET or pass --secret")
    if args.payload:
        try:
            body = args.payload.read_bytes()
        except OSError as err:
            p.error(f"cannot read {args.payload}: {err.strerror}")
    elif args.repository and args.commit and "/" in args.repository:
        body = push_payload(args.repository, args.branch, args.commit)
    else:
        p.error("pass --payload FILE, or --repository OWNER/NAME and --commit SHA")

    sent = headers(args.event, body, args.secret)
    try:
        resp = requests.post(args.url, data=body, headers=sent, timeout=args.timeout)
    except requests.RequestException as err:
        print(f"error: could not reach {args.url}: {err}; is the port-forward running?", file=sys.stderr)
        return 1
    print(f"{resp.status_code} {resp.reason} (delivery {sent['X-GitHub-Delivery']})")
    if resp.text:
        print(resp.text.strip())
    return 0 if resp.ok else 1


if __name__ == "__main__":
    sys.exit(main())
