#!/usr/bin/env bash
# start-local-slurm.sh - bring up a REAL single-node SLURM cluster on localhost (tests, CI).
#
# Adapted from the team's proven recipe start-slurm.sh (shared slurm/ notes, with its PITFALLS log:
# munged as the munge user, slurmdbd + MariaDB so submitit's sacct polls work, AuthInfo=cred_expire=5 and
# bf_interval=1 so a requeued job restarts within seconds, zombie-aware liveness, DefMemPerCPU).
# Changes here: services are kept from auto-starting during apt-get install (policy-rc.d) on machines
# that lack the Docker-style policy file, and the log prefix is this script's name.
#
# It touches only a cluster it started itself: a cluster is this script's when /etc/slurm/slurm.conf carries
# its header and this SLURM_CI_BASE's StateSaveLocation, and every SLURM daemon that runs is one whose PID it
# recorded under $SLURM_CI_BASE/pids. Anything else (a site's SLURM, a MariaDB of someone else's, a cluster
# started for another SLURM_CI_BASE) makes it stop before it changes anything. MariaDB listens on a socket
# in a folder only its user (and root) may enter, without networking, and the slurm database user gets a
# random password, kept in slurmdbd.conf (mode 600) only.
#
# Debian 12 packages (slurm 22.05 + munge 0.5.15 [+ slurmdbd + MariaDB for sacct]),
# no systemd needed, run as root. Idempotent: installs what is missing, (re)writes
# the config, starts only the daemons that are not already up, and waits until
# `sinfo` shows the node idle.
#
# Env knobs:
#   SLURM_CI_BASE=/tmp/slurm-ci   state, spool, logs and the PID files of what we start
#   SLURM_CI_ACCOUNTING=1         1: also run MariaDB + slurmdbd so `sacct` works
#                                 (submitit polls job state with sacct; without it
#                                 results still arrive but state is UNKNOWN and it
#                                 logs "Bypassing sacct error" warnings). 0: skip.
#   SLURM_CI_TIMEOUT=90           seconds to wait for each daemon / the idle node
#   SLURM_CI_CLEAN=0              1: wipe the slurmctld state (job ids restart at 1)
#
# Stop with stop-local-slurm.sh (kills only the PIDs recorded under $SLURM_CI_BASE/pids).
set -euo pipefail

BASE=${SLURM_CI_BASE:-/tmp/slurm-ci}
ACCOUNTING=${SLURM_CI_ACCOUNTING:-1}
TIMEOUT=${SLURM_CI_TIMEOUT:-90}
CLEAN=${SLURM_CI_CLEAN:-0}
CONF_DIR=/etc/slurm          # default location: sbatch/squeue/sacct find it without SLURM_CONF
PIDS=$BASE/pids
LOGS=$BASE/log
T_START=$(date +%s)

