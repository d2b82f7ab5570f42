#!/usr/bin/env bash
# Short fuzzing pass over every decoder (see fuzz/README.md): each target runs for
# FUZZ_SECS seconds (default 20) from its committed seed corpus; any crash, panic,
# broken round-trip property, timeout or OOM fails the script and leaves the input in
# fuzz/artifacts/<target>/.
#
# Works on stable Rust: the targets are built with `--sanitizer none` (libFuzzer's
# coverage instrumentation needs only stable -C flags; AddressSanitizer would need
# nightly or RUSTC_BOOTSTRAP=1, and these crates are safe Rust).
#
# Idempotent: installs cargo-fuzz if it is missing; new inputs found go to a temporary
# corpus that is removed, so the committed corpus is never modified.
#   FUZZ_SECS=60 scripts/fuzz-short.sh            # longer
#   FUZZ_TARGETS="s1ap nas" scripts/fuzz-short.sh # a subset
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECS=${FUZZ_SECS:-20}
CARGO=${CARGO:-cargo}

if ! "$CARGO" fuzz --version >/dev/null 2>&1; then
    echo "fuzz-short: installing cargo-fuzz from crates.io"
    if ! "$CARGO" install --locked cargo-fuzz; then
        echo "fuzz-short: ERROR: cargo-fuzz is not installed and could not be installed" >&2
        echo "fuzz-short: (no network to crates.io?). Install it with 'cargo install cargo-fuzz'." >&2
        exit 2
    fi
fi

TARGETS=${FUZZ_TARGETS:-$("$CARGO" fuzz list)}

nice "$CARGO" fuzz build --sanitizer none

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failed=()
for t in $TARGETS; do
    mkdir -p "$work/$t" "artifacts/$t"
    echo "fuzz-short: $t for ${SECS}s"
    # New inputs go to the first (scratch) directory; corpus/$t is only read.
    if ! nice "$CARGO" fuzz run --sanitizer none "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$work/$t.log" 2>&1; then
        failed+=("$t")
        tail -n 40 "$work/$t.log" >&2
        echo "fuzz-short: $t FAILED; reproducer in fuzz/artifacts/$t/" >&2
    else
        grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$work/$t.log" | tail -n 2 || true
    fi
done

if ((${#failed[@]})); then
    echo "fuzz-short: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz-short: all targets ran ${SECS}s without a crash"
