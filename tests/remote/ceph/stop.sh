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

pids=()
files=()
# radosgw first, then OSDs, then the mon: each still has the daemons it talks to while it stops.
for f in "$DIR"/run/client.rgw.*.pid "$DIR"/run/osd.*.pid "$DIR"/run/mgr.*.pid \
    "$DIR"/run/mon.*.pid; do
    [ -f "$f" ] || continue
    files+=("$f")
    pid="$(tr -dc '0-9' <"$f" || true)"
    [ -n "$pid" ] || continue
    if running "$pid"; then
        pids+=("$pid")
    fi
done

if [ ${#pids[@]} -gt 0 ]; then
    log "stopping PIDs ${pids[*]}"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    deadline=$((SECONDS + GRACE))
    while :; do
        alive=()
        for pid in "${pids[@]}"; do
            if running "$pid"; then alive+=("$pid"); fi
        done
        [ ${#alive[@]} -eq 0 ] && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "still alive after ${GRACE} s, SIGKILL: ${alive[*]}"
            kill -KILL "${alive[@]}" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.1
    done
fi
for pid in "${pids[@]+"${pids[@]}"}"; do
    if running "$pid"; then
        log "ERROR: PID $pid survived SIGKILL"
        exit 1
    fi
done
[ ${#files[@]} -eq 0 ] || rm -f "${files[@]}"
log "stopped"
