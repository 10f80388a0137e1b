#!/bin/sh
# In-run A/B of a data-path idea (see README.md here). Usage, from a worktree with the harness applied and built:
#   sh bench/tools/in-run-ab/run.sh KEY A B [SECONDS] [SIZE] [TOGGLE_MS]
# e.g. sh bench/tools/in-run-ab/run.sh touchRx 1 0 20 64 200
# Prints the p2p result, the CPU link probe and, every 2 s, the PMD's rate in each mode (/tmp/abtoggle.log).
KEY=$1; A=$2; B=$3; S=${4:-20}; SIZE=${5:-64}; T=${6:-200}
BUILD=$(mktemp -d /tmp/in-run-ab.XXXXXX)
cp -r dist package.json "$BUILD"/ && ln -s "$(pwd)/node_modules" "$BUILD"/node_modules
rm -f /tmp/abtoggle.log
echo "start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
TSVS_AB_KEY=$KEY TSVS_AB_A=$A TSVS_AB_B=$B TSVS_AB_TOGGLE_MS=$T TSVS_BENCH_CLI=$BUILD/dist/src/cli/main.js \
  node dist/bench/run.js --scenario p2p --subject tsvs --sizes "$SIZE" --variants oneway --reps 1 --seconds "$S" --warmup 0.5 --out "$BUILD/out" > "$BUILD/run.log" 2>&1
grep -E "^\| [0-9]+B oneway \| port1->2 \(Mpps\)" "$BUILD/out/latest.md"
grep -oE "round trip [0-9]+ ns before, [0-9]+ ns after" "$BUILD/out/latest.md"
cat /tmp/abtoggle.log
rm -rf "$BUILD"
