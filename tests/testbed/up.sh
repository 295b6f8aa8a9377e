#!/usr/bin/env bash
# Bring up the RelayMD testbed: two real SLURM clusters (clustera, clusterb) on
# this machine, each behind its own sshd on 127.0.0.1, one slurmdbd+mariadb for
# sacct, a worker venv usable by the non-root test user, and a moto S3 server.
# Idempotent: every step checks before acting, so re-running (or running after
# the daemons died) converges to "everything up". Writes testbed.json last.
#
# Env:
#   RELAYMD_TESTBED_REQUIREMENTS  file of worker requirements (uv export output);
#                                 default: a fixed list, see WORKER_DEFAULT_REQS.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

[[ $(id -u) -eq 0 ]] || { echo "up.sh must run as root" >&2; exit 1; }

# Several sessions share this machine: serialise up.sh/down.sh runs. Every
# daemon below is started with 9>&- so it does not keep holding the lock.
mkdir -p /run/lock
exec 9>/run/lock/relaymd-testbed.lock
flock -w 900 9 || { echo "up.sh: timed out waiting for the testbed lock" >&2; exit 1; }

WORKER_DEFAULT_REQS=(openmm pydantic boto3 structlog orjson tenacity pyyaml platformdirs)
HOST_SHORT=$(hostname -s)
T0=$SECONDS
# testbed.json is the "ready" signal for tests. A re-run leaves it in place (a
# warm run restarts nothing), but a failed run withdraws it.
trap 'echo "up.sh: failed at line $LINENO (exit $?)" >&2' ERR
trap 'rc=$?; if ((rc != 0)); then rm -f "$TB_ETC/testbed.json"; fi' EXIT

mkdir -p "$TB_ETC" "$TB_RUN" "$TB_LOG" "$TB_LIB" "$TB_SRV" "$TB_OPT"
chmod 755 "$TB_ETC" "$TB_RUN" "$TB_LOG" "$TB_LIB" "$TB_SRV" "$TB_OPT"

# ---------------------------------------------------------------- packages
PKGS=(slurm-wlm slurmctld slurmd slurmdbd slurm-client munge mariadb-server
      mariadb-client openssh-server openssh-client python3 curl procps iproute2)

