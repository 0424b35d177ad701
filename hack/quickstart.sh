#!/usr/bin/env bash
# The whole system on a laptop: a kind cluster with a local registry, Tekton Pipelines and
# Triggers, Istio with Prometheus, iter8 1.0.1 (controller and analytics, its CRD patched),
# bookinfo with reviews-v1 serving, the bundle's images, the bundle, and a signed push of
# the app's newest commit, confirmed by the PipelineRun it starts.
#
#   hack/quickstart.sh           set up (again: what exists is kept) and send a push
#   hack/quickstart.sh --down    delete the cluster and the registry
#
# Needs docker (running), kind v0.32+, kubectl v1.32+, curl, tar, git, python3 3.11+ and
# internet access, on Linux or macOS (amd64 or arm64). The app that is built is
# tests/apps/reviews of this repository on GitHub: APP_REPOSITORY (OWNER/NAME, default:
# this clone's GitHub origin) at APP_BRANCH (default main), its newest commit; its rollout
# settings are tests/apps/reviews/.iter8-tekton.yaml.
set -euo pipefail

cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-iter8-tekton}
KIND_MIN=0.32.0
# kind v0.32.0's own default node image (pkg/apis/config/defaults/image.go), by digest.
KIND_NODE_IMAGE=kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5
KUBECTL_MIN=1.32.0
REGISTRY_IMAGE=registry:2.8.3
REGISTRY=kind-registry            # its name on the kind network: pods push there (kaniko)
REGISTRY_PORT=5001                # its port on the host: images pushed from here
TEKTON_PIPELINES=v1.15.0
TEKTON_TRIGGERS=v0.37.0
ISTIO=1.30.3
ITER8=v1.0.1
ITER8_ANALYTICS=v1.0.1
NAMESPACE=bookinfo
IMAGES=localhost:$REGISTRY_PORT/iter8-tekton
CACHE=.cache/quickstart
APP_BRANCH=${APP_BRANCH:-main}
APP_SETTINGS=tests/apps/reviews/.iter8-tekton.yaml

say() { printf '\n== %s\n' "$*"; }
fail() { printf 'quickstart: %s\n' "$*" >&2; exit 2; }

# at_least VERSION MINIMUM: dotted versions, a leading v ignored
at_least() {
    [ "$(printf '%s\n%s\n' "${2#v}" "${1#v}" | sort -V | head -n 1)" = "${2#v}" ]
}

for tool in docker kind kubectl curl tar git python3; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed; install it and re-run (see README, Quickstart)"
done

if [ "${1:-}" = "--down" ]; then
    kind delete cluster --name "$CLUSTER"
    docker rm -f "$REGISTRY" >/dev/null 2>&1 || true
    exit 0
fi
[ $# -eq 0 ] || fail "unknown argument $1; use no argument, or --down"

docker info >/dev/null 2>&1 || fail "docker is not running (docker info failed); start Docker and re-run"
kind_version=$(kind version | sed -n 's/^kind \(v[0-9.]*\).*/\1/p')
at_least "${kind_version:-0}" "$KIND_MIN" || fail "kind ${kind_version:-(unknown)} is older than v$KIND_MIN; install kind v$KIND_MIN or newer"
kubectl_version=$(kubectl version --client -o json | python3 -c 'import json, sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')
at_least "$kubectl_version" "$KUBECTL_MIN" || fail "kubectl $kubectl_version is older than v$KUBECTL_MIN; install a newer kubectl"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || fail "python3 is older than 3.11; install Python 3.11 or newer"

case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) istio_platform=linux-amd64 ;;
    Linux-aarch64 | Linux-arm64) istio_platform=linux-arm64 ;;
    Darwin-x86_64) istio_platform=osx ;;
    Darwin-arm64) istio_platform=osx-arm64 ;;
    *) fail "no Istio release for $(uname -s) $(uname -m); use Linux or macOS on amd64 or arm64" ;;
