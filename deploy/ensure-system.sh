#!/usr/bin/env bash
# Install the Debian packages listed in deploy/system-packages.txt for the
# given sections (run, test, bench...) when they are missing.
#
#   deploy/ensure-system.sh run test
#
# Quiet when everything is present. `apt-get update` runs at most once. Works as
# root or through sudo. Packages the distribution does not have are reported
# and skipped. On systems without dpkg/apt it only warns.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
list="${ONAIR_SYSTEM_PACKAGES:-$here/system-packages.txt}"
[ "$#" -gt 0 ] || set -- run

if [ ! -r "$list" ]; then
    echo "ensure-system: $list not found" >&2
    exit 1
fi

wanted=()
for section in "$@"; do
    in=0
    while IFS= read -r line || [ -n "$line" ]; do
        line="${line%%#*}"
        line="$(echo "$line" | tr -d '[:space:]')"
        [ -n "$line" ] || continue
        if [[ "$line" =~ ^\[(.*)\]$ ]]; then
            [ "${BASH_REMATCH[1]}" = "$section" ] && in=1 || in=0
            continue
        fi
        [ "$in" = 1 ] && wanted+=("$line")
    done < "$list"
done
[ "${#wanted[@]}" -gt 0 ] || exit 0

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-system: not a Debian-like system; make sure these are installed: ${wanted[*]}" >&2
    exit 0
fi

missing=()
for pkg in "${wanted[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        # de-duplicate
        case " ${missing[*]-} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
    fi
done
[ "${#missing[@]}" -gt 0 ] || exit 0

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "ensure-system: missing packages ${missing[*]}; run as root or install sudo" >&2
    exit 1
fi

echo "ensure-system: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq >&2

available=()
for pkg in "${missing[@]}"; do
    if apt-cache show "$pkg" >/dev/null 2>&1; then
        available+=("$pkg")
    else
        echo "ensure-system: package $pkg is not available here; skipping" >&2
    fi
done
[ "${#available[@]}" -gt 0 ] || exit 0
# Packages with services (nginx, redis-server) must not start them: the tests
# and benchmarks run their own on free ports. Debian's invoke-rc.d asks
# policy-rc.d; without one on the machine, a temporary one says no.
guard=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$guard" >/dev/null
    "${as_root[@]}" chmod +x "$guard"
fi
status=0
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${available[@]}" >&2 || status=$?
[ -z "$guard" ] || "${as_root[@]}" rm -f "$guard"
exit "$status"
