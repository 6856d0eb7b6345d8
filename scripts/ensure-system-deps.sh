#!/usr/bin/env bash
# Installs the system packages the test suite needs (Node.js and npm for the
# official socket.io-client), only when they are missing.
set -euo pipefail
need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# Headless Chromium for the browser demo's tests (driven by playwright-core).
[ -x /usr/bin/chromium ] || need+=(chromium fonts-dejavu-core)
# nginx for the scale-out tests (a real load balancer in front of instances).
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
if ((${#need[@]})); then
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
