#!/usr/bin/env bash
# The whole system on a laptop: a kind cluster with Tekton Pipelines and Triggers, Istio,
# iter8 1.0 (controller, analytics, Prometheus), bookinfo with a reviews baseline, a local
# registry, the step image, this bundle, and a signed push event that starts a canary run.
#
#   hack/quickstart.sh           set up (again: each part that exists is skipped) and fire a push
#   hack/quickstart.sh --down    delete the cluster and the registry
#
# Needs docker, kind, kubectl, curl, tar, git, python3 and internet access. The app that
# is built is tests/apps/reviews of this repository on GitHub: APP_REPOSITORY (OWNER/NAME,
# default: this clone's GitHub origin) at APP_BRANCH (default main), its newest commit.
set -euo pipefail

cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-iter8-tekton}
KIND_NODE_IMAGE=kindest/node:v1.32.8
REGISTRY_IMAGE=registry:2.8.3
REGISTRY=kind-registry            # its name on the kind network; pods push and pull there
TEKTON_PIPELINES=v1.15.0
TEKTON_TRIGGERS=v0.37.0
ISTIO=1.30.3
ITER8=v1.0.1
ITER8_ANALYTICS=v1.0.0
NAMESPACE=bookinfo
STEP_IMAGE=localhost/iter8-tekton/steps:0.1.0
CACHE=.cache/quickstart
APP_BRANCH=${APP_BRANCH:-main}

say() { printf '\n== %s\n' "$*"; }
fail() { printf 'quickstart: %s\n' "$*" >&2; exit 2; }

for tool in docker kind kubectl curl tar git python3; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed; install it and re-run (see README, Quickstart)"
done

if [ "${1:-}" = "--down" ]; then
    kind delete cluster --name "$CLUSTER"
    docker rm -f "$REGISTRY" >/dev/null 2>&1 || true
    exit 0
