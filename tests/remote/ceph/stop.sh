#!/usr/bin/env bash
# Stop the test Ceph cluster that tests/remote/ceph/start.sh started in DIR.
#
#   bash tests/remote/ceph/stop.sh DIR
#
# Kills exactly the daemons named by DIR/run/*.pid (radosgw, then the OSD, then the mon), never
# by process name, so other Ceph clusters or processes on the machine are left alone: SIGTERM,
# up to ~10 s of grace, then SIGKILL. A PID whose process is gone, or now belongs to something
# that is not a Ceph daemon (PID reuse), is skipped. Succeeds if nothing is running. The data in
# DIR is left in place (memstore's objects die with the OSD); start.sh wipes it on the next start.
set -euo pipefail

log() { printf 'ceph/stop.sh: %s\n' "$*" >&2; }

[ $# -eq 1 ] || { log "usage: stop.sh DIR"; exit 2; }
[ -d "$1" ] || { log "no directory $1: nothing to stop"; exit 0; }
DIR="$(cd "$1" && pwd)"
GRACE="${CKDB_CEPH_STOP_GRACE:-10}"

# A live Ceph daemon with this PID? (the process name guards against a reused PID)
is_ceph() {
    local comm
    comm="$(cat "/proc/$1/comm" 2>/dev/null)" || return 1
    case "$comm" in
        ceph-mon | ceph-osd | ceph-mgr | radosgw) return 0 ;;
        *) return 1 ;;
    esac
}

# Still running? A zombie (exited, not yet reaped by its parent) counts as stopped.
running() {
    local state
    is_ceph "$1" || return 1
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
    [ "$state" != Z ]
}

# SIGTERM the daemons in the pid files given, wait for them until the deadline, then SIGKILL.
stop_group() {
    local f pid pids=() alive=()
    for f in "$@"; do
        [ -f "$f" ] || continue
        pid="$(tr -dc '0-9' <"$f" || true)"
        if [ -n "$pid" ] && running "$pid"; then pids+=("$pid"); fi
    done
    [ ${#pids[@]} -gt 0 ] || return 0
    log "stopping PIDs ${pids[*]}"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    while :; do
        alive=()
        for pid in "${pids[@]}"; do
            if running "$pid"; then alive+=("$pid"); fi
        done
        [ ${#alive[@]} -gt 0 ] || return 0
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "still alive after ${GRACE} s, SIGKILL: ${alive[*]}"
            kill -KILL "${alive[@]}" 2>/dev/null || true
            sleep 0.2
            for pid in "${alive[@]}"; do
                if running "$pid"; then log "ERROR: PID $pid survived SIGKILL"; failed=1; fi
            done
            return 0
        fi
        sleep 0.1
    done
}

deadline=$((SECONDS + GRACE))
failed=0
# One kind at a time, each while the daemons it talks to still run: radosgw's shutdown does
# RADOS ops (unwatch) that hang without an OSD; a stopping OSD tells the mon it is going down and
# with no mon to answer waits 5 s (osd_mon_shutdown_timeout). Each stage gets at least 3 s.
for stage in "client.rgw.*" "mgr.*" "osd.*" "mon.*"; do
    [ $((deadline - SECONDS)) -ge 3 ] || deadline=$((SECONDS + 3))
    # shellcheck disable=SC2086  # the glob is meant
    stop_group "$DIR"/run/$stage.pid
done
[ "$failed" = 0 ] || exit 1
files=("$DIR"/run/*.pid)
[ -f "${files[0]}" ] && rm -f "${files[@]}"
log "stopped"