install_packages() {
    local missing=() p
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' \
            || missing+=("$p")
    done
    # A previously interrupted dpkg run blocks every later install; finish it.
    if [[ -n $(dpkg --audit 2>/dev/null) ]]; then
        DEBIAN_FRONTEND=noninteractive dpkg --configure -a >>"$TB_LOG/apt.log" 2>&1 || true
    fi
    [[ ${#missing[@]} -eq 0 ]] && return 0
    tb_log "installing: ${missing[*]}"
    # No init system here: make every postinst skip starting services.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Lock::Timeout: other sessions on this machine may be running apt too.
    local apt_opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300
                    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    # Only refresh the lists when they are missing or the install fails with
    # them (stale lists point at versions the mirror no longer has).
    if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
        apt-get update -q -o DPkg::Lock::Timeout=300 >>"$TB_LOG/apt.log" 2>&1
    fi
    if ! apt-get install "${apt_opts[@]}" "${missing[@]}" >>"$TB_LOG/apt.log" 2>&1; then
        tb_log "apt-get install failed; running apt-get update and retrying"
        apt-get update -q -o DPkg::Lock::Timeout=300 >>"$TB_LOG/apt.log" 2>&1
        apt-get install "${apt_opts[@]}" "${missing[@]}" >>"$TB_LOG/apt.log" 2>&1 \
            || { tail -30 "$TB_LOG/apt.log" >&2; exit 1; }
    fi
}
install_packages

# ---------------------------------------------------------------- test user
if ! id "$TB_USER" >/dev/null 2>&1; then
    useradd --create-home --home-dir "/home/$TB_USER" --shell /bin/bash "$TB_USER"
fi
# sshd with UsePAM=no refuses accounts whose password field is locked ("!").
usermod -p '*' "$TB_USER"
TB_HOME=$(getent passwd "$TB_USER" | cut -d: -f6)

if [[ ! -s $TB_ETC/id_ed25519 ]]; then
    rm -f "$TB_ETC/id_ed25519" "$TB_ETC/id_ed25519.pub"
    ssh-keygen -q -t ed25519 -N '' -C "relaymd-testbed" -f "$TB_ETC/id_ed25519"
fi
chown root:root "$TB_ETC/id_ed25519" "$TB_ETC/id_ed25519.pub"
chmod 600 "$TB_ETC/id_ed25519"
chmod 644 "$TB_ETC/id_ed25519.pub"
install -d -m 700 -o "$TB_USER" -g "$TB_USER" "$TB_HOME/.ssh"
install -m 600 -o "$TB_USER" -g "$TB_USER" "$TB_ETC/id_ed25519.pub" "$TB_HOME/.ssh/authorized_keys"

# ---------------------------------------------------------------- munge
start_munge() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        rm -f /etc/munge/munge.key
        mungekey -c -k /etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    install -d -m 755 -o munge -g munge /run/munge
    install -d -m 700 -o munge -g munge /var/lib/munge /var/log/munge
    if tb_alive /run/munge/munged.pid munged; then
        return 0
    fi
    tb_log "starting munged"
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
    runuser -u munge -- /usr/sbin/munged --force 9>&-
    local i
    for ((i = 0; i < 50; i++)); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "munged did not come up" >&2
    exit 1
}
start_munge

# ---------------------------------------------------------------- mariadb
mysql_ready() { mariadb-admin --protocol=socket ping >/dev/null 2>&1; }

start_mariadb() {
    install -d -m 755 -o mysql -g mysql /run/mysqld
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        tb_log "initialising mariadb datadir"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >>"$TB_LOG/mariadb.log" 2>&1
    fi
    if ! mysql_ready; then
        tb_log "starting mariadb"
        # mariadbd writes its error log as user mysql.
        touch "$TB_LOG/mariadb.err"
        chown mysql:mysql "$TB_LOG/mariadb.err"
        # setsid: detach from the caller's session so the server outlives it.
        setsid mysqld_safe --pid-file=/run/mysqld/mysqld.pid \
            --log-error="$TB_LOG/mariadb.err" >>"$TB_LOG/mariadb.log" 2>&1 </dev/null 9>&- &
        echo $! >"$TB_RUN/mysqld_safe.pid"
        local i
        for ((i = 0; i < 120; i++)); do
            mysql_ready && break
            sleep 0.5
        done
        mysql_ready || { echo "mariadb did not come up" >&2; tail -20 "$TB_LOG/mariadb.err" >&2; exit 1; }
    fi
    mariadb --protocol=socket <<SQL
CREATE DATABASE IF NOT EXISTS \`$TB_DB_NAME\`;
CREATE USER IF NOT EXISTS '$TB_DB_USER'@'localhost' IDENTIFIED BY '$TB_DB_PASS';
GRANT ALL ON \`$TB_DB_NAME\`.* TO '$TB_DB_USER'@'localhost';
FLUSH PRIVILEGES;
SQL
}
start_mariadb

# ---------------------------------------------------------------- slurm configs
# Configs are regenerated every run; a daemon is restarted only when its
# config actually changed (e.g. the hostname differs from the last run).
declare -A RESTART=()

# write_if_changed PATH MODE KEY < content: sets RESTART[KEY]=1 on change.
write_if_changed() {
    local path=$1 mode=$2 key=$3 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f $path ]] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
    else
        install -m "$mode" -o root -g root "$tmp" "$path"
        rm -f "$tmp"
        RESTART[$key]=1
    fi
}

install -d -m 755 "$TB_LIB/slurmdbd"
write_if_changed "$TB_ETC/slurmdbd.conf" 600 slurmdbd <<EOF
# slurmdbd shared by both testbed clusters (generated by tests/testbed/up.sh)
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$TB_DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$TB_LOG/slurmdbd.log
PidFile=$TB_RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$TB_DB_USER
StoragePass=$TB_DB_PASS
StorageLoc=$TB_DB_NAME
EOF

for c in "${TB_CLUSTERS[@]}"; do
    node=$(tb_node "$c")
    install -d -m 755 "$TB_ETC/$c" "$TB_LIB/$c" "$TB_LIB/$c/spool"
    install -d -m 700 "$TB_LIB/$c/state"
    install -d -m 755 "$TB_SRV/$c"
    install -d -m 755 -o "$TB_USER" -g "$TB_USER" "$TB_SRV/$c/scratch"
    # GPUs as SLURM sees them: 4 per node. slurmd only binds CUDA_VISIBLE_DEVICES for GRES
    # with device files, and refuses files that are not character devices: these have the
    # NVIDIA driver's major number (195) but no driver behind them, so nothing can open them.
    install -d -m 755 "$TB_LIB/$c/dev"
    for ((g = 0; g < TB_GPUS; g++)); do
        dev=$TB_LIB/$c/dev/nvidia$g
        [[ -c $dev ]] || { rm -f "$dev"; mknod -m 666 "$dev" c 195 "$g"; }
    done
    write_if_changed "$TB_ETC/$c/gres.conf" 644 "$c" <<EOF
# RelayMD testbed cluster $c: fake GPUs (generated by tests/testbed/up.sh)
NodeName=$node Name=gpu File=$TB_LIB/$c/dev/nvidia[0-$((TB_GPUS - 1))]
EOF
    # nvidia-smi stand-in, put on the worker's PATH by tests that want GPUs (testbed.json).
    install -d -m 755 "$TB_OPT/$c" "$TB_OPT/$c/bin"
    install -m 755 "$HERE/fake_nvidia_smi.py" "$TB_OPT/$c/bin/nvidia-smi"
    for ((g = 0; g < TB_GPUS; g++)); do
        printf '%d,GPU-%08x-0000-4000-8000-%012d,%s,%d\n' "$g" "$(tb_ssh_port "$c")" "$g" \
            "$(tb_gpu_name "$c")" "$(tb_gpu_mib "$c")"
    done >"$TB_OPT/$c/bin/gpus.csv"
    chmod 644 "$TB_OPT/$c/bin/gpus.csv"
    write_if_changed "$TB_ETC/$c/slurm.conf" 644 "$c" <<EOF
# RelayMD testbed cluster $c (generated by tests/testbed/up.sh)
ClusterName=$c
SlurmctldHost=$HOST_SHORT(127.0.0.1)
SlurmctldPort=$(tb_ctld_port "$c")
SlurmdPort=$(tb_slurmd_port "$c")
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$TB_LIB/$c/state
SlurmdSpoolDir=$TB_LIB/$c/spool/%n
SlurmctldPidFile=$TB_RUN/slurmctld-$c.pid
SlurmdPidFile=$TB_RUN/slurmd-$c.pid
SlurmctldLogFile=$TB_LOG/slurmctld-$c.log
SlurmdLogFile=$TB_LOG/slurmd-$c.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$TB_DBD_PORT
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
# sacct's AllocTRES then lists each job's GPUs (gres/gpu=N).
AccountingStorageTRES=gres/gpu
# Ended jobs stay in squeue for 10 minutes; sacct is the source of truth.
MinJobAge=600
KillWait=5
InactiveLimit=0
WaitTime=0
SlurmctldTimeout=60
SlurmdTimeout=120
ReturnToService=2
# The real machine has 2 cores; advertise 8 so ~8 one-CPU jobs run at once.
SlurmdParameters=config_overrides
NodeName=$node NodeHostname=$HOST_SHORT NodeAddr=127.0.0.1 CPUs=8 Sockets=1 CoresPerSocket=8 ThreadsPerCore=1 RealMemory=4096 Gres=gpu:$TB_GPUS State=UNKNOWN
PartitionName=$TB_PARTITION Nodes=$node Default=YES MaxTime=30 State=UP
# Multi-GPU allocations (ADR 0026): jobs ask --gres=gpu:$TB_GPUS here.
PartitionName=$TB_GPU_PARTITION Nodes=$node MaxTime=30 State=UP
EOF
done

# ---------------------------------------------------------------- slurmdbd
if [[ -n ${RESTART[slurmdbd]:-} ]]; then tb_stop "$TB_RUN/slurmdbd.pid" slurmdbd; fi
if ! tb_alive "$TB_RUN/slurmdbd.pid" slurmdbd; then
    tb_log "starting slurmdbd"
    # slurmdbd has no -f: it reads slurmdbd.conf from the directory of SLURM_CONF.
    SLURM_CONF=$TB_ETC/slurm.conf /usr/sbin/slurmdbd \
        >>"$TB_LOG/slurmdbd.out" 2>&1 </dev/null 9>&-
fi
export SLURM_CONF=$TB_ETC/clustera/slurm.conf
for ((i = 0; i < 120; i++)); do
    sacctmgr -n -P list cluster format=cluster >/dev/null 2>&1 && break
    sleep 0.5
done
sacctmgr -n -P list cluster format=cluster >/dev/null \
    || { echo "slurmdbd not answering" >&2; tail -20 "$TB_LOG/slurmdbd.log" >&2; exit 1; }

# ---------------------------------------------------------------- accounting
# Clusters must be registered before their slurmctld first connects.
known_clusters=$(sacctmgr -n -P list cluster format=cluster)
for c in "${TB_CLUSTERS[@]}"; do
    grep -qx "$c" <<<"$known_clusters" || sacctmgr -i add cluster "$c" >/dev/null
done
cl_csv=$(IFS=,; echo "${TB_CLUSTERS[*]}")
if [[ -z $(sacctmgr -n -P list account "$TB_ACCOUNT" format=account) ]]; then
    sacctmgr -i add account "$TB_ACCOUNT" cluster="$cl_csv" \
        Description="relaymd testbed" Organization=relaymd >/dev/null
fi
for c in "${TB_CLUSTERS[@]}"; do
    if [[ -z $(sacctmgr -n -P list assoc cluster="$c" account="$TB_ACCOUNT" format=account) ]]; then
        sacctmgr -i add account "$TB_ACCOUNT" cluster="$c" >/dev/null
    fi
    if [[ -z $(sacctmgr -n -P list assoc cluster="$c" user="$TB_USER" format=user) ]]; then
        sacctmgr -i add user "$TB_USER" account="$TB_ACCOUNT" cluster="$c" \
            DefaultAccount="$TB_ACCOUNT" >/dev/null
    fi
done
unset SLURM_CONF

# ---------------------------------------------------------------- slurmctld / slurmd
for c in "${TB_CLUSTERS[@]}"; do
    node=$(tb_node "$c")
    conf=$TB_ETC/$c/slurm.conf
    if [[ -n ${RESTART[$c]:-} ]]; then
        tb_stop "$TB_RUN/slurmd-$c.pid" slurmd
        tb_stop "$TB_RUN/slurmctld-$c.pid" slurmctld
    fi
    # A state dir written under another ClusterName makes slurmctld refuse to
    # start; the state dir is ours alone, so reset it if it does not match.
    if [[ -f $TB_LIB/$c/state/clustername ]] \
        && [[ $(<"$TB_LIB/$c/state/clustername") != "$c" ]]; then
        tb_log "clearing stale slurmctld state for $c"
        rm -rf "${TB_LIB:?}/$c/state/"*
    fi
    if ! tb_alive "$TB_RUN/slurmctld-$c.pid" slurmctld; then
        tb_log "starting slurmctld ($c)"
        SLURM_CONF=$conf /usr/sbin/slurmctld -f "$conf" \
            >>"$TB_LOG/slurmctld-$c.out" 2>&1 </dev/null 9>&-
    fi
    install -d -m 755 "$TB_LIB/$c/spool/$node"
    if ! tb_alive "$TB_RUN/slurmd-$c.pid" slurmd; then
        tb_log "starting slurmd ($c/$node)"
        SLURM_CONF=$conf /usr/sbin/slurmd -f "$conf" -N "$node" \
            >>"$TB_LOG/slurmd-$c.out" 2>&1 </dev/null 9>&-
    fi
done

# ---------------------------------------------------------------- sshd
install -d -m 755 /run/sshd
known_hosts_tmp=$(mktemp)
for c in "${TB_CLUSTERS[@]}"; do
    port=$(tb_ssh_port "$c")
    hostkey=$TB_ETC/$c/ssh_host_ed25519_key
    if [[ ! -s $hostkey ]]; then
        rm -f "$hostkey" "$hostkey.pub"
        ssh-keygen -q -t ed25519 -N '' -C "relaymd-testbed-$c" -f "$hostkey"
    fi
    chmod 600 "$hostkey"
    write_if_changed "$TB_ETC/$c/sshd_config" 644 "sshd-$c" <<EOF
# sshd for testbed cluster $c (generated by tests/testbed/up.sh)
Port $port
ListenAddress 127.0.0.1
HostKey $hostkey
PidFile $TB_RUN/sshd-$c.pid
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $TB_USER
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
# The session's SLURM_CONF picks which cluster sbatch/squeue/sacct talk to.
SetEnv SLURM_CONF=$TB_ETC/$c/slurm.conf
Subsystem sftp internal-sftp
# Tests open many concurrent sessions/connections.
MaxSessions 64
MaxStartups 64:30:128
LogLevel INFO
EOF
    echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$hostkey.pub")" >>"$known_hosts_tmp"
    if [[ -n ${RESTART[sshd-$c]:-} ]]; then tb_stop "$TB_RUN/sshd-$c.pid" sshd; fi
    if ! tb_alive "$TB_RUN/sshd-$c.pid" sshd; then
        tb_log "starting sshd ($c, port $port)"
        /usr/sbin/sshd -t -f "$TB_ETC/$c/sshd_config"
        /usr/sbin/sshd -f "$TB_ETC/$c/sshd_config" -E "$TB_LOG/sshd-$c.log" 9>&-
    fi
done
install -m 644 "$known_hosts_tmp" "$TB_ETC/known_hosts"
rm -f "$known_hosts_tmp"

# ---------------------------------------------------------------- python envs
UV=$(command -v uv || true)
if [[ -z $UV ]]; then
    tb_log "installing uv with pip"
    if command -v pip >/dev/null 2>&1; then
        pip install -q uv >>"$TB_LOG/uv.log" 2>&1
    else
        python3 -m pip install -q --break-system-packages uv >>"$TB_LOG/uv.log" 2>&1
    fi
    hash -r
    UV=$(command -v uv)
fi
export UV_PYTHON_DOWNLOADS=never

# ensure_venv DIR REQFILE: (re)build only when requirements (or python) changed.
ensure_venv() {
    local dir=$1 reqfile=$2 hash stamp=$1/.relaymd-testbed-requirements.sha256
    hash=$( { cat "$reqfile"; /usr/bin/python3.11 -V; } | sha256sum | cut -d' ' -f1)
    if [[ -x $dir/bin/python ]] && [[ -f $stamp ]] && [[ $(<"$stamp") == "$hash" ]]; then
        return 0
    fi
    tb_log "building venv $dir"
    rm -rf "$dir"
    "$UV" venv -q --python /usr/bin/python3.11 "$dir" >>"$TB_LOG/uv.log" 2>&1
    # copy mode: the venv must not share inodes with root's private uv cache.
    UV_LINK_MODE=copy "$UV" pip install -q --python "$dir/bin/python" -r "$reqfile" \
        >>"$TB_LOG/uv.log" 2>&1 || { tail -30 "$TB_LOG/uv.log" >&2; exit 1; }
    chmod -R a+rX "$dir"
    echo "$hash" >"$stamp"
}

worker_reqs=$(mktemp)
if [[ -n ${RELAYMD_TESTBED_REQUIREMENTS:-} ]]; then
    [[ -r $RELAYMD_TESTBED_REQUIREMENTS ]] \
        || { echo "RELAYMD_TESTBED_REQUIREMENTS=$RELAYMD_TESTBED_REQUIREMENTS unreadable" >&2; exit 1; }
    cp "$RELAYMD_TESTBED_REQUIREMENTS" "$worker_reqs"
else
    printf '%s\n' "${WORKER_DEFAULT_REQS[@]}" >"$worker_reqs"
fi
ensure_venv "$TB_OPT/venv" "$worker_reqs"
printf 'moto[server]\n' >"$worker_reqs"
ensure_venv "$TB_OPT/moto-venv" "$worker_reqs"
rm -f "$worker_reqs"
chmod 755 "$TB_OPT"

# ---------------------------------------------------------------- moto S3
S3_URL=http://127.0.0.1:$TB_S3_PORT
s3_ready() { curl -fsS -o /dev/null --max-time 2 "$S3_URL/" 2>/dev/null; }
if ! tb_alive "$TB_RUN/moto.pid" moto_server || ! s3_ready; then
    tb_stop "$TB_RUN/moto.pid" moto_server
    tb_log "starting moto S3 server on $S3_URL"
    setsid "$TB_OPT/moto-venv/bin/moto_server" -H 127.0.0.1 -p "$TB_S3_PORT" \
        >>"$TB_LOG/moto.log" 2>&1 </dev/null 9>&- &
    echo $! >"$TB_RUN/moto.pid"
    for ((i = 0; i < 120; i++)); do
        s3_ready && break
        sleep 0.5
    done
    s3_ready || { echo "moto did not come up" >&2; tail -20 "$TB_LOG/moto.log" >&2; exit 1; }
fi

# ---------------------------------------------------------------- wait for nodes
for c in "${TB_CLUSTERS[@]}"; do
    node=$(tb_node "$c")
    conf=$TB_ETC/$c/slurm.conf
    state=""
    for ((i = 0; i < 180; i++)); do
        state=$(SLURM_CONF=$conf sinfo -h -n "$node" -o %T 2>/dev/null | head -1 || true)
        case $state in
            idle | mixed | allocated | completing) break ;;
            *drain* | down*)
                # A node that was down while slurmd restarted stays down; resume it.
                SLURM_CONF=$conf scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    case $state in
        idle | mixed | allocated | completing) tb_log "$c: node $node is $state" ;;
        *)
            echo "$c: node $node not ready (state '$state')" >&2
            tail -20 "$TB_LOG/slurmctld-$c.log" "$TB_LOG/slurmd-$c.log" >&2
            exit 1 ;;
    esac
done

# ---------------------------------------------------------------- testbed.json
# Written last and atomically: its presence is the "ready" signal for tests.
cluster_lines=$(for c in "${TB_CLUSTERS[@]}"; do
    printf '%s|%s|%s|%s|%s\n' "$c" "$(tb_node "$c")" "$(tb_ssh_port "$c")" \
        "$(tb_gpu_name "$c")" "$(tb_gpu_mib "$c")"
done)
TB_ETC=$TB_ETC TB_SRV=$TB_SRV TB_OPT=$TB_OPT TB_LOG=$TB_LOG TB_USER=$TB_USER \
TB_PARTITION=$TB_PARTITION TB_GPU_PARTITION=$TB_GPU_PARTITION TB_GPUS=$TB_GPUS TB_DBD_PORT=$TB_DBD_PORT S3_URL=$S3_URL CLUSTERS=$cluster_lines \
/usr/bin/python3 - <<'PY'
import json
import os

e = os.environ
clusters = []
for line in e["CLUSTERS"].splitlines():
    name, node, port, gpu_name, gpu_mib = line.split("|")
    clusters.append({
        "name": name,
        "ssh_host": "127.0.0.1",
        "ssh_port": int(port),
        "username": e["TB_USER"],
        "client_key": f"{e['TB_ETC']}/id_ed25519",
        "known_hosts": f"{e['TB_ETC']}/known_hosts",
        "slurm_conf": f"{e['TB_ETC']}/{name}/slurm.conf",
        "scratch": f"{e['TB_SRV']}/{name}/scratch",
        "partition": e["TB_PARTITION"],
        "node": node,
        "cpus": 8,
        "gpus": int(e["TB_GPUS"]),
        "gpu_partition": e["TB_GPU_PARTITION"],
        "gpu_name": gpu_name,
        "gpu_memory_mib": int(gpu_mib),
        "nvidia_smi_dir": f"{e['TB_OPT']}/{name}/bin",
    })
doc = {
    "ready": True,
    "clusters": clusters,
    "worker_python": f"{e['TB_OPT']}/venv/bin/python",
    "s3_endpoint_url": e["S3_URL"],
    "s3_region": "us-east-1",
    "s3_access_key_id": "testing",
    "s3_secret_access_key": "testing",
    "slurmdbd_port": int(e["TB_DBD_PORT"]),
    "log_dir": e["TB_LOG"],
}
path = f"{e['TB_ETC']}/testbed.json"
with open(path + ".tmp", "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
os.chmod(path + ".tmp", 0o644)
os.replace(path + ".tmp", path)
PY
tb_log "testbed up in $((SECONDS - T0))s; see $TB_ETC/testbed.json"
