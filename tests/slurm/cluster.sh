#!/usr/bin/env bash
# A one-node SLURM cluster under a folder, without systemd, for the launch test.
#   cluster.sh start DIR   starts munged, slurmctld and slurmd; prints SLURM_CONF=... on success
#   cluster.sh stop DIR    stops them (by PID)
# Needs Debian's munge, slurmctld, slurmd and slurm-client (22.05), and root (SlurmUser=root).
set -euo pipefail
cmd=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)

stop() {
  for p in slurmd slurmctld munged; do
    if [ -f "$dir/$p.pid" ]; then
      kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
    fi
  done
  sleep 0.5
  for p in slurmd slurmctld munged; do
    if [ -f "$dir/$p.pid" ]; then
      kill -9 "$(cat "$dir/$p.pid")" 2>/dev/null || true
      rm -f "$dir/$p.pid"
    fi
  done
}

fail() {
  echo "cluster: $*" >&2
  for log in munged slurmctld slurmd; do
    [ -f "$dir/$log.log" ] && { echo "--- $log.log" >&2; tail -n 15 "$dir/$log.log" >&2; }
  done
  stop
  exit 1
}

if [ "$cmd" = stop ]; then
  stop
  exit 0
fi

for tool in mungekey munged slurmctld slurmd scontrol sinfo sbatch; do
  command -v "$tool" >/dev/null || { echo "cluster: $tool is not installed" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "cluster: needs root (SlurmUser=root)" >&2; exit 2; }

mkdir -p "$dir/key" "$dir/sock" "$dir/state" "$dir/spool"
chmod 700 "$dir/key"
chmod 755 "$dir/sock"
mungekey --create --keyfile="$dir/key/munge.key" --force >/dev/null 2>&1 || fail "mungekey failed"
munged --key-file="$dir/key/munge.key" --socket="$dir/sock/munge.socket" \
  --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/key/munge.seed" \
  --origin=127.0.0.1 --force || fail "munged did not start"

# Private ports from the folder's name, so that parallel clusters do not collide.
base=$(( 20000 + $(printf '%s' "$dir" | cksum | cut -d' ' -f1) % 20000 ))
node=$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]*/NodeName=ahtsgd-node/' -e 's/ UpTime=.*//')
cat >"$dir/slurm.conf" <<CONF
ClusterName=ahtsgdtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$base
SlurmdPort=$((base + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/sock/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MpiDefault=none
ReturnToService=2
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"

slurmctld -i -f "$SLURM_CONF" || fail "slurmctld did not start"
for _ in $(seq 100); do
  scontrol ping 2>/dev/null | grep -q UP && break
  sleep 0.1
done
scontrol ping 2>/dev/null | grep -q UP || fail "slurmctld does not answer"
slurmd -f "$SLURM_CONF" -N ahtsgd-node || fail "slurmd did not start"
for _ in $(seq 150); do
  sinfo -h -o %t 2>/dev/null | grep -q idle && break
  sleep 0.1
done
sinfo -h -o %t 2>/dev/null | grep -q idle || fail "the node did not become idle ($(sinfo -h -o %t 2>&1))"
echo "SLURM_CONF=$SLURM_CONF"
