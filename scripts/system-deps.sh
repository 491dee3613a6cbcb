#!/usr/bin/env bash
# Install the Debian packages the real SDR drivers need and make a Python
# interpreter see SoapySDR's bindings.
#
#   scripts/system-deps.sh [--browser] [PYTHON]
#
# 1. If any of libiio0, libiio-utils, python3-soapysdr, soapysdr-module-all
#    (and with --browser, for the test suite: chromium, which opens the HTML
#    reports headless) is missing: as root with apt-get, `apt-get update` once
#    and install them; otherwise print the command to run and carry on (exit 0).
# 2. With PYTHON (e.g. .venv/bin/python): symlink SoapySDR.py and
#    _SoapySDR.cpython-311-*.so from Debian's dist-packages into PYTHON's
#    site-packages (sysconfig purelib).  Only those two files: adding all of
#    dist-packages would shadow the venv's numpy.  Only for CPython 3.11, the
#    ABI Debian 12 built the extension for.
#
# Idempotent, silent when everything is in place, safe to run concurrently
# (apt work and link creation are serialised by a lock; links are replaced
# atomically).  Exits non-zero only when an install or a link was attempted
# and failed.
set -euo pipefail

PACKAGES=(libiio0 libiio-utils python3-soapysdr soapysdr-module-all)
if [[ ${1:-} == --browser ]]; then
    PACKAGES+=(chromium)
    shift
fi
DIST=/usr/lib/python3/dist-packages
PY=${1:-}

say() { printf 'system-deps: %s\n' "$*" >&2; }

# One lock for the whole script: apt/dpkg refuse to run twice at once, and two
# runs linking the same venv should not race.  Best effort: no lock, no wait.
take_lock() { { exec 9>>"$1"; } 2>/dev/null; }
if command -v flock >/dev/null 2>&1 \
    && { take_lock /var/lock/rf-harness-system-deps.lock \
         || take_lock "${TMPDIR:-/tmp}/rf-harness-system-deps.$(id -u).lock"; }; then
    flock -w 900 9 || { say "could not take the lock within 15 min"; exit 1; }
fi

missing_packages() {
    local p status
    for p in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [[ $status == installed ]] || printf '%s\n' "$p"
    done
}

# ----- 1. Debian packages ---------------------------------------------------
if command -v dpkg-query >/dev/null 2>&1; then
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]})); then
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            say "installing ${missing[*]}"
            log=$(mktemp)
            export DEBIAN_FRONTEND=noninteractive
            if ! apt-get update -qq >"$log" 2>&1 \
                || ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
                cat "$log" >&2
                rm -f "$log"
                say "apt-get failed; packages still missing: $(missing_packages | tr '\n' ' ')"
                exit 1
            fi
            rm -f "$log"
        else
            say "missing Debian packages: ${missing[*]}"
            say "install them with: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
        fi
    fi
else
    say "not a Debian system (no dpkg-query): install libiio 0.24 and SoapySDR 0.8 with its Python bindings yourself"
fi

# ----- 2. SoapySDR bindings into PYTHON -------------------------------------
[[ -n $PY ]] || exit 0
if ! command -v "$PY" >/dev/null 2>&1; then
    say "no Python interpreter at $PY"
    exit 1
fi

abi=$("$PY" -c 'import sys; print(sys.implementation.name, "%d.%d" % sys.version_info[:2])')
if [[ $abi != "cpython 3.11" ]]; then
    say "$PY is $abi; Debian's SoapySDR bindings are built for cpython 3.11, not linking them"
    exit 0
fi

# Already importable (Debian's own python3, or linked by an earlier run): done.
if "$PY" -c 'import SoapySDR' >/dev/null 2>&1; then
    exit 0
fi

shopt -s nullglob
sources=("$DIST"/SoapySDR.py "$DIST"/_SoapySDR.cpython-311-*.so)
shopt -u nullglob
if [[ ${#sources[@]} -lt 2 || ! -e ${sources[0]} ]]; then
    say "SoapySDR bindings not found in $DIST (package python3-soapysdr); $PY cannot import SoapySDR"
    exit 0
fi

purelib=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
mkdir -p "$purelib"
for src in "${sources[@]}"; do
    dest=$purelib/${src##*/}
    if [[ -L $dest && $(readlink "$dest") == "$src" ]]; then
        continue
    fi
    if [[ -e $dest && ! -L $dest ]]; then
        say "$dest exists and is not a link; leaving it alone"
        continue
    fi
    # Atomic replace: a concurrent importer sees either no file or the link.
    tmp=$dest.tmp.$$
    ln -s "$src" "$tmp"
    mv -Tf "$tmp" "$dest"
done

if ! err=$("$PY" -c 'import SoapySDR' 2>&1); then
    say "linked SoapySDR into $purelib but the import fails:"
    printf '%s\n' "$err" >&2
    exit 1
fi
