#!/usr/bin/env bash
# A rack on one machine: each Rackpoint node runs in its own network namespace (a "host")
# with its own address on a virtual bridge, so traffic crosses real (virtual) interfaces
# instead of loopback, and a partition is a link taken down. Needs root and iproute2.
#
#   deploy/netns-rack.sh up DIR N [RACKS]   N hosts, a cluster in DIR (node i on host i), all started
#   deploy/netns-rack.sh host I             make host I only (for a node added later)
#   deploy/netns-rack.sh start DIR I        start node I in host I (log DIR/node-I/node.log)
#   deploy/netns-rack.sh stop DIR I         SIGTERM node I (drains in-flight requests)
#   deploy/netns-rack.sh kill DIR I         SIGKILL node I
#   deploy/netns-rack.sh cut I              take host I's link down (partition it from everyone)
#   deploy/netns-rack.sh heal I             bring host I's link back
#   deploy/netns-rack.sh status DIR         each node: address, pid, link
#   deploy/netns-rack.sh down DIR           stop every node, remove the hosts and the bridge
#
# Host i is the namespace PREFIX-hI with address NET.I/24 on eth0; the bridge PREFIX-br holds
# NET.254 in this (the root) namespace, so `rackpoint` run here reaches every host.
# Environment: RP_PREFIX (default rp; at most 7 characters), RP_NET (default 10.77.0: the
# first three octets), RP_PORT (default 7100), RACKPOINT_BIN (folder holding rackpoint and
# rackpoint-store; default ${CARGO_TARGET_DIR:-~/.cache/rackpoint-target}/release).
set -euo pipefail

PREFIX="${RP_PREFIX:-rp}"
NET="${RP_NET:-10.77.0}"
PORT="${RP_PORT:-7100}"
BIN="${RACKPOINT_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/rackpoint-target}/release}"
BRIDGE="$PREFIX-br"
# How long `start` waits for a node's "serving" line.
START_TIMEOUT_S=20
# How long `stop` and `down` wait for a node to drain before SIGKILL.
STOP_TIMEOUT_S=30

die() { echo "netns-rack: $*" >&2; exit 1; }
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ "${#PREFIX}" -le 7 ] || die "RP_PREFIX must be at most 7 characters (interface names are at most 15)"
[[ "$NET" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "RP_NET must be three octets, like 10.77.0"

ns() { echo "$PREFIX-h$1"; }
veth() { echo "$PREFIX-v$1"; }
check_index() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 253 ] || die "host index must be 1 to 253, not '$1'"; }

bridge_up() {
  ip link show "$BRIDGE" >/dev/null 2>&1 && return
  ip link add "$BRIDGE" type bridge
  ip addr add "$NET.254/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
}

make_host() {
  local i="$1" n v
  check_index "$i"
  n="$(ns "$i")" v="$(veth "$i")"
  bridge_up
  ip netns list | grep -qx "$n\( .*\)\?" && die "host $i ($n) exists already"
  ip netns add "$n"
  ip link add "$v" type veth peer name eth0 netns "$n"
  ip link set "$v" master "$BRIDGE" up
  ip -n "$n" addr add "$NET.$i/24" dev eth0
  ip -n "$n" link set eth0 up
  ip -n "$n" link set lo up
}

start_node() {
  local dir="$1" i="$2" node log pid
  check_index "$i"
  node="$dir/node-$i"
  [ -f "$node/node.toml" ] || die "no $node/node.toml"
  [ -x "$BIN/rackpoint-store" ] || die "no $BIN/rackpoint-store (build with: cargo build --release --workspace --bins)"
  log="$node/node.log"
  local before
  before="$(grep -c "rackpoint-store serving" "$log" 2>/dev/null || true)"
  # setsid: the node outlives this script and gets no terminal signals.
  setsid ip netns exec "$(ns "$i")" "$BIN/rackpoint-store" --config "$node/node.toml" \
    </dev/null >/dev/null 2>>"$log" &
  pid=$!
  echo "$pid" >"$node/pid"
  for _ in $(seq $((START_TIMEOUT_S * 10))); do
    if [ "$(grep -c "rackpoint-store serving" "$log" 2>/dev/null || true)" -gt "${before:-0}" ]; then
      echo "node $i serving on $(listen_of "$node") in host $(ns "$i"), pid $pid, log $log"
      return
    fi
    kill -0 "$pid" 2>/dev/null || die "node $i exited at start; see $log"
    sleep 0.1
  done
  die "node $i did not say it was serving within ${START_TIMEOUT_S}s; see $log"
}