fi
[ $# -eq 0 ] || fail "unknown argument $1; use no argument, or --down"

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

say "local registry $REGISTRY"
if [ "$(docker inspect -f '{{.State.Running}}' "$REGISTRY" 2>/dev/null || true)" != "true" ]; then
    docker run -d --restart=always --name "$REGISTRY" "$REGISTRY_IMAGE" >/dev/null
fi

say "kind cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
    # containerd pulls from the registry over plain HTTP, by the same name the pods push to.
    kind create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --wait 120s --config - <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
containerdConfigPatches:
  - |-
    [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$REGISTRY:5000"]
      endpoint = ["http://$REGISTRY:5000"]
EOF
fi
docker network connect kind "$REGISTRY" >/dev/null 2>&1 || true
kubectl config use-context "kind-$CLUSTER" >/dev/null

say "Tekton Pipelines $TEKTON_PIPELINES and Triggers $TEKTON_TRIGGERS"
if ! kubectl get deployment tekton-pipelines-controller -n tekton-pipelines >/dev/null 2>&1; then
    kubectl apply -f "https://infra.tekton.dev/tekton-releases/pipeline/previous/$TEKTON_PIPELINES/release.yaml"
fi
if ! kubectl get deployment tekton-triggers-controller -n tekton-pipelines >/dev/null 2>&1; then
    kubectl apply -f "https://infra.tekton.dev/tekton-releases/triggers/previous/$TEKTON_TRIGGERS/release.yaml"
    kubectl apply -f "https://infra.tekton.dev/tekton-releases/triggers/previous/$TEKTON_TRIGGERS/interceptors.yaml"
fi
kubectl wait --for=condition=Available deployment --all -n tekton-pipelines --timeout=300s

say "Istio $ISTIO with Prometheus"
istio_dir=$CACHE/istio-$ISTIO
if [ ! -x "$istio_dir/bin/istioctl" ]; then
    mkdir -p "$CACHE"
    curl -fsSL -o "$CACHE/istio.tar.gz" "https://github.com/istio/istio/releases/download/$ISTIO/istio-$ISTIO-linux-amd64.tar.gz"
    tar -xzf "$CACHE/istio.tar.gz" -C "$CACHE"
fi
if ! kubectl get deployment istiod -n istio-system >/dev/null 2>&1; then
    "$istio_dir/bin/istioctl" install --set profile=demo -y
fi
if ! kubectl get deployment prometheus -n istio-system >/dev/null 2>&1; then
    kubectl apply -f "$istio_dir/samples/addons/prometheus.yaml"
fi

say "iter8 $ITER8 (experiments.iter8.tools/v1alpha2) and its analytics $ITER8_ANALYTICS"
if ! kubectl get crd experiments.iter8.tools >/dev/null 2>&1; then
    kubectl apply -f "https://raw.githubusercontent.com/iter8-tools/iter8-controller/$ITER8/install/iter8-controller-telemetry-v2-17.yaml"
    kubectl apply -f "https://raw.githubusercontent.com/iter8-tools/iter8-analytics/$ITER8_ANALYTICS/install/kubernetes/iter8-analytics.yaml"
fi

say "bookinfo in namespace $NAMESPACE, reviews-v1 as the baseline"
if ! kubectl get deployment productpage-v1 -n "$NAMESPACE" >/dev/null 2>&1; then
    kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
    kubectl label namespace "$NAMESPACE" istio-injection=enabled --overwrite
    kubectl apply -n "$NAMESPACE" -f "$istio_dir/samples/bookinfo/platform/kube/bookinfo.yaml"
    kubectl apply -n "$NAMESPACE" -f "$istio_dir/samples/bookinfo/networking/bookinfo-gateway.yaml"
    kubectl delete deployment reviews-v2 reviews-v3 -n "$NAMESPACE" --ignore-not-found
fi

say "step image $STEP_IMAGE"
docker build -f images/steps/Dockerfile -t "$STEP_IMAGE" .
kind load docker-image "$STEP_IMAGE" --name "$CLUSTER"

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
images:
  - name: ghcr.io/iter8-tekton/steps
    newName: ${STEP_IMAGE%:*}
    newTag: ${STEP_IMAGE##*:}
patches:
  - target: {kind: ConfigMap, name: canary-trigger-settings}
    patch: |-
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: canary-trigger-settings}
      data:
        repository: $REPOSITORY
        branch: $APP_BRANCH
        image-repository: $REGISTRY:5000/bookinfo/reviews
        context: tests/apps/reviews
        kustomize-dir: tests/apps/reviews/kustomize
        insecure-registry: "true"
        load-url: http://istio-ingressgateway.istio-system/productpage
replacements:
  - path: replacements.yaml
EOF
cp triggers/replacements.yaml "$overlay/replacements.yaml"
kubectl apply -k "$overlay"

say "webhook secret, listener and a signed push of $COMMIT"
if ! kubectl get secret github-webhook -n "$NAMESPACE" >/dev/null 2>&1; then
    kubectl create secret generic github-webhook -n "$NAMESPACE" --from-literal=secret="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
fi
if ! kubectl get secret registry-credentials -n "$NAMESPACE" >/dev/null 2>&1; then
    kubectl create secret generic registry-credentials -n "$NAMESPACE" --from-literal=config.json='{"auths": {}}'
fi
if [ -n "$(kubectl get pipelineruns -n "$NAMESPACE" -l "iter8-tekton.dev/commit=$COMMIT" -o name)" ]; then
    echo "a run for $COMMIT exists already; not sending the push again"
else
    kubectl rollout status deployment/el-canary-rollout -n "$NAMESPACE" --timeout=180s
    kubectl port-forward -n "$NAMESPACE" svc/el-canary-rollout 18080:8080 >"$CACHE/port-forward.log" 2>&1 &
    forward=$!
    trap 'kill "$forward" 2>/dev/null || true' EXIT
    sleep 3
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
        .venv/bin/python -m pip install --quiet -e .
    fi
    WEBHOOK_SECRET=$(kubectl get secret github-webhook -n "$NAMESPACE" -o jsonpath='{.data.secret}' | base64 -d) \
        .venv/bin/python hack/send-webhook.py --url http://localhost:18080 \
        --repository "$REPOSITORY" --branch "$APP_BRANCH" --commit "$COMMIT"
fi

cat <<EOF

A canary rollout of reviews-${COMMIT:0:7} is running. Watch it with:
  kubectl -n $NAMESPACE get pipelineruns -l iter8-tekton.dev/commit=$COMMIT -w
  kubectl -n $NAMESPACE get experiments.iter8.tools -w
  tkn -n $NAMESPACE pipelinerun logs -f --last        (if you have tkn)
Delete everything with: hack/quickstart.sh --down
EOF
