#!/usr/bin/env bash
# stop-local-slurm.sh - stop the daemons that start-local-slurm.sh started, and only those
# (adapted from the team's proven recipe stop-slurm.sh):
# it kills the PIDs recorded in $SLURM_CI_BASE/pids/*.pid (after checking the
# process name), never by name pattern. Daemons that were already running before
# start-local-slurm.sh (no PID file written by it) are left alone.
#
# Jobs: it first cancels this checkout's test jobs (cancel-test-jobs.sh), never other users' or other
# checkouts' jobs.
set -uo pipefail
BASE=${SLURM_CI_BASE:-/tmp/slurm-ci}
PIDS=$BASE/pids
log() { echo "[stop-local-slurm] $*"; }

bash "$(dirname "$0")/cancel-test-jobs.sh"   # so no slurmstepd/job processes of ours outlive slurmd

running() {  # running <pid>: exists and is not a zombie (a dead daemon may linger as Z until reaped)
  [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}
stop_one() {  # stop_one <name> <expected comm>
  local f=$PIDS/$1.pid pid comm
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if ! running "$pid"; then rm -f "$f"; return 0; fi
  comm=$(cat "/proc/$pid/comm" 2>/dev/null || echo '?')
  if [ "$comm" != "$2" ]; then
    log "pid $pid in $f is '$comm', not $2: leaving it alone"; rm -f "$f"; return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 60); do running "$pid" || break; sleep 0.25; done
  if running "$pid"; then log "$1 ($pid) ignored SIGTERM; sending SIGKILL"; kill -KILL "$pid"; fi
  rm -f "$f"
  log "stopped $1 ($pid)"
}
stop_one slurmd    slurmd
stop_one slurmctld slurmctld
stop_one slurmdbd  slurmdbd
stop_one mariadbd  mariadbd
stop_one munged    munged
exit 0
