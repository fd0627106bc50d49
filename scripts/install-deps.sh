#!/usr/bin/env bash
# Install the Debian packages Elpis needs to build and test. Idempotent: it asks
# dpkg first and runs apt-get only when something is missing, so `make run` and
# `make test` can call it every time at no cost.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config
  clang libclang-rt-14-dev          # libFuzzer + sanitizer runtimes
  libmicrohttpd-dev libjansson-dev libsqlite3-dev libpcre2-dev
  libcurl4-openssl-dev libncursesw5-dev libcmocka-dev
  curl nodejs npm tmux              # tmux drives the terminal-UI test
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node/npm may come from outside Debian (e.g. nodesource); accept any working node >= 18.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  tmp=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
