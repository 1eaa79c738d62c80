#!/usr/bin/env bash
# Vendor browser libraries from the npm registry into realtime/static/vendor/
# (gitignored). Idempotent: a package whose pinned version is already there is
# skipped. Needs `npm` (Debian package `npm`).
#
#   hls.js       the /watch page's player
#   shaka-player the players of the compatibility tests (tests/e2e/test_web_players.py)
#   video.js     (its VHS engine), ditto
#   uplot        the dashboard's charts
set -euo pipefail

HLSJS_VERSION="${HLSJS_VERSION:-1.6.13}"
SHAKA_VERSION="${SHAKA_VERSION:-5.2.12}"
VIDEOJS_VERSION="${VIDEOJS_VERSION:-8.24.1}"
UPLOT_VERSION="${UPLOT_VERSION:-1.6.32}"

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/realtime/static/vendor"
mkdir -p "$dest"

# vendor NAME VERSION STAMP LICENSE-AS "package/path:installed-name" ...
vendor() {
    local name="$1" version="$2" stamp="$dest/$3.version" license="$4"
    shift 4
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
        local missing=0 pair
        for pair in "$@"; do [[ -f "$dest/${pair#*:}" ]] || missing=1; done
        [[ "$missing" == 0 ]] && return 0
    fi
    command -v npm >/dev/null || { echo "vendor-js: npm is required (apt-get install -y npm)" >&2; exit 1; }
    local tmp
    tmp="$(mktemp -d)"
    (
        cd "$tmp"
        npm pack --silent "${name}@${version}" >/dev/null 2>npm.log || { cat npm.log >&2; exit 1; }
        tar -xzf ./*.tgz
    )
    local pair
    for pair in "$@"; do
        install -m 0644 "$tmp/${pair%%:*}" "$dest/${pair#*:}.tmp"
        mv -f "$dest/${pair#*:}.tmp" "$dest/${pair#*:}"
    done
    install -m 0644 "$tmp/package/LICENSE" "$dest/$license"
    rm -rf "$tmp"
    printf '%s\n' "$version" > "$stamp"
    echo "vendor-js: ${name} ${version} -> ${dest#"$root"/}/"
}

vendor hls.js "$HLSJS_VERSION" hls.min.js hls.js.LICENSE \
    "package/dist/hls.min.js:hls.min.js"
vendor shaka-player "$SHAKA_VERSION" shaka-player shaka-player.LICENSE \
    "package/dist/shaka-player.compiled.js:shaka-player.compiled.js"
vendor video.js "$VIDEOJS_VERSION" video.js video.js.LICENSE \
    "package/dist/video.min.js:video.min.js" \
    "package/dist/video-js.min.css:video-js.min.css"
vendor uplot "$UPLOT_VERSION" uplot uPlot.LICENSE \
    "package/dist/uPlot.iife.min.js:uPlot.iife.min.js" \
    "package/dist/uPlot.min.css:uPlot.min.css"
