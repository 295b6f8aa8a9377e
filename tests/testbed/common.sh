# shellcheck shell=bash disable=SC2034
# Shared settings for up.sh / down.sh (sourced, not executed).
# Everything the testbed owns lives under these few roots so down.sh and a
# re-run of up.sh can find it again from pid files alone.

TB_ETC=/etc/relaymd-testbed
TB_RUN=/run/relaymd-testbed
TB_LOG=/var/log/relaymd-testbed
TB_LIB=/var/lib/relaymd-testbed
TB_SRV=/srv/relaymd-testbed
TB_OPT=/opt/relaymd-testbed

TB_USER=relaymd
TB_ACCOUNT=relaymd-test
TB_PARTITION=debug
TB_GPU_PARTITION=gpu4 # 4-GPU allocations on the same node (GRES gpu, fake devices)
TB_GPUS=4
TB_CLUSTERS=(clustera clusterb)

TB_DBD_PORT=6819
TB_S3_PORT=9555
TB_DB_NAME=slurm_acct_db
TB_DB_USER=slurm
TB_DB_PASS=relaymd-testbed

# Per-cluster ports: default SLURM ports (6817/6818) are deliberately not used,
# so nothing here collides with a stock SLURM install.
tb_node() { case "$1" in clustera) echo nodea ;; clusterb) echo nodeb ;; esac; }
tb_ssh_port() { case "$1" in clustera) echo 2221 ;; clusterb) echo 2222 ;; esac; }
tb_ctld_port() { case "$1" in clustera) echo 6917 ;; clusterb) echo 6927 ;; esac; }
tb_slurmd_port() { case "$1" in clustera) echo 6918 ;; clusterb) echo 6928 ;; esac; }

# What the fake nvidia-smi reports per cluster (real name strings and sizes).
tb_gpu_name() { case "$1" in clustera) echo "NVIDIA A100-SXM4-40GB" ;; clusterb) echo "NVIDIA H100 80GB HBM3" ;; esac; }
tb_gpu_mib() { case "$1" in clustera) echo 40960 ;; clusterb) echo 81559 ;; esac; }

tb_log() { printf '[testbed %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# True when pid is a live, non-zombie process. PID 1 here may reap exited
# daemons late, and kill -0 succeeds on a zombie.
tb_pid_running() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)
    [[ -n $state && $state != Z && $state != X ]]
}

# True when the pid file names a live process whose command starts with $2.
# The name check guards against a stale pid file whose pid got reused.
tb_alive() {
    local pidfile=$1 name=${2:-} pid comm
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    tb_pid_running "$pid" || return 1
    if [[ -n $name ]]; then
        comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
        [[ $comm == "$name"* ]] || return 1
    fi
    return 0
}

# Stop the process behind a pid file: TERM, wait up to ~10s, then KILL.
tb_stop() {
    local pidfile=$1 name=${2:-} pid i
    if tb_alive "$pidfile" "$name"; then
        pid=$(<"$pidfile")
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            tb_pid_running "$pid" || break
            sleep 0.1
        done
        if tb_pid_running "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$pidfile"
}
