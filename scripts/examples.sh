#!/usr/bin/env bash
# Runs every example binary of the `examples` crate once against the local stack: brings the
# stack up (scripts/services.sh up), runs each example with a time bound, brings the stack down
# on exit (also on failure or Ctrl-C). Exits non-zero when any example failed.
# The stack uses fixed loopback ports, like the local_stack test: never run both at once.
# Usage: scripts/examples.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo build --quiet -p citadel-itest-examples --examples

trap 'scripts/services.sh down >/dev/null 2>&1 || echo "examples: stopping the local stack failed" >&2' EXIT
eval "$(scripts/services.sh up)"

failed=()
run() { # name seconds [args...]
  local name=$1 secs=$2; shift 2
  local start=$SECONDS rc=0
  echo "=== example $name $*"
  timeout --kill-after=5s "${secs}s" "target/debug/examples/$name" "$@" || rc=$?
  echo "=== example $name: exit code $rc after $((SECONDS - start))s"
  if [ "$rc" -ne 0 ]; then failed+=("$name (exit code $rc)"); fi
}

run check_database_schema 30
run gateway_routing 30
run llm_load 30
run alerts_fire 60
run fault_drill 30
run custom_tooling 30
# The configured suite last, without the load scenario and the alert drill (their own examples
# above); `services.sh up` has waited for Prometheus's first scrape of every target.
run run_integration_tests 120 --skip 'load.*' --skip 'monitoring.drills.*' --report-dir target/examples/reports

if [ ${#failed[@]} -gt 0 ]; then
  echo "examples failed: ${failed[*]}" >&2
  exit 1
fi
echo "examples: all ${SECONDS}s, every example passed"