listen_of() { sed -n 's/^listen *= *"\(.*\)"/\1/p' "$1/node.toml"; }

signal_node() {
  local dir="$1" i="$2" sig="$3" pidfile="$1/node-$2/pid" pid
  [ -f "$pidfile" ] || die "node $i was not started by this script (no $pidfile)"
  pid="$(cat "$pidfile")"
  if kill -"$sig" "$pid" 2>/dev/null; then
    for _ in $(seq $((STOP_TIMEOUT_S * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      echo "node $i (pid $pid) did not stop within ${STOP_TIMEOUT_S}s of SIG$sig: killed"
    else
      echo "node $i (pid $pid) stopped by SIG$sig"
    fi
  else
    echo "node $i (pid $pid) was not running"
  fi
  rm -f "$pidfile"
}

cmd="${1:-}"
[ -n "$cmd" ] || usage
shift
case "$cmd" in
  up)
    [ $# -ge 2 ] || usage
    dir="$1" count="$2" racks="${3:-3}"
    check_index "$count"
    hosts="$(seq -s, -f "$NET.%g" 1 "$count")"
    for i in $(seq "$count"); do make_host "$i"; done
    "$BIN/rackpoint" cluster init --dir "$dir" --nodes "$count" --racks "$racks" \
      --hosts "$hosts" --base-port "$PORT"
    for i in $(seq "$count"); do start_node "$dir" "$i"; done
    echo "use: rackpoint --cluster $dir/cluster.toml status"
    ;;
  host) [ $# -eq 1 ] || usage; make_host "$1"; echo "host $1: $(ns "$1") at $NET.$1" ;;
  start) [ $# -eq 2 ] || usage; start_node "$1" "$2" ;;
  stop) [ $# -eq 2 ] || usage; signal_node "$1" "$2" TERM ;;
  kill) [ $# -eq 2 ] || usage; signal_node "$1" "$2" KILL ;;
  cut) [ $# -eq 1 ] || usage; check_index "$1"; ip link set "$(veth "$1")" down; echo "host $1 cut off" ;;
  heal) [ $# -eq 1 ] || usage; check_index "$1"; ip link set "$(veth "$1")" up; echo "host $1 back" ;;
  status)
    [ $# -eq 1 ] || usage
    for node in "$1"/node-*; do
      i="${node##*-}" pid="-" state="stopped" link="-"
      if [ -f "$node/pid" ] && kill -0 "$(cat "$node/pid")" 2>/dev/null; then
        pid="$(cat "$node/pid")" state="running"
      fi
      link="$(ip -br link show "$(veth "$i")" 2>/dev/null | awk '{print $2}')" || true
      echo "node $i $(listen_of "$node") $state pid $pid link ${link:-none}"
    done
    ;;
  down)
    [ $# -eq 1 ] || usage
    for pidfile in "$1"/node-*/pid; do
      [ -f "$pidfile" ] || continue
      i="${pidfile%/pid}" i="${i##*-}"
      signal_node "$1" "$i" TERM
    done
    for n in $(ip netns list | awk '{print $1}' | grep "^$PREFIX-h[0-9]*$" || true); do
      ip netns del "$n"
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    echo "hosts and bridge $BRIDGE removed"
    ;;
  *) usage ;;
esac