esac

app_repository() {
    if [ -n "${APP_REPOSITORY:-}" ]; then
        printf '%s\n' "$APP_REPOSITORY"
        return
    fi
    local url
    url=$(git remote get-url origin 2>/dev/null) || fail "no git origin: set APP_REPOSITORY=OWNER/NAME (a GitHub repository holding this project)"
    case "$url" in
        https://github.com/*) url=${url#https://github.com/} ;;
        git@github.com:*) url=${url#git@github.com:} ;;
        *) fail "origin $url is not on GitHub: set APP_REPOSITORY=OWNER/NAME" ;;
    esac
    printf '%s\n' "${url%.git}"
}
REPOSITORY=$(app_repository)
COMMIT=$(git ls-remote "https://github.com/$REPOSITORY.git" "refs/heads/$APP_BRANCH" | cut -f1)
[ -n "$COMMIT" ] || fail "branch $APP_BRANCH of https://github.com/$REPOSITORY has no commit; push it first (or set APP_BRANCH)"

# wait_for_deployment NAMESPACE NAME: until it exists (an operator may create it later), then Available.
wait_for_deployment() {
    local waited=0
    until kubectl get deployment "$2" -n "$1" >/dev/null 2>&1; do
        [ "$waited" -lt 300 ] || fail "deployment $1/$2 did not appear within 300 s"
        sleep 5
        waited=$((waited + 5))
    done
    kubectl rollout status "deployment/$2" -n "$1" --timeout=300s
}

say "local registry $REGISTRY (localhost:$REGISTRY_PORT)"
case "$(docker inspect -f '{{.State.Running}}' "$REGISTRY" 2>/dev/null || echo missing)" in
    true) ;;
    false) docker start "$REGISTRY" >/dev/null ;;
    *) docker run -d --restart=always -p "127.0.0.1:$REGISTRY_PORT:5000" --network bridge --name "$REGISTRY" "$REGISTRY_IMAGE" >/dev/null ;;
esac

say "kind cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
    # containerd reads registry hosts from /etc/containerd/certs.d (kind's local-registry recipe).
    kind create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --wait 120s --config - <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
containerdConfigPatches:
  - |-
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/certs.d"
EOF
fi
# Pods pull localhost:5001/... (the images pushed from here) and kind-registry:5000/...
# (what kaniko pushed from inside the cluster), both from the registry container.
for node in $(kind get nodes --name "$CLUSTER"); do
    for host in "localhost:$REGISTRY_PORT" "$REGISTRY:5000"; do
        docker exec "$node" mkdir -p "/etc/containerd/certs.d/$host"
        printf '[host."http://%s:5000"]\n' "$REGISTRY" | docker exec -i "$node" cp /dev/stdin "/etc/containerd/certs.d/$host/hosts.toml"
    done
done
if [ "$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$REGISTRY")" = "null" ]; then
    docker network connect kind "$REGISTRY"
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null
kubectl apply -f - <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: local-registry-hosting
  namespace: kube-public
data:
  localRegistryHosting.v1: |
    host: "localhost:$REGISTRY_PORT"
    help: "https://kind.sigs.k8s.io/docs/user/local-registry/"
EOF

say "Tekton Pipelines $TEKTON_PIPELINES and Triggers $TEKTON_TRIGGERS"
if ! kubectl get deployment tekton-pipelines-controller -n tekton-pipelines >/dev/null 2>&1; then
    kubectl apply -f "https://infra.tekton.dev/tekton-releases/pipeline/previous/$TEKTON_PIPELINES/release.yaml"
fi
wait_for_deployment tekton-pipelines tekton-pipelines-controller
wait_for_deployment tekton-pipelines tekton-pipelines-webhook
if ! kubectl get deployment tekton-triggers-controller -n tekton-pipelines >/dev/null 2>&1; then
    kubectl apply -f "https://infra.tekton.dev/tekton-releases/triggers/previous/$TEKTON_TRIGGERS/release.yaml"
    kubectl apply -f "https://infra.tekton.dev/tekton-releases/triggers/previous/$TEKTON_TRIGGERS/interceptors.yaml"
