#!/usr/bin/env bash
# Installs the Debian packages named on the command line when missing (as root), or says how to.
set -euo pipefail
declare -A binary_of=([bubblewrap]=bwrap [chromium]=chromium [docker-compose]=docker-compose)
missing=()
for package in "$@"; do
  command -v "${binary_of[$package]:-$package}" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  echo "Installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "Missing Debian packages: ${missing[*]}. Install them with:" >&2
  echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
