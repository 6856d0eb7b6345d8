#!/usr/bin/env bash
# Starts the services the test suite needs when they are not running:
# PostgreSQL on 127.0.0.1:5432 (trust auth, database "test") and Redis on
# 127.0.0.1:6379.  Installs them from Debian's packages if they are missing.
# Tests that kill or restart a service start their own instance instead.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
apt_updated=
apt_install() {
    if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# --- PostgreSQL -------------------------------------------------------------
if ! command -v pg_isready >/dev/null 2>&1; then
    apt_install postgresql postgresql-client
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    cluster_version=$(ls /etc/postgresql | sort -V | tail -1)
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$cluster_version" main start
    for _ in $(seq 1 50); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.2; done
fi
pg_isready -h 127.0.0.1 -p 5432 -q || { echo "PostgreSQL did not start" >&2; exit 1; }
if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "select 1 from pg_database where datname='test'" | grep -q 1; then
    createdb -h 127.0.0.1 -U postgres test
fi

# --- Redis ------------------------------------------------------------------
if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    $SUDO mkdir -p /var/lib/redis /var/log/redis
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { echo "Redis did not start" >&2; exit 1; }
