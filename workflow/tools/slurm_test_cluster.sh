#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for testing the Slurm profile for real.
#
#   workflow/tools/slurm_test_cluster.sh start   # install (apt) if needed, configure, start, wait for idle
#   workflow/tools/slurm_test_cluster.sh env     # prints: export SLURM_CONF=...
#   workflow/tools/slurm_test_cluster.sh stop    # stops exactly the daemons `start` started (by PID)
#
# For a Debian 12 machine where this runs as root without systemd (a CI runner, a
# container). Everything it writes lives in $ICHSEQ_SLURM_DIR (default /tmp/ichseq-slurm):
# slurm.conf, gres.conf, its own munge key and socket, spool, state, logs, PID files; it
# never touches a munged that was already running. Clients find the cluster through
# SLURM_CONF (see `env`). One exception: the Slurm plugin's job step drops every SLURM_*
# variable but the job's identity before its inner `srun`, SLURM_CONF included, so that
# srun reads the default /etc/slurm/slurm.conf. `start` links that path to this cluster's
# file (replacing a stale link of an earlier test cluster) and `stop` removes the link; a
# real slurm.conf is an error.
#
# The node advertises one GPU as a generic resource backed by /dev/null, so a job asking
# for `gpu: 1` is scheduled here too; the training code then finds no CUDA and uses the CPU.
# There is no accounting database: `sacct` does not work, so Snakemake must check job
# status with squeue (profiles/slurm-test). Finished jobs stay visible to squeue/scontrol
# for MinJobAge seconds.
set -euo pipefail

DIR=${ICHSEQ_SLURM_DIR:-/tmp/ichseq-slurm}
CONF=$DIR/slurm.conf
DEFAULT_CONF=/etc/slurm/slurm.conf
MUNGE_SOCKET=$DIR/munge/munge.socket
WAIT_SECONDS=${ICHSEQ_SLURM_WAIT:-60}

die() { echo "slurm_test_cluster: $*" >&2; exit 1; }

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "needs ${missing[*]} and there is no apt-get; install Slurm and munge first"
    echo "installing ${missing[*]} with apt-get"
    local start=$SECONDS
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >"$DIR/apt.log" 2>&1 || {
        # A fresh machine may not have the package lists yet.
        apt-get update -q >>"$DIR/apt.log" 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$DIR/apt.log" 2>&1
    } || die "apt-get install ${missing[*]} failed; see $DIR/apt.log"
    echo "installed in $((SECONDS - start)) s"
}

write_config() {
    local host node
    host=$(hostname -s)
    # This host's real CPUs and memory, as slurmd itself sees them (minus the UpTime line).
    node=$(slurmd -C | head -n 1)
    [[ $node == NodeName=* ]] || die "slurmd -C printed no node line: $node"
    mkdir -p "$DIR"/{state,spool,log,munge}
    cat >"$CONF" <<EOF
# Written by workflow/tools/slurm_test_cluster.sh: one node, no accounting, for tests.
ClusterName=ichseq-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=${ICHSEQ_SLURMCTLD_PORT:-6817}
SlurmdPort=${ICHSEQ_SLURMD_PORT:-6818}
# No systemd and no cgroup setup on a CI runner: plain process tracking.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
# Kill quickly at a time limit; keep finished jobs visible to squeue for 10 minutes.
KillWait=5
MinJobAge=600
GresTypes=gpu
$node Gres=gpu:1 State=UNKNOWN
# Two partitions on the one node, so a test can see GPU jobs routed to \`gpu\`.
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
EOF
    cat >"$DIR/gres.conf" <<EOF
NodeName=$host Name=gpu File=/dev/null
EOF
    if [ ! -s "$DIR/munge/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 700 "$DIR/munge"
    chmod 400 "$DIR/munge/munge.key"
}

# Whether the daemon of PID file $DIR/NAME.pid runs: by PID and process name, since a PID
# file left by a killed cluster may name a PID reused by something else.
running() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$(basename "$1" .pid)" ]
}

# Points /etc/slurm/slurm.conf at this cluster's file. A link left by a test cluster that is
# no longer running (killed before `stop`, or a machine image taken while one ran) is
# replaced; a running test cluster elsewhere, or a real slurm.conf, is an error.
link_default_conf() {
    local target other
    if [ -L "$DEFAULT_CONF" ]; then
        target=$(readlink "$DEFAULT_CONF")
        [ "$target" = "$CONF" ] && return 0
        if [ -e "$target" ]; then
            head -n 1 "$target" | grep -q '^# Written by workflow/tools/slurm_test_cluster.sh' ||
                die "$DEFAULT_CONF links to $target, which is not a test cluster's; remove the link if it is stale"
            other=$(dirname "$target")
            running "$other/slurmctld.pid" &&
                die "another test cluster is running from $other; stop it first: ICHSEQ_SLURM_DIR=$other $0 stop"
        fi
        echo "replacing the stale link $DEFAULT_CONF -> $target"
        rm -f "$DEFAULT_CONF"
    elif [ -e "$DEFAULT_CONF" ]; then
        die "$DEFAULT_CONF exists: this machine has a Slurm of its own; use it instead of a test cluster"
    fi
    mkdir -p "$(dirname "$DEFAULT_CONF")"
    ln -s "$CONF" "$DEFAULT_CONF"
}

start() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (it starts slurmd and munged)"
    mkdir -p "$DIR"
    install_packages
    if running "$DIR/slurmctld.pid"; then
        echo "already running (SLURM_CONF=$CONF)"
        return 0
    fi
    write_config
    link_default_conf
    munged --force --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/seed"
    slurmctld -f "$CONF"
    slurmd -f "$CONF"
    export SLURM_CONF=$CONF
    local state="" deadline=$((SECONDS + WAIT_SECONDS))
    while [ $SECONDS -lt $deadline ]; do
        state=$(sinfo -h -N -o %t 2>/dev/null | head -n 1 || true)
        [ "$state" = idle ] && break
        # A node that registered as down (e.g. after an unclean stop) is put back in service.
        if [[ $state == down* || $state == drain* ]]; then
            scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
        fi
        sleep 1
    done
    if [ "$state" != idle ]; then
        tail -n 20 "$DIR"/log/*.log >&2 || true
        stop
        die "node not idle after ${WAIT_SECONDS} s (state '${state:-none}'); logs above"
    fi
    echo "Slurm test cluster up: node $(hostname -s) idle; export SLURM_CONF=$CONF"
}

stop() {
    local name pid
    for name in slurmd slurmctld munged; do
        if running "$DIR/$name.pid"; then
            pid=$(cat "$DIR/$name.pid")
            kill "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
            echo "stopped $name ($pid)"
        fi
        rm -f "$DIR/$name.pid"
    done
    if [ -L "$DEFAULT_CONF" ] && [ "$(readlink "$DEFAULT_CONF")" = "$CONF" ]; then
        rm -f "$DEFAULT_CONF"
    fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
env) echo "export SLURM_CONF=$CONF" ;;
*) die "usage: $0 start|stop|env" ;;
esac
