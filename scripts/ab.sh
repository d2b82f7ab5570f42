#!/usr/bin/env bash
# Interleaved A/B of two corehop binaries (e.g. before and after a change to the frozen
# window): the test service as a container (stop-and-copy, pre-copy) and as a VM
# (vm-pre-copy), N migrations per method per turn, ROUNDS turns of A then B, each turn in a
# lab of its own made by that binary. Prints downtime p50 per method and side, each
# container method's ratio to the VM baseline of the same side, and the window's parts.
#   scripts/ab.sh A_BIN B_BIN OUT   (writes OUT.jsonl and OUT.md; run as root, no other lab)
set -u
A=$1; B=$2; OUT=$3
N=${N:-8}; ROUNDS=${ROUNDS:-3}
SVC_IP=10.77.1.100
: > "$OUT.jsonl"

# Moves $1 back and forth N times with method $2, appending each report.
moves() {
  local bin=$1 side=$2 r=$3 name=$4 method=$5 at=node-a to j
  for i in $(seq "$N"); do
    to=$([ $at = node-a ] && echo node-b || echo node-a)
    if j=$($bin migrate "$name" --to $to --method "$method" --json 2>/tmp/ab-err); then
      at=$to
      echo "{\"side\":\"$side\",\"round\":$r,\"method\":\"$method\",\"report\":$j}" >> "$OUT.jsonl"
    else
      echo "{\"side\":\"$side\",\"round\":$r,\"method\":\"$method\",\"error\":$(python3 -c 'import json,sys;print(json.dumps(sys.stdin.read()))' </tmp/ab-err)}" >> "$OUT.jsonl"
    fi
  done
  # Back home, so the next method starts from node-a.
  [ $at = node-a ] || $bin migrate "$name" --to node-a --method "$method" >/dev/null 2>&1
}

for r in $(seq "$ROUNDS"); do
  for side in A B; do
    bin=${!side}
    $bin lab down >/dev/null 2>&1
    $bin lab up >/dev/null 2>&1 || { echo "lab up failed ($side)"; exit 1; }
    $bin run svc --host node-a --ip $SVC_IP -- "$bin" testsvc >/dev/null || exit 1
    sleep 0.5
    moves "$bin" $side "$r" svc stop-and-copy
    moves "$bin" $side "$r" svc pre-copy
    $bin rm svc >/dev/null 2>&1 || $bin lab down >/dev/null 2>&1
    $bin run vsvc --host node-a --ip $SVC_IP --runtime vm -- "$bin" testsvc >/dev/null || exit 1
    sleep 15
    moves "$bin" $side "$r" vsvc vm-pre-copy
    $bin lab down >/dev/null 2>&1
    echo "round $r $side done"
  done
done

python3 - "$OUT" "$A" "$B" "$N" "$ROUNDS" <<'PY'
import json, sys, statistics as st
out, a, b, n, rounds = sys.argv[1:]
rows = [json.loads(l) for l in open(out + ".jsonl")]
methods = ["stop-and-copy", "pre-copy", "vm-pre-copy"]
p50 = lambda v: st.median(v) if v else float("nan")
def reports(side, m):
    return [r["report"] for r in rows if r["side"] == side and r["method"] == m and "report" in r]
lines = [f"# A/B: {a} (A) against {b} (B)", "",
         f"The test service, {n} migrations per method per turn, {rounds} turns of A then B, each turn in a lab of its own; p50 over all turns; ratio: p50 downtime against VM PreCopy of the same side.", "",
         "| method | side | runs (failed) | downtime p50 ms | / VM | frozen-window parts p50 ms |", "|---|---|---|---|---|---|"]
for m in methods:
    for side in "AB":
        rs = reports(side, m)
        failed = sum(1 for r in rows if r["side"] == side and r["method"] == m and "error" in r)
        dt = [r["downtime_ms"] for r in rs]
        vm = p50([r["downtime_ms"] for r in reports(side, "vm-pre-copy")])
        parts = {}
        for r in rs:
            for k, v in ((r.get("window") or {}).get("parts") or {}).items():
                parts.setdefault(k, []).append(v)
        ps = ", ".join(f"{k.removesuffix('_ms')} {p50(v):.1f}" for k, v in parts.items())
        ratio = "-" if m == "vm-pre-copy" else f"{p50(dt) / vm:.2f}"
        lines.append(f"| {m} | {side} | {len(rs)} ({failed}) | {p50(dt):.1f} | {ratio} | {ps} |")
open(out + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
