#!/usr/bin/env bash
# Stop everything tests/testbed/up.sh started, via its pid files. Idempotent:
# missing or stale pid files are fine. Keeps configs, keys, state, the
# accounting DB and the venvs, so the next up.sh is quick.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

[[ $(id -u) -eq 0 ]] || { echo "down.sh must run as root" >&2; exit 1; }

# Several sessions share this machine: serialise up.sh/down.sh runs.
exec 9>/run/lock/relaymd-testbed.lock
flock -w 900 9 || { echo "down.sh: timed out waiting for the testbed lock" >&2; exit 1; }

# Tests must not see a "ready" testbed that is going away.
rm -f "$TB_ETC/testbed.json"

tb_stop "$TB_RUN/moto.pid" moto_server
for c in "${TB_CLUSTERS[@]}"; do
    tb_stop "$TB_RUN/sshd-$c.pid" sshd
done
for c in "${TB_CLUSTERS[@]}"; do
    tb_stop "$TB_RUN/slurmd-$c.pid" slurmd
    tb_stop "$TB_RUN/slurmctld-$c.pid" slurmctld
done
tb_stop "$TB_RUN/slurmdbd.pid" slurmdbd

# mariadb: a clean shutdown; mysqld_safe exits on its own afterwards.
if mariadb-admin --protocol=socket ping >/dev/null 2>&1; then
    mariadb-admin --protocol=socket shutdown >/dev/null 2>&1 || true
fi
# mysqld_safe would restart a mariadbd that died uncleanly: stop it first.
tb_stop "$TB_RUN/mysqld_safe.pid" mysqld_safe
if [[ -s /run/mysqld/mysqld.pid ]]; then
    tb_stop /run/mysqld/mysqld.pid mariadbd
fi

tb_stop /run/munge/munged.pid munged
tb_log "testbed down"
