#!/bin/sh
# What a relay's frame intake costs on this kernel: a tap behind a tc
# redirect (as pathvm's nodes take frames today) beside an AF_PACKET
# TPACKET_V3 ring on the link. One throwaway namespace with a veth pair;
# the sender on CPU 1, the receiver on CPU 0; SECONDS (default 3) each.
# Needs root and a C compiler. Prints one JSON line per run.
set -eu
SECS=${1:-3}
NS=pvprobe$$
DIR=$(mktemp -d)
BIN=$DIR/intake-probe
cc -O2 -o "$BIN" "$(dirname "$0")/intake-probe.c"
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT INT TERM
ip netns add "$NS"
ns() { ip netns exec "$NS" "$@"; }
ns ip link add vA type veth peer name vB
ns ip link set vA up
ns ip link set vB up
ns tc qdisc add dev vB ingress

# receive MODE ARGS...: start the receiver on CPU 0 and wait until it is
# ready (the caller then steers frames to it and calls finish).
receive() {
    : > "$DIR/out"
    ns taskset -c 0 "$BIN" "$@" > "$DIR/out" &
    RX=$!
    while ! grep -q ready "$DIR/out"; do sleep 0.05; done
}
finish() {
    ns taskset -c 1 "$BIN" send vA "$SECS" > "$DIR/sent"
    wait "$RX"
    grep -v ready "$DIR/out"
    cat "$DIR/sent"
}

# A tap fed by a tc ingress redirect: the node's intake today.
receive tap vB pvtap "$SECS"
ns ip link set pvtap up
ns tc filter add dev vB parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev pvtap
finish
ns tc filter del dev vB parent ffff: prio 1

# The link's own AF_PACKET ring. It sees frames before tc ingress; a node
# would steal them there (this kernel has no `gact` drop action; a redirect
# to a device that discards would do); here the host stack drops the
# unknown ethertype.
receive ring vB "$SECS"
finish
