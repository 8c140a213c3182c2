#!/usr/bin/env bash
# A one-node Slurm on localhost, for the engine's Slurm tests (engine/tests/test_slurm.py).
#
#   scripts/slurm-local.sh [start]   install (apt-get, only if missing) and start munged, slurmctld, slurmd;
#                                    wait until `sinfo` shows this node usable. Idempotent.
#   scripts/slurm-local.sh stop      stop the daemons this script started (a foreign Slurm is left alone).
#   scripts/slurm-local.sh status    print the marker status and `sinfo`.
#
# It never fails the build: when Slurm cannot be installed or started it prints "SKIP: <reason>", writes
# "skip: <reason>" to the marker file ($MOELAB_SLURM_DIR/status) and exits 0, so `make test` goes on and
# the Slurm tests skip with that reason. On success the marker says "ready".
#
# It only writes /etc/slurm/slurm.conf when there is none or when the existing one is ours
# (ClusterName=moelab-test): a machine that already belongs to a real cluster is never reconfigured.
set -u -o pipefail

MODE="${1:-start}"
DIR="${MOELAB_SLURM_DIR:-/var/tmp/moelab-slurm}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
MARKER="$DIR/status"
CLUSTER=moelab-test
WAIT_S="${MOELAB_SLURM_WAIT_S:-90}"

log() { echo "slurm-local: $*"; }

skip() {
  mkdir -p "$DIR" 2>/dev/null && echo "skip: $*" >"$MARKER"
  echo "SKIP: $*"
  exit 0
}

ready() {
  echo "ready" >"$MARKER"
  log "ready ($(sinfo -h -o '%P %D %t' 2>/dev/null | head -n1))"
  exit 0
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"; else return 1; fi
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

node_name() { hostname -s; }

# The node's state as sinfo prints it (idle, mix, alloc, down*, drain, ...), empty when unreachable.
node_state() { sinfo -h -n "$(node_name)" -o '%t' 2>/dev/null | head -n1; }

conf_is_ours() { [ -f "$CONF" ] && grep -q "^ClusterName=$CLUSTER\$" "$CONF"; }

install_packages() {
  local missing=()
  command -v munged >/dev/null || missing+=(munge)
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || skip "Slurm is not installed and there is no apt-get to install ${missing[*]}"
  [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null || skip "installing ${missing[*]} needs root (or passwordless sudo)"
  log "installing ${missing[*]} (apt-get)"
  # No init system in containers: keep the packages' postinst from trying to start services.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod +x "$policy" && created_policy=1
  fi
  local ok=1
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null || ok=0
  if [ $ok -eq 1 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
      --no-install-recommends "${missing[@]}" >"$DIR/apt.log" 2>&1 || ok=0
  fi
  [ $created_policy -eq 1 ] && as_root rm -f "$policy"
  [ $ok -eq 1 ] || skip "apt-get could not install ${missing[*]} (see $DIR/apt.log)"
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  local key=/etc/munge/munge.key
  if [ ! -s "$key" ]; then
    as_root mkdir -p /etc/munge
    as_root dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
  fi
  as_root mkdir -p /run/munge /var/lib/munge /var/log/munge
  if id munge >/dev/null 2>&1; then
    as_root chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
    as_root chmod 0700 /etc/munge && as_root chmod 0400 "$key"
    as_root runuser -u munge -- /usr/sbin/munged >>"$DIR/munged.out" 2>&1 || true
  else
    as_root /usr/sbin/munged --force >>"$DIR/munged.out" 2>&1 || true
  fi
  local i
  for i in $(seq 1 20); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  skip "munged did not start (see $DIR/munged.out)"
}

write_conf() {
  local node mem cpus
  node="$(node_name)"
  cpus="$(nproc)"
  # Slurm drains a node whose RealMemory is above what slurmd measures: leave a margin.
  mem="$(free -m | awk '/^Mem:/ { m = int($2 * 0.9) - 256; if (m < 256) m = 256; print m }')"
  as_root mkdir -p "$CONF_DIR" "$DIR/state" "$DIR/spool"
  # The address is pinned to the loopback so a host name that resolves elsewhere (or not at all) still works.
  as_root tee "$CONF" >/dev/null <<EOF
# Written by scripts/slurm-local.sh for MoE Lab's tests: a one-node Slurm on localhost.
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# Finished jobs stay visible to squeue/scontrol for 10 minutes (there is no accounting database).
MinJobAge=600
KillWait=5
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Default=YES Nodes=ALL MaxTime=INFINITE State=UP
EOF
}

start_daemons() {
  if ! pid_alive "$DIR/slurmctld.pid"; then
    log "starting slurmctld"
    as_root /usr/sbin/slurmctld -f "$CONF" >>"$DIR/slurmctld.out" 2>&1 || skip "slurmctld did not start (see $DIR/slurmctld.log)"
  fi
  if ! pid_alive "$DIR/slurmd.pid"; then
    log "starting slurmd"
    as_root /usr/sbin/slurmd -f "$CONF" >>"$DIR/slurmd.out" 2>&1 || skip "slurmd did not start (see $DIR/slurmd.log)"
  fi
}

wait_ready() {
  local node state i resumed=0
  node="$(node_name)"
  for i in $(seq 1 "$WAIT_S"); do
    state="$(node_state)"
    case "$state" in
      idle | mix | alloc | comp) ready ;;
      down* | drain* | drng* | fail*)
        if [ $resumed -eq 0 ]; then
          as_root scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
          resumed=1
        fi
        ;;
    esac
    sleep 1
  done
  skip "node $node not usable after ${WAIT_S}s (state '${state:-unknown}'; see $DIR/slurmctld.log, $DIR/slurmd.log)"
}

stop_all() {
  if ! conf_is_ours; then
    log "no local test Slurm configured ($CONF is absent or not ours): nothing to stop"
    exit 0
  fi
  local f
  for f in slurmd slurmctld; do
    if pid_alive "$DIR/$f.pid"; then
      log "stopping $f"
      as_root kill "$(cat "$DIR/$f.pid")" 2>/dev/null || true
    fi
  done
  for f in $(seq 1 20); do
    pid_alive "$DIR/slurmd.pid" || pid_alive "$DIR/slurmctld.pid" || break
    sleep 0.5
  done
  # munged is shared with anything else on the machine that uses munge: stop it only when we started it.
  if [ -f "$DIR/munged.started" ] && [ -f /run/munge/munged.pid ]; then
    log "stopping munged"
    as_root kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    rm -f "$DIR/munged.started"
  fi
  echo "stopped" >"$MARKER"
  exit 0
}

mkdir -p "$DIR" 2>/dev/null || skip "cannot create $DIR"

case "$MODE" in
  start) ;;
  stop) stop_all ;;
  status)
    cat "$MARKER" 2>/dev/null || echo "unknown"
    sinfo 2>/dev/null || true
    exit 0
    ;;
  *)
    echo "usage: $0 [start|stop|status]" >&2
    exit 2
    ;;
esac

# Already up (ours or a real cluster the developer is on): nothing to do.
case "$(node_state)" in idle | mix | alloc | comp) ready ;; esac
if [ -f "$CONF" ] && ! conf_is_ours; then
  skip "$CONF belongs to another Slurm cluster and its node $(node_name) is not usable: not touching it"
fi

install_packages
had_munge=0
munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && had_munge=1
start_munge
[ $had_munge -eq 0 ] && touch "$DIR/munged.started"
write_conf
start_daemons
wait_ready
