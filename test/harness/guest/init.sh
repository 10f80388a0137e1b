#!/bin/sh
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo "TSVS-BOOTED $(cut -d' ' -f1 /proc/uptime)"
. /etc/tsvs/lib.sh
for m in $(cat /etc/tsvs/modules); do
  insmod /lib/modules/$m.ko || echo "TSVS-ERROR insmod $m failed"
done
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    tsvs.*=*)
      k=${arg%%=*}; k=${k#tsvs.}; v=${arg#*=}
      case "$k" in *[!a-zA-Z0-9_]*) echo "TSVS-ERROR bad parameter name $k"; continue;; esac
      export "TSVS_$(echo "$k" | tr a-z A-Z)=$v";;
  esac
done
if [ -e /etc/tsvs/pmd ]; then
  # userspace PMD guests: hugepages (reserved by hugepages=N on the command line) for DPDK / tsvs
  mkdir -p /mnt/huge /var/run
  mount -t hugetlbfs nodev /mnt/huge || echo "TSVS-ERROR mount hugetlbfs failed"
fi
ip link set lo up
n=0
# wait for eth0 only if there is a network controller (PCI class 0x0200xx) to wait for
grep -q '^0x0200' /sys/bus/pci/devices/*/class 2>/dev/null || n=50
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 50 ]; do usleep 100000; n=$((n+1)); done
for d in /sys/class/net/eth*; do
  [ -e "$d" ] || { echo "TSVS-ERROR no ethernet interface"; break; }
  dev=${d##*/}; i=${dev#eth}
  eval ip=\${TSVS_IP$i}; eval mtu=\${TSVS_MTU$i}
  if [ "$i" = 0 ]; then ip=${ip:-$TSVS_IP}; mtu=${mtu:-$TSVS_MTU}; fi
  [ -n "$mtu" ] && { ip link set "$dev" mtu "$mtu" || echo "TSVS-ERROR mtu $mtu on $dev"; }
  [ -n "$ip" ] && { ip addr add "$ip" dev "$dev" || echo "TSVS-ERROR addr $ip on $dev"; }
  ip link set "$dev" up || echo "TSVS-ERROR up $dev"
  tsvs_result iface ifname="$dev" mac="$(cat $d/address)" mtu="$(cat $d/mtu)" ip="$ip"
done
script=/sys/firmware/qemu_fw_cfg/by_name/opt/tsvs/script/raw
rc=0
if [ -r "$script" ]; then
  cat "$script" > /tmp/tsvs-script
  timeout "${TSVS_TIMEOUT:-300}" sh -c '. /etc/tsvs/lib.sh; . /tmp/tsvs-script'
  rc=$?
fi
echo "TSVS-EXIT $rc"
if [ "$TSVS_HOLD" = 1 ]; then
  echo "TSVS-HOLD"
  while :; do sleep 3600; done
fi
echo "TSVS-DONE"
sync
poweroff -f
