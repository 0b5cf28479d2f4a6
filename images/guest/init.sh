#!/bin/sh
# pmemlab guest init (PID 1): mount the kernel filesystems, load the image's
# modules, then become the agent. Kept minimal: every line runs under TCG.
export PATH=/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /mnt
# modprobe -a: one process for the whole list (dependencies from modules.dep).
if [ -s /etc/pmemlab/modules ]; then
    modprobe -a $(cat /etc/pmemlab/modules) || echo "pmemlab-init: modprobe failed" > /dev/kmsg
fi
exec /usr/sbin/pmemlab-agent
