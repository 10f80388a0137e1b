# tsvs guest helpers
# tsvs_result NAME KEY=VALUE...  prints TSVS-RESULT {"name":NAME,"KEY":VALUE,...}
# Values that look like decimal numbers of at most 15 digits each side of the point become JSON
# numbers, everything else (hashes, MACs, "007") strings.
tsvs_result() {
  _j="{\"name\":\"$1\""; shift
  for _kv in "$@"; do
    _k=${_kv%%=*}; _v=${_kv#*=}
    if ! printf '%s' "$_v" | grep -Eq '^-?(0|[1-9][0-9]{0,14})(\.[0-9]{1,15})?$'; then
      _v="\"$(printf '%s' "$_v" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr -d '\r\n')\""
    fi
    _j="$_j,\"$_k\":$_v"
  done
  echo "TSVS-RESULT $_j}"
}
# tsvs_wait_ping ADDR SECONDS  waits until ADDR answers one ping; returns 1 on timeout
tsvs_wait_ping() {
  _n=0
  while ! ping -c 1 -W 1 "$1" >/dev/null 2>&1; do
    _n=$((_n+1)); [ $_n -ge "$2" ] && return 1
  done
  return 0
}
# tsvs_pci_bind ADDR DRIVER  moves PCI device ADDR (e.g. 0000:00:02.0) to DRIVER (uio_pci_generic,
# virtio-pci): unbind from its current driver, driver_override, drivers_probe. Returns 1 on failure.
tsvs_pci_bind() {
  _d=/sys/bus/pci/devices/$1
  [ -e "$_d" ] || { echo "TSVS-ERROR no PCI device $1"; return 1; }
  [ -e "$_d/driver" ] && echo "$1" > "$_d/driver/unbind"
  echo "$2" > "$_d/driver_override"
  echo "$1" > /sys/bus/pci/drivers_probe
  [ "$(basename "$(readlink "$_d/driver")")" = "$2" ] || { echo "TSVS-ERROR $1 did not bind to $2"; return 1; }
}
