#!/usr/bin/env bash
# `make demo`: real VMs on real KVM. A VM with a tap in a network namespace
# answers ping from that namespace; bytes echo over a console; timings.
# Everything the demo creates is removed on exit, also on failure.
set -euo pipefail
PATHVM=${1:-target/release/pathvm}
IMAGE=${2:-images/out/agent.elf}
NS="pathvm-demo-$$"
TAP="pvdemo0"
VM_PID=""

TOPO="tests/topologies/line3.toml"
TNAME="demo$$"
TNAME=${TNAME:0:8}
MESH="tests/topologies/mesh6.toml"
MNAME="dm$$"
MNAME=${MNAME:0:8}
MESH_PIDS=""
EXITS="tests/topologies/exit6.toml"
XNAME="dx$$"
XNAME=${XNAME:0:8}

cleanup() {
    [ -n "$VM_PID" ] && kill "$VM_PID" 2>/dev/null && wait "$VM_PID" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    [ -n "$MESH_PIDS" ] && kill $MESH_PIDS 2>/dev/null || true
    "$PATHVM" topo down "$TOPO" --name "$TNAME" 2>/dev/null || true
    "$PATHVM" topo down "$MESH" --name "$MNAME" 2>/dev/null || true
    "$PATHVM" topo down "$EXITS" --name "$XNAME" 2>/dev/null || true
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

# Waits (up to 20 s) until FILE holds COUNT (default 1) events of KIND: the
# daemons' --events are how programs learn they are up, not their logs.
wait_event() { # FILE KIND [COUNT]
    local i n
    for i in $(seq 200); do
        n=$(grep -c "\"event\":\"$2\"" "$1" 2>/dev/null || true)
        [ "${n:-0}" -ge "${3:-1}" ] && return 0
        sleep 0.1
    done
    echo "no $2 event in $1 within 20 s"
    exit 1
}

# Waits (up to 20 s) until something listens on PORT in namespace NS.
wait_port() { # NS PORT
    local i
    for i in $(seq 200); do
        ip netns exec "$1" bash -c "exec 3<>/dev/tcp/127.0.0.1/$2" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on port $2 in $1 within 20 s"
    exit 1
}

# The protocol of the last request in an edge's events FILE.
last_protocol() { # FILE
    grep '"event":"protocol_chosen"' "$1" | tail -n 1 | grep -o '"protocol":"[a-z]*"' | head -n 1 | cut -d'"' -f4
}

step "1. echo: 1 MiB through a VM's virtio-console, checked by sha256"
head -c 1048576 /dev/urandom > "/tmp/$NS.in"
start=$(date +%s%N)
"$PATHVM" boot --image "$IMAGE" --role echo --console stdio --metrics "/tmp/$NS.echo.json" < "/tmp/$NS.in" > "/tmp/$NS.out"
end=$(date +%s%N)
echo "sent     $(sha256sum < "/tmp/$NS.in" | cut -c1-16)…"
echo "echoed   $(sha256sum < "/tmp/$NS.out" | cut -c1-16)…"
cmp -s "/tmp/$NS.in" "/tmp/$NS.out" && echo "identical: yes" || { echo "identical: NO"; exit 1; }
echo "whole run (exec, boot, 1 MiB, exit): $(( (end - start) / 1000000 )) ms; spawn to ready: $(grep -o '"ready_us": [0-9.]*' "/tmp/$NS.echo.json" | cut -d' ' -f2) µs"
rm -f "/tmp/$NS.in" "/tmp/$NS.out" "/tmp/$NS.echo.json"

step "2. ping: a VM whose virtio-net is a tap in network namespace $NS"
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
ip netns exec "$NS" ip tuntap add "$TAP" mode tap vnet_hdr
ip netns exec "$NS" ip addr add 10.200.0.1/24 dev "$TAP"
ip netns exec "$NS" ip link set "$TAP" up
ip netns exec "$NS" "$PATHVM" boot --image "$IMAGE" --role ping --tap "$TAP" --ip 10.200.0.2/24 \
    --metrics "/tmp/$NS.ping.json" < /dev/null &
VM_PID=$!
for _ in $(seq 50); do ip netns exec "$NS" ping -c1 -W1 10.200.0.2 >/dev/null 2>&1 && break; done
ip netns exec "$NS" ping -c 5 -i 0.2 10.200.0.2
kill -TERM "$VM_PID"; wait "$VM_PID" || true; VM_PID=""
echo "virtio-net counters: $(tr -d ' \n' < "/tmp/$NS.ping.json" | grep -o '"net":\[{[^}]*}')"
rm -f "/tmp/$NS.ping.json"

step "3. an app's connection in a VM of its own: curl -> SOCKS5 edge on A -> relay VM on B -> VM on C -> HTTP server on C"
"$PATHVM" topo up "$TOPO" --name "$TNAME"
D="/tmp/$TNAME"
mkdir -p "$D/www"
head -c 10485760 /dev/urandom > "$D/www/file.bin"
ip netns exec "$TNAME-c" python3 -m http.server 8080 --bind 0.0.0.0 --directory "$D/www" > /dev/null 2>&1 &
HTTP_PID=$!
ip netns exec "$TNAME-c" "$PATHVM" node --image "$IMAGE" --config "/run/pathvm/$TNAME/c.toml" --quiet --metrics "$D/c.json" \
    --events "$D/c.events" < /dev/null > /dev/null &
C_PID=$!
ip netns exec "$TNAME-b" "$PATHVM" node --image "$IMAGE" --config "/run/pathvm/$TNAME/b.toml" --quiet --metrics "$D/b.json" \
    --events "$D/b.events" < /dev/null > /dev/null &
B_PID=$!
ip netns exec "$TNAME-a" "$PATHVM" edge --image "$IMAGE" --config "/run/pathvm/$TNAME/a.toml" \
    --events "$D/edge.events" 2> "$D/edge.log" &
E_PID=$!
wait_event "$D/c.events" node_up; wait_event "$D/b.events" node_up; wait_event "$D/edge.events" edge_up
wait_port "$TNAME-c" 8080
echo "-- the decision for curl asking for low latency:"
"$PATHVM" explain --app curl --criteria latency=require --manifests /nonexistent
before=$(ip netns exec "$TNAME-b" awk '/^Ip:/ {n++} /^Ip:/ && n==2 {print $3}' /proc/net/snmp)
echo "-- curl --socks5-hostname 127.0.0.1:1080 --proxy-user pathvm:latency=require http://c:8080/file.bin"
start=$(date +%s%N)
ip netns exec "$TNAME-a" curl -s --max-time 60 --socks5-hostname 127.0.0.1:1080 --proxy-user pathvm:latency=require http://c:8080/file.bin -o "$D/got.bin"
end=$(date +%s%N)
echo "10 MiB in $(( (end - start) / 1000000 )) ms; sha256 sent $(sha256sum < "$D/www/file.bin" | cut -c1-16)…, received $(sha256sum < "$D/got.bin" | cut -c1-16)…"
cmp -s "$D/www/file.bin" "$D/got.bin" && echo "identical: yes" || { echo "identical: NO"; exit 1; }
echo "-- the same, transparently: pathvm run -- curl http://c:8080/file.bin (the app in a sandbox whose only way out is pathvm)"
ip netns exec "$TNAME-a" "$PATHVM" run -- curl -s --max-time 60 http://c:8080/file.bin | cmp -s - "$D/www/file.bin" && echo "identical: yes"
after=$(ip netns exec "$TNAME-b" awk '/^Ip:/ {n++} /^Ip:/ && n==2 {print $3}' /proc/net/snmp)
wait_event "$D/edge.events" vm_ended 2
kill -TERM $E_PID $B_PID $C_PID $HTTP_PID; wait $E_PID $B_PID $C_PID $HTTP_PID 2>/dev/null || true
echo "-- the edge's log (one VM per request):"
sed 's/^/   /' "$D/edge.log"
echo "-- the path: B's relay VM forwarded $(grep -o '"forwarded": [0-9]*' "$D/b.json" | cut -d' ' -f2) packets, B's host IP stack received $((after - before)); C's VM took $(grep -o '"delivered": [0-9]*' "$D/c.json" | cut -d' ' -f2) packets"
rm -rf "$D"
"$PATHVM" topo down "$TOPO" --name "$TNAME"

step "4. beyond the overlay: exits C and D, each with a service host that runs no pathvm (exit6)"
"$PATHVM" topo up "$EXITS" --name "$XNAME"
D="/tmp/$XNAME"
mkdir -p "$D/www"
head -c 4194304 /dev/urandom > "$D/www/file.bin"
XPIDS=""
for svc in s t; do
    ip netns exec "$XNAME-$svc" python3 -m http.server 8080 --bind :: --directory "$D/www" > /dev/null 2>&1 &
    XPIDS="$XPIDS $!"
done
for h in c d f e b; do
    ip netns exec "$XNAME-$h" "$PATHVM" node --image "$IMAGE" --config "/run/pathvm/$XNAME/$h.toml" --quiet \
        --events "$D/$h.events" < /dev/null > /dev/null &
    XPIDS="$XPIDS $!"
done
ip netns exec "$XNAME-a" "$PATHVM" edge --image "$IMAGE" --config "/run/pathvm/$XNAME/a.toml" \
    --events "$D/edge.events" 2> "$D/edge.log" &
XPIDS="$XPIDS $!"
for h in c d f e b; do wait_event "$D/$h.events" node_up; done
wait_event "$D/edge.events" edge_up
wait_port "$XNAME-s" 8080; wait_port "$XNAME-t" 8080
echo "-- where svc.test:8080 goes (a name the edge host cannot resolve; its exits can):"
"$PATHVM" explain --app curl --to svc.test:8080 --config "/run/pathvm/$XNAME/a.toml" --manifests /nonexistent | tail -n 3
echo "-- curl --socks5-hostname 127.0.0.1:1080 http://svc.test:8080/file.bin (the name travels; exit C resolves it)"
ip netns exec "$XNAME-a" curl -s --max-time 60 --socks5-hostname 127.0.0.1:1080 http://svc.test:8080/file.bin -o "$D/got.bin"
cmp -s "$D/www/file.bin" "$D/got.bin" && echo "identical: yes" || { echo "identical: NO"; exit 1; }
echo "   exit_chosen: $(grep '"event":"exit_chosen"' "$D/edge.events" | tail -n 1 | grep -o '"why":"[^"]*"')"
echo "-- pathvm run -- busybox wget (statically linked, its own resolver): every socket of the app goes through pathvm"
ip netns exec "$XNAME-a" "$PATHVM" run --events "$D/run.events" -- busybox wget -q -O - http://svc.test:8080/file.bin \
    | cmp -s - "$D/www/file.bin" && echo "identical: yes" || { echo "identical: NO"; exit 1; }
grep -E '"event":"run_(dns|connect)"' "$D/run.events" | sed 's/^/   /'
echo "-- pathvm run -- dig @192.0.2.53 svc.test (a DNS server of the app's choosing: answered by pathvm, never sent)"
ip netns exec "$XNAME-a" "$PATHVM" run -- dig +short +tries=1 @192.0.2.53 svc.test A | sed 's/^/   virtual address: /'
echo "-- port 22 is refused by every exit's policy: SOCKS reply 2"
ip netns exec "$XNAME-a" curl -s --max-time 20 --socks5-hostname 127.0.0.1:1080 http://10.232.0.2:22/ || true
echo "   refused: $(grep '"event":"refused"' "$D/edge.events" | tail -n 1 | grep -o '"reason":"[^"]*"')"
kill -TERM $XPIDS 2>/dev/null; wait $XPIDS 2>/dev/null || true
rm -rf "$D"
"$PATHVM" topo down "$EXITS" --name "$XNAME"

step "5. five routing protocols on mesh6 (a - r1 - r2 - c fast, a - r3 - r4 - c wide, r2 - r3 across)"
"$PATHVM" topo up "$MESH" --name "$MNAME"
D="/tmp/$MNAME"
mkdir -p "$D/www"
head -c 10485760 /dev/urandom > "$D/www/file.bin"
ip netns exec "$MNAME-c" python3 -m http.server 8080 --bind 0.0.0.0 --directory "$D/www" > /dev/null 2>&1 &
MESH_PIDS="$!"
declare -A NODE_PID
for h in c r1 r2 r3 r4; do
    ip netns exec "$MNAME-$h" "$PATHVM" node --image "$IMAGE" --config "/run/pathvm/$MNAME/$h.toml" --quiet \
        --metrics "$D/$h.json" --events "$D/$h.events" < /dev/null > /dev/null &
    NODE_PID[$h]=$!
    MESH_PIDS="$MESH_PIDS $!"
done
ip netns exec "$MNAME-a" "$PATHVM" edge --image "$IMAGE" --config "/run/pathvm/$MNAME/a.toml" \
    --events "$D/edge.events" 2> "$D/edge.log" &
MESH_PIDS="$MESH_PIDS $!"
for h in c r1 r2 r3 r4; do wait_event "$D/$h.events" node_up; done
wait_event "$D/edge.events" edge_up
wait_port "$MNAME-c" 8080
sleep 1 # link state settles: every node floods its links each second
fetch() { # criteria label
    local start end
    start=$(date +%s%N)
    ip netns exec "$MNAME-a" curl -s --max-time 60 --socks5-hostname 127.0.0.1:1080 --proxy-user "pathvm:$1" \
        http://c:8080/file.bin -o "$D/got.bin" || true
    end=$(date +%s%N)
    local same=NO
    cmp -s "$D/www/file.bin" "$D/got.bin" && same=yes
    printf '   %-38s -> %-9s 10 MiB in %5d ms, identical: %s\n' "$1" \
        "$(last_protocol "$D/edge.events")" $(( (end - start) / 1000000 )) "$same"
    [ "$same" = yes ] || exit 1
}
for c in latency=require bandwidth=prefer reliability=require,bandwidth=prefer reliability=prefer anonymity=require; do
    fetch "$c"
done
echo "-- redundant while relay r1 is killed 150 ms into the transfer:"
( sleep 0.15; kill -TERM "${NODE_PID[r1]}" ) &
fetch reliability=prefer
sleep 2
echo "-- shortest once r1 is gone (its neighbours flooded it; the request VM asked them):"
fetch latency=require
echo "-- the edge's log:"
sed 's/^/   /' "$D/edge.log"
kill -TERM $MESH_PIDS 2>/dev/null; wait $MESH_PIDS 2>/dev/null || true; MESH_PIDS=""
for h in r2 r3 r4; do
    echo "   relay $h: forwarded $(grep -o '"forwarded": [0-9]*' "$D/$h.json" | cut -d' ' -f2), onion circuits $(grep -o '"circuits": [0-9]*' "$D/$h.json" | cut -d' ' -f2), link-state updates taken $(grep -o '"lsas_accepted": [0-9]*' "$D/$h.json" | cut -d' ' -f2)"
done
rm -rf "$D"
"$PATHVM" topo down "$MESH" --name "$MNAME"

step "6. relay beside kernel forwarding on the same hosts"
"$PATHVM" bench relay --json --seconds 1 --image "$IMAGE"

step "7. spawn time: 50 VMs one after another, beside QEMU microvm on the same image"
"$PATHVM" bench spawn -n 50 --compare-qemu --json --image "$IMAGE"
