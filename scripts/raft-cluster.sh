#!/usr/bin/env bash
# A three-node walmdb-raft cluster on 127.0.0.1, end to end, over the example server's HTTP API
# (raft/src/bin/walmdb-raft-node.rs): builds the binary (release), starts three nodes in a
# temporary directory, initializes node 1 alone and adds nodes 2 and 3 (learner, then voter),
# writes KEYS keys through the leader, reads each back from every node (linearizable: a
# follower answers 421 naming the leader, and the read is retried there; then local reads
# within a staleness bound), compares the nodes' digests, stops the nodes (SIGTERM: a clean
# shutdown) and prints PASS. Exits non-zero on any failure; the nodes are killed on exit.
#
#   bash scripts/raft-cluster.sh
#   KEYS=500 bash scripts/raft-cluster.sh
#
# Needs curl. Each node listens on ports the OS picks (127.0.0.1:0) and prints them; the
# script reads them from the node's log.
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS="${KEYS:-100}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET_DIR/release/walmdb-raft-node"
export CARGO_TERM_COLOR=never

say() { echo "raft-cluster: $*"; }
die() {
    say "FAIL: $*"
    exit 1
}

say "building walmdb-raft-node (release)"
cargo build --release -p walmdb-raft --bin walmdb-raft-node
[ -x "$BIN" ] || die "no binary at $BIN"

WORK="$(mktemp -d)"
chmod 700 "$WORK"
declare -A PID RAFT HTTP
STARTED=$(date +%s)

