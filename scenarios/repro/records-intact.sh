#!/bin/sh
# Check for map-shared-lost.c, run in the recovery machine: sh records-intact.sh MOUNTPOINT LAST_ACK.
# Every record up to the last ACK the host read before the cut must be in repro.dat.
mnt=$1 last=$2
[ "$last" -ge 0 ] || { echo "no record was acknowledged: nothing promised"; exit 0; }
[ -f "$mnt/repro.dat" ] || { echo "repro.dat is missing: records 0-$last lost"; exit 1; }
lost=0 i=0
while [ "$i" -le "$last" ]; do
    want=$(printf 'record %05d' "$i")
    got=$(dd if="$mnt/repro.dat" bs=4096 skip="$i" count=1 2>/dev/null | head -c 12)
    [ "$got" = "$want" ] || lost=$((lost + 1))
    i=$((i + 1))
done
if [ "$lost" -gt 0 ]; then
    echo "$lost of $((last + 1)) acknowledged records lost"
    exit 1
fi
echo "all $((last + 1)) acknowledged records intact"
