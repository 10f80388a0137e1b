# tsvs guest command loop (test/harness/vm-switch.ts AgentGuest): run by /init as the fw_cfg script.
# Reads shell lines from the serial console and evals them; helpers below report TSVS-RESULT lines.
g_ping() {
  _pfx=; [ -n "$5" ] && _pfx="taskset $5"
  _out=$($_pfx ping -q -c "$2" -i "$3" -W 2 "$1" 2>&1 </dev/null)
  _sent=$(echo "$_out" | sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p')
  _recv=$(echo "$_out" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
  _loss=$(echo "$_out" | sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p')
  _avg=$(echo "$_out" | sed -n 's|.*min/avg/max = [0-9.]*/\([0-9.]*\)/.*|\1|p')
  tsvs_result "${4:-ping}" peer="$1" sent="${_sent:-0}" received="${_recv:-0}" loss_pct="${_loss:-100}" rtt_avg_ms="${_avg:-0}"
}
g_wait_ping() {
  _n=0; _ok=0
  while [ $_n -lt "$2" ]; do
    _n=$((_n+1))
    if ping -c 1 -W 1 "$1" >/dev/null 2>&1 </dev/null; then _ok=1; break; fi
  done
  tsvs_result reachable peer="$1" ok=$_ok tries=$_n
}
g_nc_listen() {
  rm -f /tmp/rx
  sleep 100000 </dev/null | nc -l -p "$1" > /tmp/rx &
  echo $! > /tmp/ncpid
  # return once the socket listens (IPv4 or IPv6; at most 20 s), so a sender that connects at once is not refused
  _hex=$(printf '%04X' "$1"); _n=0
  until cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -q ":$_hex [0-9A-F:]* 0A "; do
    _n=$((_n+1)); [ $_n -ge 400 ] && break
    usleep 50000
  done
}
g_nc_wait() {
  _n=0
  while kill -0 "$(cat /tmp/ncpid)" 2>/dev/null; do
    _n=$((_n+1)); [ $_n -ge 600 ] && { tsvs_result recv error=timeout bytes="$(wc -c < /tmp/rx)"; return 1; }
    usleep 200000
  done
  tsvs_result recv bytes="$(wc -c < /tmp/rx)" md5="$(md5sum /tmp/rx | cut -d' ' -f1)"
}
g_nc_send() {
  dd if=/dev/urandom of=/tmp/tx bs=65536 count=$(($3 * 16)) 2>/dev/null
  _t0=$(cut -d' ' -f1 /proc/uptime)
  _n=0
  until nc "$1" "$2" < /tmp/tx > /dev/null; do
    _n=$((_n+1)); [ $_n -ge 40 ] && { tsvs_result send error=connect-failed; return 1; }
    usleep 250000
  done
  _t1=$(cut -d' ' -f1 /proc/uptime)
  tsvs_result send bytes="$(wc -c < /tmp/tx)" md5="$(md5sum /tmp/tx | cut -d' ' -f1)" t0="$_t0" t1="$_t1"
}
g_bgping_start() {
  ping -i "$2" -W 1 "$1" </dev/null > /tmp/bgping 2>&1 &
  echo $! > /tmp/bgpid
}
g_bgping_stop() {
  # ping prints its totals on SIGINT and exits; wait for that (it is this shell's background job)
  _p=$(cat /tmp/bgpid); kill -INT "$_p"; wait "$_p" 2>/dev/null
  _sent=$(sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p' /tmp/bgping)
  _recv=$(sed -n 's/.* \([0-9]*\) packets received.*/\1/p' /tmp/bgping)
  tsvs_result bgping sent="${_sent:-0}" received="${_recv:-0}"
}
g_bgping_replies() {
  tsvs_result bgreplies n="$(grep -c 'bytes from' /tmp/bgping 2>/dev/null)"
}
g_operstate() {
  tsvs_result operstate state="$(cat /sys/class/net/$1/operstate)"
}
g_iface() {
  _d=/sys/class/net/$1
  tsvs_result iface2 ifname="$1" mac="$(cat $_d/address)" mtu="$(cat $_d/mtu)" rxqs="$(ls -d $_d/queues/rx-* | wc -l)" txqs="$(ls -d $_d/queues/tx-* | wc -l)"
}
echo TSVS-AGENT-READY
while IFS= read -r _line; do eval "$_line"; done