cleanup() {
    local status=$?
    for id in "${!PID[@]}"; do kill -TERM "${PID[$id]}" 2>/dev/null || true; done
    for id in "${!PID[@]}"; do
        for _ in $(seq 50); do kill -0 "${PID[$id]}" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "${PID[$id]}" 2>/dev/null || true
        wait "${PID[$id]}" 2>/dev/null || true
    done
    if [ "$status" -ne 0 ]; then
        for log in "$WORK"/n*.log; do
            [ -f "$log" ] || continue
            echo "---- $log (last lines)"
            tail -n 20 "$log"
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# http METHOD URL [BODY]: sets BODY and STATUS (000: no answer).
http() {
    local out args=(-s -m 30 -w '\n%{http_code}' -X "$1" -H 'Content-Type: application/json')
    if [ $# -ge 3 ]; then args+=(--data "$3"); fi
    out=$(curl "${args[@]}" "$2") || out=$'\n000'
    BODY="${out%$'\n'*}"
    STATUS="${out##*$'\n'}"
}

# field NAME: the JSON string or number field NAME of BODY (flat lookup, enough here).
field() {
    printf '%s' "$BODY" | sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\)\"\{0,1\}.*/\1/p"
}

start_node() {
    local id=$1 dir="$WORK/n$1"
    mkdir -m 700 "$dir"
    "$BIN" --id "$id" --dir "$dir" --raft-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
        --snapshot-every 50 >"$WORK/n$id.log" 2>&1 &
    PID[$id]=$!
    local line=""
    for _ in $(seq 100); do
        line=$(grep -so 'Raft on [^,]*, HTTP on [^,]*' "$WORK/n$id.log" || true)
        [ -n "$line" ] && break
        kill -0 "${PID[$id]}" 2>/dev/null || die "node $id exited at start"
        sleep 0.1
    done
    [ -n "$line" ] || die "node $id did not start within 10 s"
    RAFT[$id]=$(echo "$line" | sed 's/Raft on \([^,]*\),.*/\1/')
    HTTP[$id]=$(echo "$line" | sed 's/.*HTTP on //')
    say "node $id: Raft ${RAFT[$id]}, HTTP ${HTTP[$id]}"
}

# until_ok TRIES METHOD URL [BODY]: retries until 200 (a new leader may lack its lease).
until_ok() {
    local tries=$1
    shift
    for _ in $(seq "$tries"); do
        http "$@"
        [ "$STATUS" = 200 ] && return 0
        sleep 0.2
    done
    die "$1 $2: HTTP $STATUS $BODY"
}

for id in 1 2 3; do start_node "$id"; done

say "initializing node 1, then adding nodes 2 and 3 as learners and making them voters"
until_ok 5 POST "http://${HTTP[1]}/init" "{\"1\":\"${RAFT[1]}\"}"
for _ in $(seq 100); do
    http GET "http://${HTTP[1]}/metrics"
    [ "$(field state)" = Leader ] && break
    sleep 0.1
done
[ "$(field state)" = Leader ] || die "node 1 did not become leader: $BODY"
http GET "http://${HTTP[1]}/read_local?table=kv&key=none&max_staleness_ms=1000"
[ "$STATUS" = 200 ] || die "a local read on a one-node cluster: HTTP $STATUS $BODY"
for id in 2 3; do
    until_ok 25 POST "http://${HTTP[1]}/add_learner" \
        "{\"id\":$id,\"addr\":\"${RAFT[$id]}\",\"blocking\":true}"
done
until_ok 25 POST "http://${HTTP[1]}/change_membership" '{"voters":[1,2,3],"retain":false}'
LEADER_HTTP="${HTTP[1]}"

say "writing $KEYS keys through the leader"
for i in $(seq "$KEYS"); do
    until_ok 25 POST "http://$LEADER_HTTP/write" "{\"table\":\"kv\",\"key\":\"key-$i\",\"value\":\"value-$i\"}"
done
say "last write: $BODY"

http POST "http://${HTTP[2]}/write" '{"table":"kv","key":"k","value":"v"}'
[ "$STATUS" = 421 ] || die "a write to a follower: HTTP $STATUS $BODY"
[ "$(field leader_http)" = "$LEADER_HTTP" ] || die "a follower named another leader: $BODY"

say "reading every key back through every node (linearizable; followers redirect)"
for id in 1 2 3; do
    for i in $(seq "$KEYS"); do
        http GET "http://${HTTP[$id]}/read?table=kv&key=key-$i"
        if [ "$STATUS" = 421 ]; then
            redirect="$(field leader_http)"
            [ -n "$redirect" ] || die "node $id refused a read without naming the leader: $BODY"
            http GET "http://$redirect/read?table=kv&key=key-$i"
        fi
        [ "$STATUS" = 200 ] && [ "$(field value)" = "value-$i" ] ||
            die "read key-$i via node $id: HTTP $STATUS $BODY"
    done
done

say "reading every key from each node's own data (max staleness 2 s)"
sleep 0.5
for id in 1 2 3; do
    for i in $(seq "$KEYS"); do
        http GET "http://${HTTP[$id]}/read_local?table=kv&key=key-$i&max_staleness_ms=2000"
        [ "$STATUS" = 200 ] && [ "$(field value)" = "value-$i" ] ||
            die "local read of key-$i on node $id: HTTP $STATUS $BODY"
    done
done

say "comparing digests"
same=""
for _ in $(seq 50); do
    digests=""
    for id in 1 2 3; do
        http GET "http://${HTTP[$id]}/digest"
        [ "$STATUS" = 200 ] || die "digest of node $id: HTTP $STATUS $BODY"
        digests="$digests $(field digest)/$(field entries)"
    done
    read -r d1 d2 d3 <<<"$digests"
    if [ "$d1" = "$d2" ] && [ "$d2" = "$d3" ]; then
        same="$d1"
        break
    fi
    sleep 0.1
done
[ -n "$same" ] || die "the nodes' digests differ:$digests"
[ "${same#*/}" = "$KEYS" ] || die "digest $same covers ${same#*/} pairs, not $KEYS"
say "digest (all three nodes): $same"
http GET "http://$LEADER_HTTP/metrics"
say "leader metrics: $BODY"

say "stopping the nodes (SIGTERM)"
for id in 1 2 3; do kill -TERM "${PID[$id]}"; done
for id in 1 2 3; do
    wait "${PID[$id]}" || die "node $id exited with status $?"
    unset "PID[$id]"
done
say "PASS ($(($(date +%s) - STARTED)) s after the build)"
