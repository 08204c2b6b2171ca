#!/usr/bin/env bash
# Crash loop for the usage ledger: runs tests/usage_ledger.rs's SIGKILL test
# RUNS times (each run kills the gateway three times under 16 clients and
# checks that every answered request has its record), and prints a table.
#   bash benches/crash-loop.sh [RUNS]      (default 20; BLUESMINDS_TEST_POSTGRES for PostgreSQL)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
cargo test --quiet --test usage_ledger --no-run >/dev/null 2>&1
printf '| run | result | answered | records |\n| ---: | --- | ---: | ---: |\n'
failed=0
for i in $(seq 1 "$runs"); do
    out=$(cargo test --quiet --test usage_ledger \
        a_sigkill_under_load_loses_no_answered_request -- --nocapture 2>&1) && ok=pass || { ok=FAIL; failed=$((failed + 1)); }
    figures=$(grep -o 'crash loop: [0-9]* answered, [0-9]* records' <<<"$out" | tail -1 || true)
    answered=$(awk '{print $3}' <<<"$figures")
    records=$(awk '{print $5}' <<<"$figures")
    printf '| %d | %s | %s | %s |\n' "$i" "$ok" "${answered:--}" "${records:--}"
done
echo
echo "$failed of $runs runs lost a record"
[ "$failed" -eq 0 ]
