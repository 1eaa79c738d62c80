#!/usr/bin/env bash
# Vendor the browser player library from the npm registry into
# realtime/static/vendor/ (gitignored). Idempotent: does nothing when the pinned
# version is already there. Needs `npm` (Debian package `npm`).
set -euo pipefail

HLSJS_VERSION="${HLSJS_VERSION:-1.6.13}"

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/realtime/static/vendor"
stamp="$dest/hls.min.js.version"

if [[ -f "$dest/hls.min.js" && -f "$stamp" && "$(cat "$stamp")" == "$HLSJS_VERSION" ]]; then
    exit 0
fi

command -v npm >/dev/null || { echo "vendor-js: npm is required (apt-get install -y npm)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(
    cd "$tmp"
    npm pack --silent "hls.js@${HLSJS_VERSION}" >/dev/null 2>npm.log || { cat npm.log >&2; exit 1; }
    tar -xzf "hls.js-${HLSJS_VERSION}.tgz" package/dist/hls.min.js package/LICENSE
)
mkdir -p "$dest"
install -m 0644 "$tmp/package/dist/hls.min.js" "$dest/hls.min.js.tmp"
install -m 0644 "$tmp/package/LICENSE" "$dest/hls.js.LICENSE"
mv -f "$dest/hls.min.js.tmp" "$dest/hls.min.js"
printf '%s\n' "$HLSJS_VERSION" > "$stamp"
echo "vendor-js: hls.js ${HLSJS_VERSION} -> ${dest#"$root"/}/hls.min.js"
