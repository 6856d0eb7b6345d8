#!/usr/bin/env bash
# Starts the services the test suite needs when they are not running.
# The foundation (issue 2) needs none beyond Node.js; later layers add
# PostgreSQL and Redis here.
set -euo pipefail
exit 0
