#!/usr/bin/env bash
# THE test command: installs the Debian packages the tests need when missing (as root), then runs
# every test of the workspace (cargo nextest, else cargo test) and the doctests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_packages

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --all-features --no-fail-fast --profile ci
else
  echo "cargo-nextest not found; falling back to cargo test" >&2
  cargo test --workspace --all-targets --all-features --no-fail-fast
fi
# Every example binary once against the local stack. Its fixed ports are the local_stack test's:
# after the test run, never beside it.
scripts/examples.sh
cargo test --workspace --all-features --doc

# A consumer embedding one tester compiles only that tester: every feature set on its own builds.
for features in "" basic database database-local-scratch external-api cross-service load monitoring dotenv harness; do
  cargo check --quiet -p citadel-itest --lib --no-default-features ${features:+--features "$features"}
done
# The binary needs only the `cli` feature (no tester compiled in).
cargo check --quiet -p citadel-itest --bins --no-default-features --features cli
for features in postgres qdrant prometheus; do
  cargo check --quiet -p citadel-itest-external-api --lib --no-default-features --features "$features"
done
for features in models qdrant; do
  cargo check --quiet -p citadel-itest-testkit --lib --no-default-features --features "$features"
done
cargo check --quiet -p citadel-itest-database --lib --features local-scratch
cargo check --quiet -p citadel-itest-load --lib --no-default-features   # no progress bar (indicatif)
echo "feature sets: each compiles on its own"