log()  { printf '[start-local-slurm %4ss] %s\n' "$(( $(date +%s) - T_START ))" "$*"; }
die()  { printf '[start-local-slurm] ERROR: %s\n' "$*" >&2; exit 1; }
show_log() { [ -f "$1" ] && { echo "---- last lines of $1 ----" >&2; tail -n 30 "$1" >&2; }; return 0; }
alive() {  # alive <pidfile> <comm>: process exists, is not a zombie, and has the expected name
  local pid; [ -f "$1" ] || return 1; pid=$(cat "$1")
  [ -r "/proc/$pid/stat" ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat")" != Z ]   # a kill -9'd daemon can linger as a zombie
}
pids_of() {  # pids_of <comm>: the live (not zombie) processes with that name
  local d
  for d in /proc/[0-9]*; do
    [ "$(cat "$d/comm" 2>/dev/null)" = "$1" ] && [ "$(awk '{print $3}' "$d/stat" 2>/dev/null)" != Z ] && echo "${d#/proc/}"
  done
  return 0
}
foreign() {  # foreign <name>: a running <name> whose PID this script did not record under $PIDS
  local pid; for pid in $(pids_of "$1"); do [ "$pid" = "$(cat "$PIDS/$1.pid" 2>/dev/null)" ] || return 0; done
  return 1
}
wait_for() {  # wait_for <what> <cmd...> : poll until cmd succeeds or TIMEOUT
  local what=$1; shift; local end=$(( $(date +%s) + TIMEOUT ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.25
  done
  log "$what ready"
}

[ "$(id -u)" = 0 ] || die "must run as root"

# ---------------------------------------------------------------- 1. install
need=()
command -v slurmctld >/dev/null || need+=(slurmctld)
command -v slurmd    >/dev/null || need+=(slurmd)
command -v sbatch    >/dev/null || need+=(slurm-client)
command -v munged    >/dev/null || need+=(munge)
if [ "$ACCOUNTING" = 1 ]; then
  command -v slurmdbd >/dev/null || need+=(slurmdbd)
  command -v mariadbd >/dev/null || need+=(mariadb-server)
fi
if [ ${#need[@]} -gt 0 ]; then
  log "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  policy=/usr/sbin/policy-rc.d; own_policy=0
  if [ ! -e "$policy" ]; then   # keep postinst from starting daemons with a config we have not written yet
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; own_policy=1
  fi
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${need[@]}" >"/tmp/start-local-slurm-apt.log" 2>&1 \
    || { [ "$own_policy" = 1 ] && rm -f "$policy"; show_log /tmp/start-local-slurm-apt.log; die "apt-get install ${need[*]} failed"; }
  [ "$own_policy" = 1 ] && rm -f "$policy"
  log "installed"
fi

# ---------------------------------------------------------------- 1b. only our own cluster
MARK="# written by start-local-slurm.sh"
if [ -f "$CONF_DIR/slurm.conf" ] && ! { head -n1 "$CONF_DIR/slurm.conf" | grep -qxF "$MARK" \
     && grep -qxF "StateSaveLocation=$BASE/state" "$CONF_DIR/slurm.conf"; }; then
  die "$CONF_DIR/slurm.conf was not written by this script for SLURM_CI_BASE=$BASE: refusing to overwrite it or to touch that cluster"
fi
for d in slurmctld slurmd slurmdbd; do
  foreign "$d" && die "a $d is running that this script did not start (no matching PID under $PIDS): refusing to touch that cluster"
done
if [ "$ACCOUNTING" = 1 ] && foreign mariadbd; then
  die "a MariaDB is running that this script did not start: refusing to add a database to it (SLURM_CI_ACCOUNTING=0 runs without)"
fi

mkdir -p "$PIDS" "$LOGS" "$BASE/state" "$BASE/spool" "$CONF_DIR"
[ "$CLEAN" = 1 ] && rm -rf "${BASE:?}/state/"*

# ---------------------------------------------------------------- 2. host facts
NODE=$(hostname -s)
[ -n "$NODE" ] || die "hostname -s is empty"
if ! getent hosts "$NODE" >/dev/null; then
  log "hostname $NODE does not resolve; adding it to /etc/hosts"
  echo "127.0.0.1 $NODE  # added by start-local-slurm.sh" >> /etc/hosts
fi
HW=$(slurmd -C | head -n1)                       # NodeName=.. CPUs=2 ... RealMemory=24105
CPUS=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$HW")
MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$HW")
[ -n "$CPUS" ] && [ -n "$MEM" ] || die "could not parse 'slurmd -C': $HW"
REALMEM=$(( MEM * 95 / 100 ))                    # must not exceed what slurmd sees, or node drains
DEFMEM=$(( REALMEM / CPUS / 4 )); [ "$DEFMEM" -gt 1024 ] && DEFMEM=1024

# ---------------------------------------------------------------- 3. config
ACCT_LINES="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
if [ "$ACCOUNTING" = 1 ]; then
  ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
fi
cat > "$CONF_DIR/slurm.conf.new" <<EOF
# written by start-local-slurm.sh
ClusterName=ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# requeued jobs wait cred_expire+1 s before they may start again (default 120; 5 works)
AuthInfo=cred_expire=5
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$PIDS/slurmctld.pid
SlurmdPidFile=$PIDS/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldPort=6817
SlurmdPort=6818
# no cgroups: linuxproc tracking, no task plugin
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
$ACCT_LINES
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEFMEM
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REALMEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
CONF_CHANGED=0
if cmp -s "$CONF_DIR/slurm.conf.new" "$CONF_DIR/slurm.conf"; then
  rm -f "$CONF_DIR/slurm.conf.new"
else
  mv "$CONF_DIR/slurm.conf.new" "$CONF_DIR/slurm.conf"; CONF_CHANGED=1
fi
DB_PASS=""   # a new random password, only when this run (re)starts slurmdbd
if [ "$ACCOUNTING" = 1 ] && ! alive "$PIDS/slurmdbd.pid" slurmdbd; then
  DB_PASS=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
  rm -f "$CONF_DIR/slurmdbd.conf"
  (umask 077; cat > "$CONF_DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$LOGS/slurmdbd.log
PidFile=$PIDS/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  )                                             # mode 600: slurmdbd refuses a world-readable file; the password
fi
log "config written: node=$NODE CPUs=$CPUS RealMemory=$REALMEM DefMemPerCPU=$DEFMEM accounting=$ACCOUNTING"

# ---------------------------------------------------------------- 4. munge
if [ ! -s /etc/munge/munge.key ]; then
  log "creating munge key"
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 700 /var/log/munge
install -d -o munge -g munge -m 711 /var/lib/munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "munged already running"   # ours, or the system's: used, and never stopped when not ours
else
  rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
  # munged must not run as root (it refuses without --force): run it as the munge user
  runuser -u munge -- /usr/sbin/munged || { show_log /var/log/munge/munged.log; die "munged failed to start"; }
  cp /run/munge/munged.pid "$PIDS/munged.pid"
  wait_for munged sh -c 'munge -n | unmunge' || { show_log /var/log/munge/munged.log; die "munge round-trip failed"; }
fi

# ---------------------------------------------------------------- 5. MariaDB + slurmdbd
if [ "$ACCOUNTING" = 1 ]; then
  if mariadb -e 'select 1' >/dev/null 2>&1; then
    log "MariaDB already running"
    chmod 700 /run/mysqld            # its socket is world-writable: only mysql (and root) may enter the folder
  else
    install -d -o mysql -g mysql -m 700 /run/mysqld
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$LOGS/mariadb-install.log" 2>&1
    setsid /usr/sbin/mariadbd --user=mysql --skip-networking --socket=/run/mysqld/mysqld.sock \
      --pid-file=/run/mysqld/mysqld.pid --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900 \
      </dev/null >"$LOGS/mariadb.log" 2>&1 &
    echo $! > "$PIDS/mariadbd.pid"
    wait_for MariaDB mariadb -e 'select 1' || { show_log "$LOGS/mariadb.log"; die "MariaDB did not start"; }
  fi
  if [ -n "$DB_PASS" ]; then
    mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
                CREATE USER IF NOT EXISTS 'slurm'@'localhost';
                ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
                GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;" \
      || die "could not create the slurm database/user in MariaDB"
  fi
  if alive "$PIDS/slurmdbd.pid" slurmdbd; then
    log "slurmdbd already running"
  else
    log "starting slurmdbd"; slurmdbd || { show_log "$LOGS/slurmdbd.log"; die "slurmdbd failed to start"; }   # daemonizes, writes pid file
    wait_for slurmdbd sacctmgr -n list cluster || { show_log "$LOGS/slurmdbd.log"; die "slurmdbd not answering on :6819"; }
  fi
  sacctmgr -n list cluster format=cluster | grep -qw ci || sacctmgr -i add cluster ci >/dev/null
fi

# ---------------------------------------------------------------- 6. slurmctld + slurmd
STARTED=0
if alive "$PIDS/slurmctld.pid" slurmctld; then
  if [ "$CONF_CHANGED" = 1 ]; then log "slurmctld already running; reconfiguring"; scontrol reconfigure || true
  else log "slurmctld already running; config unchanged"; fi
else
  STARTED=1; log "starting slurmctld"; slurmctld || { show_log "$LOGS/slurmctld.log"; die "slurmctld failed to start"; }    # daemonizes
  wait_for slurmctld scontrol ping || { show_log "$LOGS/slurmctld.log"; die "slurmctld not answering"; }
fi
if alive "$PIDS/slurmd.pid" slurmd; then
  log "slurmd already running"
else
  STARTED=1; log "starting slurmd"; slurmd -N "$NODE" || { show_log "$LOGS/slurmd.log"; die "slurmd failed to start"; }     # daemonizes
fi

node_idle() {
  local st; st=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1)
  case "$st" in
    idle|mixed|allocated) return 0 ;;
    down*|drain*|*drain) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true; return 1 ;;
    *) return 1 ;;
  esac
}
wait_for "node $NODE (sinfo idle)" node_idle || {
  sinfo -N -l >&2 || true; scontrol show node "$NODE" >&2 || true
  show_log "$LOGS/slurmctld.log"; show_log "$LOGS/slurmd.log"
  die "node $NODE did not become idle within ${TIMEOUT}s"
}
if [ "$STARTED" = 1 ]; then   # end-to-end check: a real step must run (catches a stale "idle" of a dead slurmd)
  timeout "$TIMEOUT" srun --immediate="$TIMEOUT" -N1 -n1 -t 1 -J start-slurm-check true \
    || { show_log "$LOGS/slurmctld.log"; show_log "$LOGS/slurmd.log"; die "test step 'srun true' failed"; }
  log "srun test step ok"
fi
sinfo
log "SLURM is up (logs: $LOGS, pids: $PIDS)"