fi
wait_for_deployment tekton-pipelines tekton-triggers-controller
wait_for_deployment tekton-pipelines tekton-triggers-webhook
wait_for_deployment tekton-pipelines tekton-triggers-core-interceptors

say "Istio $ISTIO ($istio_platform) with Prometheus"
istio_dir=$CACHE/istio-$ISTIO
if [ ! -x "$istio_dir/bin/istioctl" ]; then
    mkdir -p "$CACHE"
    curl -fsSL -o "$CACHE/istio.tar.gz" "https://github.com/istio/istio/releases/download/$ISTIO/istio-$ISTIO-$istio_platform.tar.gz"
    tar -xzf "$CACHE/istio.tar.gz" -C "$CACHE"
fi
if ! kubectl get deployment istiod -n istio-system >/dev/null 2>&1; then
    "$istio_dir/bin/istioctl" install --set profile=demo -y
fi
wait_for_deployment istio-system istiod
wait_for_deployment istio-system istio-ingressgateway
if ! kubectl get deployment prometheus -n istio-system >/dev/null 2>&1; then
    kubectl apply -f "$istio_dir/samples/addons/prometheus.yaml"
fi
wait_for_deployment istio-system prometheus

say "iter8 $ITER8 (experiments.iter8.tools/v1alpha2) and its analytics $ITER8_ANALYTICS"
if ! kubectl get crd experiments.iter8.tools >/dev/null 2>&1; then
    # The telemetry-v2-17 manifest's metrics select job='kubernetes-pods': the job under which
    # Istio's Prometheus addon scrapes the sidecars (doctor checks it).
    kubectl apply -f "https://raw.githubusercontent.com/iter8-tools/iter8-controller/$ITER8/install/iter8-controller-telemetry-v2-17.yaml"
    kubectl apply -f "https://raw.githubusercontent.com/iter8-tools/iter8-analytics/$ITER8_ANALYTICS/install/kubernetes/iter8-analytics.yaml"
fi
# iter8 v1.0.1's CRD declares status.analysisState a bare object: the API server prunes it
# and analytics restarts from 100% baseline every iteration. Keep it (README, Prerequisites).
keep='/spec/versions/0/schema/openAPIV3Schema/properties/status/properties/analysisState/x-kubernetes-preserve-unknown-fields'
kubectl patch crd experiments.iter8.tools --type json -p "[{\"op\": \"add\", \"path\": \"$keep\", \"value\": true}]"
wait_for_deployment iter8 iter8-controller
wait_for_deployment iter8 iter8-analytics

say "bookinfo in namespace $NAMESPACE, reviews-v1 serving"
if ! kubectl get deployment productpage-v1 -n "$NAMESPACE" >/dev/null 2>&1; then
    kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
    kubectl label namespace "$NAMESPACE" istio-injection=enabled --overwrite
    kubectl apply -n "$NAMESPACE" -f "$istio_dir/samples/bookinfo/platform/kube/bookinfo.yaml"
    kubectl apply -n "$NAMESPACE" -f "$istio_dir/samples/bookinfo/networking/bookinfo-gateway.yaml"
    kubectl delete deployment reviews-v2 reviews-v3 -n "$NAMESPACE" --ignore-not-found
fi
for deployment in productpage-v1 details-v1 ratings-v1 reviews-v1; do
    wait_for_deployment "$NAMESPACE" "$deployment"
done

say "the bundle's images, pushed to localhost:$REGISTRY_PORT"
for image in steps git; do
    docker build -f "images/$image/Dockerfile" -t "$IMAGES/$image:0.1.0" .
    docker push "$IMAGES/$image:0.1.0"
done

