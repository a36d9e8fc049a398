#!/usr/bin/env bash
# The main job: start the local stack on loopback, run the full suite against it, say where
# the reports are. Exit code is the suite's (0 all passed, 1 failures, 2 config, 130 interrupted).
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(scripts/services.sh up)"
cargo build --quiet -p citadel-itest --bin citadel-itest
rc=0
target/debug/citadel-itest run --config config/local.yaml --report-dir target/itest-reports "$@" || rc=$?
echo
echo "reports: target/itest-reports/{report.json,junit.xml,report.html,summary.md}"
echo "stop the stack with: scripts/services.sh down"
exit $rc
