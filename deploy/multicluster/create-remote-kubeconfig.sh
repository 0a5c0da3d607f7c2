#!/usr/bin/env bash
# Makes a remote cluster ready for the primary's svid-ca (--remote-kubeconfig-dir) and prints, on stdout, the
# Secret to apply on the PRIMARY cluster: like `istioctl create-remote-secret`, with kubectl only.
#
#   deploy/multicluster/create-remote-kubeconfig.sh --context REMOTE_CONTEXT --cluster-id CLUSTER_ID \
#     [--no-pods] [--server https://remote-api:6443] [--namespace istio-system] [--secret-name svid-ca-remote-ID] \
#     [--kubeconfig FILE] [--skip-rbac] | kubectl --context PRIMARY_CONTEXT apply -f -
#   deploy/multicluster/create-remote-kubeconfig.sh --print-rbac [--no-pods] [--namespace NS]
#
# On the remote cluster (kubectl --context REMOTE_CONTEXT) it applies remote-rbac.yaml (ServiceAccount
# svid-ca-remote-reader, its ClusterRole -- tokenreviews create; pods list/watch unless --no-pods -- its
# ClusterRoleBinding, and a service-account-token Secret), waits for the token, and builds a kubeconfig from it:
# the API server URL of the context (or --server, e.g. the address the primary reaches it at) and the CA the
# token Secret carries. --print-rbac prints the remote manifests instead of applying them; --skip-rbac reads the
# token of an existing Secret without applying anything. Messages go to stderr; nothing secret is printed there.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
context="" cluster_id="" server="" namespace="istio-system" secret_name=""
pods=1 print_rbac=0 skip_rbac=0 kubectl_args=()

# The header comment above (every line up to the first that is not a comment); --help prints it on stdout, exit 0.
usage() { awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$0" >&"${2:-2}"; exit "${1:-2}"; }
die() { echo "create-remote-kubeconfig.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --context|--kubeconfig|--cluster-id|--server|--namespace|--secret-name)
      [ $# -ge 2 ] || { echo "create-remote-kubeconfig.sh: $1 needs a value" >&2; usage; } ;;
  esac
  case "$1" in
    --context) context="$2"; shift 2 ;;
    --kubeconfig) kubectl_args+=(--kubeconfig "$2"); shift 2 ;;
    --cluster-id) cluster_id="$2"; shift 2 ;;
    --server) server="$2"; shift 2 ;;
    --namespace) namespace="$2"; shift 2 ;;
    --secret-name) secret_name="$2"; shift 2 ;;
    --no-pods) pods=0; shift ;;
    --print-rbac) print_rbac=1; shift ;;
    --skip-rbac) skip_rbac=1; shift ;;
    -h|--help) usage 0 1 ;;
    *) echo "create-remote-kubeconfig.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$context" ] && kubectl_args+=(--context "$context")

# The remote manifests, in the chosen namespace, without the pods rule when --no-pods.
rbac() {
  local text
  text="$(sed "s/namespace: istio-system/namespace: ${namespace}/" "$here/remote-rbac.yaml")"
  if [ "$pods" = 0 ]; then
    text="$(printf '%s\n' "$text" | awk '/# --trusted-node-accounts/ {skip=4} skip > 0 {skip--; next} {print}')"
  fi
  printf '%s\n' "$text"
}

if [ "$print_rbac" = 1 ]; then rbac; exit 0; fi
[ -n "$cluster_id" ] || { echo "create-remote-kubeconfig.sh: --cluster-id is required (the clusterid the remote cluster's sidecars send)" >&2; usage; }
[ -n "$secret_name" ] || secret_name="svid-ca-remote-${cluster_id}"
case "$cluster_id" in
  .*|*/*|*[[:space:]]*) die "--cluster-id \"$cluster_id\" cannot be a file name (no leading dot, slash or space)" ;;
esac

k() { kubectl "${kubectl_args[@]}" "$@"; }

if [ "$skip_rbac" = 0 ]; then
  echo "applying svid-ca-remote-reader RBAC on the remote cluster" >&2
  rbac | k apply -f - >&2
fi

# One JSON field of the token Secret's data (base64), read with `kubectl get --raw` (no discovery, no jq).
field() { printf '%s' "$secret_json" | grep -o "\"$1\": *\"[^\"]*\"" | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/' || true; }
token="" ca=""
for _ in $(seq 1 30); do
  secret_json="$(k get --raw "/api/v1/namespaces/${namespace}/secrets/svid-ca-remote-reader-token" 2>/dev/null || true)"
  token="$(field token)"
  ca="$(field 'ca\.crt')"
  [ -n "$token" ] && [ -n "$ca" ] && break
  sleep 1
done
[ -n "$token" ] || die "no token in Secret ${namespace}/svid-ca-remote-reader-token after 30 s (is the token controller running?)"
[ -n "$ca" ] || die "no ca.crt in Secret ${namespace}/svid-ca-remote-reader-token"
if [ -z "$server" ]; then
  server="$(k config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
  [ -n "$server" ] || die "cannot tell the remote API server URL from the kubeconfig: pass --server"
fi
token_text="$(printf '%s' "$token" | base64 -d)"

cat <<YAML
# For svid-ca's --remote-kubeconfig-dir on the PRIMARY cluster: cluster ID ${cluster_id}, API server ${server}.
apiVersion: v1
kind: Secret
metadata:
  name: ${secret_name}
  namespace: ${namespace}
  labels:
    app.kubernetes.io/name: svid-ca
    app.kubernetes.io/component: remote-kubeconfigs
type: Opaque
stringData:
  ${cluster_id}.yaml: |
    apiVersion: v1
    kind: Config
    clusters:
      - name: ${cluster_id}
        cluster:
          server: ${server}
          certificate-authority-data: ${ca}
    users:
      - name: svid-ca-remote-reader
        user:
          token: ${token_text}
    contexts:
      - name: ${cluster_id}
        context:
          cluster: ${cluster_id}
          user: svid-ca-remote-reader
    current-context: ${cluster_id}
YAML