say "the bundle, for https://github.com/$REPOSITORY ($APP_BRANCH)"
# Outside the repository: kustomize refuses an overlay inside the tree it builds on.
overlay=${QUICKSTART_OVERLAY:-$HOME/.cache/iter8-tekton-quickstart}
mkdir -p "$overlay"
cat > "$overlay/kustomization.yaml" <<EOF
# Written by hack/quickstart.sh: the bundle, set up for the quickstart cluster.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$PWD" "$overlay")
patches:
  - target: {kind: ConfigMap, name: canary-rollout-settings}
    patch: |-
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: canary-rollout-settings}
      data:
        repositories: reviews=$REPOSITORY@$APP_BRANCH:$APP_SETTINGS
        steps-image: $IMAGES/steps:0.1.0
        git-image: $IMAGES/git:0.1.0
        image-registry: $REGISTRY:5000/bookinfo
        insecure-registry: "true"
        default-load-url: http://istio-ingressgateway.istio-system/productpage
        default-load-host: ""
        load-hosts: istio-ingressgateway.istio-system
replacements:
  - path: replacements.yaml
EOF
cp replacements.yaml "$overlay/replacements.yaml"
kubectl apply -k "$overlay"

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet -e .
fi
say "doctor: what an iter8 1.0.1 rollout needs"
kubectl port-forward -n istio-system svc/prometheus 19090:9090 >"$CACHE/prometheus-forward.log" 2>&1 &
prometheus_forward=$!
trap 'kill "$prometheus_forward" ${listener_forward:-} 2>/dev/null || true' EXIT
.venv/bin/python -m steps.doctor --namespace "$NAMESPACE" --service reviews --prometheus-url http://127.0.0.1:19090 ||
    fail "doctor found a problem (above); fix it and re-run"

say "webhook secret, listener and a signed push of $COMMIT"
if ! kubectl get secret github-webhook -n "$NAMESPACE" >/dev/null 2>&1; then
    kubectl create secret generic github-webhook -n "$NAMESPACE" --from-literal=secret="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
fi
if [ -n "$(kubectl get pipelineruns -n "$NAMESPACE" -l "iter8-tekton.dev/commit=$COMMIT" -o name)" ]; then
    echo "a run for $COMMIT exists already; not sending the push again"
else
    # Triggers creates the listener's Deployment some time after the EventListener exists.
    wait_for_deployment "$NAMESPACE" el-canary-rollout
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    kubectl port-forward -n "$NAMESPACE" svc/el-canary-rollout "$port:8080" >"$CACHE/listener-forward.log" 2>&1 &
    listener_forward=$!
    waited=0
    until curl -fsS "http://127.0.0.1:$port/live" >/dev/null 2>&1; do
        [ "$waited" -lt 60 ] || fail "the listener did not answer on port $port within 60 s (see $CACHE/listener-forward.log)"
        sleep 1
        waited=$((waited + 1))
    done
    WEBHOOK_SECRET=$(kubectl get secret github-webhook -n "$NAMESPACE" -o jsonpath='{.data.secret}' | base64 -d) \
        .venv/bin/python hack/send-webhook.py --url "http://127.0.0.1:$port" --namespace "$NAMESPACE" --wait 60 \
        --repository "$REPOSITORY" --branch "$APP_BRANCH" --commit "$COMMIT"
fi

cat <<EOF

A canary rollout of reviews-${COMMIT:0:7} has started. Watch it with:
  kubectl -n $NAMESPACE get pipelineruns -l iter8-tekton.dev/commit=$COMMIT -w
  kubectl -n $NAMESPACE get experiments.iter8.tools -w
  tkn -n $NAMESPACE pipelinerun logs -f --last        (if you have tkn)
The candidate runs the baseline's code (tests/apps/reviews/Dockerfile), so iter8 should
promote it. To see a rollback, make it worse (the Dockerfile says how), push, and run
hack/quickstart.sh again. Delete everything with: hack/quickstart.sh --down
EOF
