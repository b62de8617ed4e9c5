#!/bin/sh
# Install the system packages the power-loss harness (tests/powerloss) needs.
# Idempotent; Debian/Ubuntu.  mfusepy loads libfuse 2 (libfuse.so.2 from
# libfuse2); fuse3 provides fusermount/fusermount3 and the fuse group/config.
# The Python side is the pip requirement  mfusepy>=3.1  (the package's test extra).
set -eu
need=""
for pkg in fuse3 libfuse2; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need="$need $pkg"
done
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if [ -n "$need" ]; then
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y $need
fi
[ -e /dev/fuse ] || echo "install.sh: WARNING: /dev/fuse does not exist (container without --device /dev/fuse?); power-loss tests will skip" >&2
echo "install.sh: fuse3 libfuse2 present"
