#!/usr/bin/env bash
# Open a report.html in headless Chromium: the page's script must run without errors and show
# the summary counts; a screenshot is saved. The same check runs as a test in scripts/test.sh
# (crates/core/tests/report_html.rs, html_report_in_headless_chromium).
#
#   scripts/browser_check.sh [REPORT.json] [OUT_DIR]
#
# REPORT.json defaults to the realistic fixture (a run with two load scenarios); OUT_DIR to
# target/browser-check. Exits non-zero when Chromium is missing, the script did not run, the
# console shows an uncaught error or the screenshot is (nearly) blank.
set -euo pipefail
cd "$(dirname "$0")/.."
report=${1:-crates/core/tests/fixtures/report_with_load.json}
out=${2:-target/browser-check}
chrome=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -n "$chrome" ] || { echo "chromium not found: apt-get install chromium (scripts/test.sh does)" >&2; exit 1; }

mkdir -p "$out"
cp "$report" "$out/report.json"
cargo run --quiet -p citadel-itest -- report render "$out/report.json" --format html,md --out-dir "$out"
page="file://$(realpath "$out/report.html")"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-background-networking
       --disable-component-update --disable-sync --no-first-run --no-default-browser-check
       --enable-logging=stderr --v=0 "--user-data-dir=$profile")

timeout 90 "$chrome" "${flags[@]}" --virtual-time-budget=3000 --dump-dom "$page" >"$out/dom.html" 2>"$out/console.log"
if grep -q "Uncaught" "$out/console.log"; then echo "script error:" >&2; grep "Uncaught" "$out/console.log" >&2; exit 1; fi
grep -q 'data-ready="1"' "$out/dom.html" || { echo "the page's script did not run" >&2; exit 1; }
total=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["total"])' "$out/report.json")
grep -q "id=\"count-total\">$total</span>" "$out/dom.html" || { echo "summary count $total not shown" >&2; exit 1; }

timeout 90 "$chrome" "${flags[@]}" --hide-scrollbars --window-size=1280,2000 \
  "--screenshot=$(realpath "$out")/report.png" "$page" 2>>"$out/console.log"
size=$(stat -c %s "$out/report.png")
[ "$size" -gt 60000 ] || { echo "screenshot is only $size bytes" >&2; exit 1; }
echo "browser check passed: $out/report.html, screenshot $out/report.png ($size bytes)"
