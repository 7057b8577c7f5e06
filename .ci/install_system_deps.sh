#!/usr/bin/env bash
# Debian packages the test suite needs: Chromium (browser tests) and a Java runtime (pycocoevalcap's official
# PTB tokenizer and METEOR). Installed only when missing; `make test` runs this under CI=true.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
if [ ${#need[@]} -eq 0 ]; then
  echo "system deps: chromium and java already installed"
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "system deps: missing ${need[*]} and not root; install them with apt-get" >&2
  exit 1
fi
echo "system deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
