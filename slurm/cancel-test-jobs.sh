#!/usr/bin/env bash
# cancel-test-jobs.sh - cancel this checkout's test jobs, and only those: this user's jobs whose comment is
# resnet-ablate-tests:<this checkout> (tests/test_slurm.py submits its jobs with it). Never other users' or
# other checkouts' jobs; it stops no daemon. stop-local-slurm.sh runs it first; the tests' teardown runs it
# alone when the cluster was up before them.
set -uo pipefail
CHECKOUT=$(cd "$(dirname "$0")/.." && pwd -P)
COMMENT="resnet-ablate-tests:$CHECKOUT"
log() { echo "[cancel-test-jobs] $*"; }
ours() { squeue -h -u "$(id -un)" -o '%A|%k' 2>/dev/null | awk -F'|' -v c="$COMMENT" '$2 == c {print $1}' | sort -u; }

command -v squeue >/dev/null && squeue -h -o %A >/dev/null 2>&1 || exit 0   # no cluster to ask
jobs=$(ours)
[ -n "$jobs" ] || exit 0
log "cancelling this checkout's test jobs: $(echo $jobs)"
scancel $jobs 2>/dev/null || true
for _ in $(seq 1 40); do [ -z "$(ours)" ] && break; sleep 0.25; done
exit 0
