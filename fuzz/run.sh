#!/usr/bin/env bash
# Runs fuzz targets for a given time each and prints a table of what they did.
#   bash fuzz/run.sh all 600        # every target, 10 minutes each, one after another
#   bash fuzz/run.sh usage_counter 60
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
secs=${2:-60}
targets=(request_inspect usage_counter config_yaml creem_webhook)
[ "$what" = all ] || targets=("$what")
cargo +nightly fuzz build -O
mkdir -p fuzz/logs
rows=()
for t in "${targets[@]}"; do
    corpus="fuzz/corpus-run/$t"
    mkdir -p "$corpus"
    # The committed seeds start each run; what the fuzzer finds grows a copy.
    cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    log="fuzz/logs/$t.log"
    status=ok
    nice -n 10 cargo +nightly fuzz run -O "$t" "$corpus" -- \
        -max_total_time="$secs" -jobs=1 -print_final_stats=1 >"$log" 2>&1 || status=CRASH
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
    crashes=$(ls fuzz/artifacts/"$t"/ 2>/dev/null | grep -c '^crash-' || true)
    rows+=("| $t | $secs | ${execs:-?} | ${cov:-?} | ${ft:-?} | ${crashes:-0} | $status |")
done
echo "| target | seconds | executions | cov | ft | crash files | result |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | --- |"
printf '%s\n' "${rows[@]}"
