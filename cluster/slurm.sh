#!/usr/bin/env bash
# A real single-node SLURM on this machine, for development and CI: `make slurm-up` / `make slurm-down`.
#
#   cluster/slurm.sh up      install (apt-get) what is missing, write the configs, start munged, MariaDB,
#                            slurmdbd, slurmctld and slurmd, and wait until the node is idle (idempotent)
#   cluster/slurm.sh down    stop those daemons again (the configs, job records and state stay)
#   cluster/slurm.sh status  say whether a controller answers and how the node is
#
# Needs root: munged, slurmd (it starts jobs as their users) and the accounting database are system daemons.
# Two partitions share every core of this machine: `low` (the default) is pre-empted by `high` with
# PreemptMode=REQUEUE: a low job gets SIGTERM, GRACE_S seconds to write its checkpoint, and goes back in the
# queue. Accounting is slurmdbd on a local MariaDB: the submitit launcher asks `sacct` for job states (the
# only way it learns that a job died without a result), and sacct reads nothing but slurmdbd.
# Configs go where Debian's slurm looks (/etc/slurm); one this script did not write is never replaced.
set -euo pipefail

CLUSTER=agelatent
GRACE_S=${GRACE_S:-60}                       # seconds a pre-empted job has between SIGTERM and SIGKILL
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
MARK="# written by agelatent cluster/slurm.sh"
RUN=/run/agelatent-slurm                     # pid files
LOG=/var/log/slurm
STATE=/var/lib/slurm
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
HOST=$(hostname -s)

say() { echo "slurm: $*"; }
die() { echo "slurm: $*" >&2; exit 1; }

# poll `cmd` until it succeeds, at most $1 seconds
wait_for() {
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what did not come up within the deadline; see $LOG/"
    sleep 0.5
  done
}

running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_state() { sinfo -h -n "$HOST" -o %T 2>/dev/null | head -1; }

node_ready() { [[ $(node_state) =~ ^(idle|mixed|allocated)$ ]]; }

need_root() {
  [[ $(id -u) == 0 ]] || die "needs root (munged, slurmd and the accounting database are system daemons): sudo $0 $*"
}

install() {
  local missing=0
  for cmd in slurmctld slurmd slurmdbd sacct munged mariadbd; do
    command -v "$cmd" >/dev/null || missing=1
  done
  ((missing)) || return 0
  say "installing ${PACKAGES[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${PACKAGES[@]}" >/dev/null ||
    { apt-get update -q >/dev/null && apt-get install -y -q "${PACKAGES[@]}" >/dev/null; }
}

slurm_conf() {
  # the node as slurmd sees it: real core count and memory (its first line; the second is its uptime)
  local node
  node=$(slurmd -C | head -1)
  cat <<EOF
$MARK -- rewritten by every \`up\`
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
# a requeued job may start again this many seconds after its requeue (SLURM's default: 120)
AuthInfo=cred_expire=10
# no cgroups here (containers, CI): processes are tracked through /proc and tasks are not confined
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
# cores are what jobs consume, so jobs of one core each run side by side
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# look at pending jobs every few seconds (SLURM's default: every 60 s, backfill every 30 s), so that a
# requeued job starts as soon as it may
SchedulerParameters=sched_interval=2,bf_interval=2
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
# a node that restarts comes back into service by itself
ReturnToService=2
# job records in slurmdbd, which sacct reads
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
# the high partition pre-empts the low one; a pre-empted job is requeued (not cancelled)
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
JobRequeue=1
$node State=UNKNOWN
PartitionName=low Nodes=$HOST Default=YES MaxTime=INFINITE PriorityTier=1 PreemptMode=REQUEUE GraceTime=$GRACE_S State=UP
PartitionName=high Nodes=$HOST MaxTime=INFINITE PriorityTier=2 PreemptMode=OFF State=UP
EOF
}

dbd_conf() {
  cat <<EOF
$MARK -- rewritten by every \`up\`
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
# root over MariaDB's unix socket (Debian authenticates it by the process's user): no password to keep
StorageUser=root
StorageLoc=slurm_acct_db
EOF
}

write_conf() {  # $1 path, $2 content, $3 mode; refuses a file this script did not write
  if [[ -f $1 ]] && ! head -1 "$1" | grep -qF "$MARK"; then
    die "$1 exists and was not written by this script (a real cluster's?); leave it, and point SLURM_CONF at a cluster instead of running \`make slurm-up\` here"
  fi
  if [[ ! -f $1 ]] || [[ $(cat "$1") != "$2" ]]; then
    printf '%s\n' "$2" >"$1"
    chmod "$3" "$1"
    return 1  # changed
  fi
}

start_munge() {
  running "$RUN/munged.pid" && return
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return  # a munged of the system's already answers
  [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key
  mkdir -p /run/munge && chown munge:munge /run/munge
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid --force
  wait_for 20 munged test -s /run/munge/munged.pid
  cp /run/munge/munged.pid "$RUN/munged.pid"
  wait_for 20 munged bash -c 'munge -n | unmunge'
}

start_mariadb() {
  running "$RUN/mariadb.pid" && return
  mysqladmin ping >/dev/null 2>&1 && { mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db"; return; }
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  setsid mariadbd --user=mysql --pid-file=/run/mysqld/mariadbd.pid --skip-networking \
    >>"$LOG/mariadb.log" 2>&1 </dev/null &
  wait_for 60 MariaDB mysqladmin ping
  cp /run/mysqld/mariadbd.pid "$RUN/mariadb.pid"
  mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db"
}

start_slurmdbd() {
  running "$RUN/slurmdbd.pid" && return
  slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster
  sacctmgr -n -P list cluster format=Cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
}

up() {
  need_root up
  install
  mkdir -p "$RUN" "$LOG" "$STATE/slurmctld" "$STATE/slurmd" /etc/slurm
  local changed=0
  write_conf "$CONF" "$(slurm_conf)" 644 || changed=1
  write_conf "$DBD_CONF" "$(dbd_conf)" 600 || changed=1
  if ((changed)) && running "$RUN/slurmctld.pid"; then
    say "config changed: restarting the daemons"
    down
  fi
  if running "$RUN/slurmctld.pid" && running "$RUN/slurmd.pid" && node_ready; then
    say "already up: node $HOST $(node_state)"
    return
  fi
  start_munge
  start_mariadb
  start_slurmdbd
  running "$RUN/slurmctld.pid" || slurmctld
  wait_for 60 slurmctld scontrol ping
  running "$RUN/slurmd.pid" || slurmd
  local deadline=$((SECONDS + 60))
  until node_ready; do
    # a node left down or drained by an earlier run of the daemons is put back into service
    [[ $(node_state) =~ ^(down|drain|drained|draining) ]] && scontrol update nodename="$HOST" state=resume || true
    ((SECONDS < deadline)) || die "node $HOST is $(node_state), not idle; see $LOG/slurmd.log and $LOG/slurmctld.log"
    sleep 0.5
  done
  say "up: node $HOST $(node_state) ($(sinfo -h -o '%c' | head -1) cores), partitions $(sinfo -h -o %P | tr '\n' ' ')"
}

stop() {  # $1 name, $2 pid file
  running "$2" || { rm -f "$2"; return 0; }
  local pid deadline=$((SECONDS + 30))
  pid=$(cat "$2")
  kill "$pid"
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || { kill -9 "$pid" 2>/dev/null || true; break; }
    sleep 0.2
  done
  rm -f "$2"
  say "stopped $1"
}

down() {
  need_root down
  stop slurmd "$RUN/slurmd.pid"
  stop slurmctld "$RUN/slurmctld.pid"
  stop slurmdbd "$RUN/slurmdbd.pid"
  stop MariaDB "$RUN/mariadb.pid"
  stop munged "$RUN/munged.pid"
}

status() {
  if scontrol ping >/dev/null 2>&1; then
    say "controller answers; node $HOST $(node_state)"
  else
    say "no slurmctld answers"
    return 1
  fi
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 up|down|status" ;;
esac
