#!/usr/bin/env bash
# Scale-out on loopback: three ckad replicas behind the real nginx router (Debian's nginx,
# deploy/router/nginx.conf.template) hashing on the session metadata, plus one single ckad as
# the reference. Secured as deployed: deploy/make_secrets.sh makes the tokens and certificates,
# every ckad serves TLS and checks bearer tokens, and the router speaks TLS on both sides.
#
# Checks: every session lives on exactly one replica; ten sessions streamed through the router
# give exactly the matrices the single ckad gives; killing one replica makes only its sessions
# fail (UNAVAILABLE) while the others go on; restarted on its data dir, it answers as before;
# through the router, a call without a token is UNAUTHENTICATED and a plaintext one fails.
#
# The page and the JSON API across replicas (http_replicas_check.py): each replica serves HTTPS
# with --http-grpc-target (the router) and --http-peers (the three replicas), and the router
# proxies HTTPS to any of them. Through every one of these four addresses: the listing holds
# all ten sessions once each, with their replica; every matrix equals gRPC through the router
# bit for bit (NaN included); a watch on another replica than the session's, and one through the
# router's HTTPS entry, get a new batch;
# no token is 401 on every route, a reader token reads and cannot create. With one replica
# killed, the listing names it and still lists the others' sessions, and its sessions answer
# 503 with gRPC's UNAVAILABLE message.
#
#   router_test.sh CKAD CKACTL
set -euo pipefail
ckad=$(readlink -f "$1")
ckactl=$(readlink -f "$2")
root=$(cd "$(dirname "$0")/../.." && pwd)
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx_bin" ] || { echo "FAIL: nginx is not installed (deploy/install_deps.sh installs it)"; exit 1; }

work=$(mktemp -d /tmp/ckad-router-test.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

secrets=$work/secrets
bash "$root/deploy/make_secrets.sh" "$secrets" >/dev/null
tls_flags=(--auth-tokens "$secrets/tokens" --tls-cert "$secrets/tls.crt" --tls-key "$secrets/tls.key")
# ckactl over TLS with the admin token; the certificate names 127.0.0.1.
export CKA_TOKEN
CKA_TOKEN=$(cat "$secrets/admin.token")
cka() { "$ckactl" --tls-ca "$secrets/ca.crt" "$@"; }
http_check() { /usr/bin/python3 "$root/tests/deploy/http_replicas_check.py" --secrets "$secrets" "$@"; }

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Polls until the address answers. The deadline only catches a hang: an ASan
# ckad on 2 cores shared with other tests may take many seconds to start.
start_deadline_s=180
wait_serving() {  # address
  local deadline=$((SECONDS + start_deadline_s))
  until cka --server "$1" --timeout 1 health >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "FAIL: nothing serving at $1 after $start_deadline_s s"; exit 1
    fi
    sleep 0.1
  done
}

wait_https() {  # address
  local deadline=$((SECONDS + start_deadline_s))
  until /usr/bin/python3 -c 'import ssl, sys, urllib.request as u
u.urlopen(f"https://{sys.argv[1]}/healthz", timeout=1,
          context=ssl.create_default_context(cafile=sys.argv[2]))' "$1" "$secrets/ca.crt" \
      >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "FAIL: no HTTPS at $1 after $start_deadline_s s"; exit 1
    fi
    sleep 0.1
  done
}

router_port=$(free_port)
router_http_port=$(free_port)
replica_pid=()
replica_port=()
replica_http_port=()
for i in 0 1 2; do
  replica_port[$i]=$(free_port)
  replica_http_port[$i]=$(free_port)
done
peers="127.0.0.1:${replica_port[0]},127.0.0.1:${replica_port[1]},127.0.0.1:${replica_port[2]}"
start_replica() {  # index
  local i=$1
  "$ckad" --listen "127.0.0.1:${replica_port[$i]}" --data-dir "$work/replica$i" \
    "${tls_flags[@]}" --http-listen "127.0.0.1:${replica_http_port[$i]}" \
    --http-grpc-target "127.0.0.1:$router_port" --http-peers "$peers" \
    --http-grpc-ca "$secrets/ca.crt" --log-level warn >"$work/replica$i.log" 2>&1 &
  replica_pid[$i]=$!
  pids+=("$!")
  wait_serving "127.0.0.1:${replica_port[$i]}"
  wait_https "127.0.0.1:${replica_http_port[$i]}"
}

backends=""
http_backends=""
http_urls=()
for i in 0 1 2; do
  mkdir -p "$work/replica$i"
  start_replica "$i"
  backends+="server 127.0.0.1:${replica_port[$i]} max_fails=0; "
  http_backends+="server 127.0.0.1:${replica_http_port[$i]}; "
  http_urls+=("https://127.0.0.1:${replica_http_port[$i]}")
done
http_urls+=("https://127.0.0.1:$router_http_port")
ref_port=$(free_port)
"$ckad" --listen "127.0.0.1:$ref_port" "${tls_flags[@]}" --log-level warn \
  >"$work/reference.log" 2>&1 &
pids+=("$!")
wait_serving "127.0.0.1:$ref_port"

mkdir -p "$work/nginx"
sed -e "s|@BACKENDS@|$backends|" -e "s|@LISTEN@|127.0.0.1:$router_port|" \
    -e "s|@HTTP_BACKENDS@|$http_backends|" -e "s|@HTTP_LISTEN@|127.0.0.1:$router_http_port|" \
    -e "s|@PID@|$work/nginx/nginx.pid|" -e "s|@TMP@|$work/nginx|g" \
    -e "s|@TLS_CERT@|$secrets/tls.crt|" -e "s|@TLS_KEY@|$secrets/tls.key|" \
    -e "s|@TLS_CA@|$secrets/ca.crt|" \
    "$root/deploy/router/nginx.conf.template" >"$work/nginx/nginx.conf"
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" -e stderr >"$work/nginx.log" 2>&1 &
pids+=("$!")
router="127.0.0.1:$router_port"
wait_serving "$router"
wait_https "127.0.0.1:$router_http_port"

# Activations: 3 batches of 2 layers for each of 10 sessions, written by numpy.
/usr/bin/python3 - "$work/npy" <<'EOF'
import os, sys
import numpy as np
out = sys.argv[1]
rng = np.random.default_rng(7)
for s in range(10):
    for b in range(3):
        d = os.path.join(out, f"s{s}", f"b{b}")
        os.makedirs(d)
        x = rng.standard_normal((16, 12))
        np.save(os.path.join(d, "conv.npy"), np.maximum(0, x @ rng.standard_normal((12, 24))))
        np.save(os.path.join(d, "fc.npy"), x @ rng.standard_normal((12, 5)))
EOF

for s in $(seq 0 9); do
  for server in "$router" "127.0.0.1:$ref_port"; do
    cka --server "$server" create "session$s" --measure lin:linear:unbiased \
      --measure rbf:rbf:biased:0.5 >/dev/null
    for b in 0 1 2; do
      cka --server "$server" send --session "session$s" --source m --batch-id "b$b" \
        --step "$b" "$work/npy/s$s/b$b" >/dev/null
    done
  done
done
# session1 also gets a source without a batch in common with m: its pairs with m are NaN.
for server in "$router" "127.0.0.1:$ref_port"; do
  cka --server "$server" send --session session1 --source n --batch-id z0 --step 0 \
    "$work/npy/s1/b0" >/dev/null
done

# Sticky: each session is on exactly one replica.
declare -A owner
for s in $(seq 0 9); do
  found=()
  for i in 0 1 2; do
    if cka --server "127.0.0.1:${replica_port[$i]}" get "session$s" >/dev/null 2>&1; then
      found+=("$i")
    fi
  done
  if [ "${#found[@]}" -ne 1 ]; then
    echo "FAIL: session$s is on replicas [${found[*]}], expected exactly one"; exit 1
  fi
  owner[$s]=${found[0]}
done
counts=$(for i in 0 1 2; do n=0; for s in $(seq 0 9); do [ "${owner[$s]}" = "$i" ] && n=$((n+1)); done; printf '%s ' "$n"; done)
echo "sessions per replica: $counts"
# The router spreads sessions by their metadata: with no metadata all would share one replica.
if [ "$(tr ' ' '\n' <<<"$counts" | grep -c '^[1-9]')" -lt 2 ]; then
  echo "FAIL: all sessions landed on one replica; is x-cka-session metadata sent?"; exit 1
fi

matrix() {  # server session measure
  cka --server "$1" --timeout 5 matrix "$2" --measure "$3" --format json --precision 17
}

declare -A before
for s in $(seq 0 9); do
  for m in lin rbf; do
    got=$(matrix "$router" "session$s" "$m")
    want=$(matrix "127.0.0.1:$ref_port" "session$s" "$m")
    if [ "$got" != "$want" ]; then
      echo "FAIL: session$s $m through the router differs from the single ckad"
      echo " router: $got"; echo " single: $want"; exit 1
    fi
    before[$s$m]=$got
  done
done
echo "OK: 10 sessions through the router equal the single ckad"

# The router passes the bearer token to ckad, which checks it; it serves only TLS.
if out=$(CKA_TOKEN="" cka --server "$router" --timeout 5 get session0 2>&1); then
  echo "FAIL: a call without a token was answered through the router"; exit 1
fi
grep -q UNAUTHENTICATED <<<"$out" || { echo "FAIL: without a token: expected UNAUTHENTICATED, got: $out"; exit 1; }
if CKA_TOKEN="" "$ckactl" --server "$router" --timeout 3 get session0 >/dev/null 2>&1; then
  echo "FAIL: the router answered a plaintext call"; exit 1
fi
echo "OK: through the router, no token is UNAUTHENTICATED and plaintext is refused"

# The JSON API of every replica and of the router's HTTPS entry.
owners_arg=""
for s in $(seq 0 9); do owners_arg+="session$s=127.0.0.1:${replica_port[${owner[$s]}]},"; done
mkdir -p "$work/expect"
for s in $(seq 0 9); do
  for m in lin rbf; do printf '%s\n' "${before[$s$m]}" >"$work/expect/session$s.$m.json"; done
done
http_check listing --url "${http_urls[@]}" --owners "${owners_arg%,}"
http_check matrices --url "${http_urls[@]}" --expect "$work/expect"
http_check auth --url "${http_urls[@]}" --session session0
if out=$(CKA_TOKEN=$(cat "$secrets/reader.token") cka --server "$router" --timeout 5 \
           create readonly --measure lin:linear:unbiased 2>&1); then
  echo "FAIL: a reader token created a session through the router"; exit 1
fi
grep -q PERMISSION_DENIED <<<"$out" || { echo "FAIL: reader create: expected PERMISSION_DENIED, got: $out"; exit 1; }
echo "OK: a reader token cannot create a session (PERMISSION_DENIED)"

# Kill the replica that owns session0 (SIGKILL: no drain).
victim=${owner[0]}
sleep 1.5  # the replicas' state of the batches above is on disk
kill -9 "${replica_pid[$victim]}"
wait "${replica_pid[$victim]}" 2>/dev/null || true
for s in $(seq 0 9); do
  if [ "${owner[$s]}" = "$victim" ]; then
    if out=$(matrix "$router" "session$s" lin 2>&1); then
      echo "FAIL: session$s answered through the router although its replica is dead"; exit 1
    fi
    if ! grep -q UNAVAILABLE <<<"$out"; then
      echo "FAIL: session$s on the dead replica: expected UNAVAILABLE, got: $out"; exit 1
    fi
    mkdir -p "$work/errors"
    printf '%s\n' "$out" >"$work/errors/session$s"
  else
    got=$(matrix "$router" "session$s" lin)
    [ "$got" = "${before[${s}lin]}" ] || { echo "FAIL: session$s changed while another replica was down"; exit 1; }
  fi
done
echo "OK: with replica $victim down, only its sessions fail (UNAVAILABLE)"
alive_urls=()
for i in 0 1 2; do
  [ "$i" = "$victim" ] || alive_urls+=("https://127.0.0.1:${replica_http_port[$i]}")
done
alive_urls+=("https://127.0.0.1:$router_http_port")
http_check listing --url "${alive_urls[@]}" --owners "${owners_arg%,}" \
  --down "127.0.0.1:${replica_port[$victim]}"
http_check unavailable --url "${alive_urls[@]}" --errors "$work/errors"

start_replica "$victim"
for s in $(seq 0 9); do
  for m in lin rbf; do
    got=$(matrix "$router" "session$s" "$m")
    [ "$got" = "${before[$s$m]}" ] || { echo "FAIL: session$s $m differs after the restart"; exit 1; }
  done
done
echo "OK: after the restart on its data dir, replica $victim answers as before"
# The replicas' channels to it reconnect within seconds (a poll that only catches hangs).
for _ in $(seq 300); do
  http_check listing --url "${http_urls[@]}" --owners "${owners_arg%,}" >/dev/null 2>&1 && break
  sleep 0.2
done
http_check listing --url "${http_urls[@]}" --owners "${owners_arg%,}"

# A watch through another replica than the session's (and through the router's HTTPS entry)
# sees a batch sent through the router.
cka --server "$router" create watched --measure lin:linear:unbiased >/dev/null
cka --server "$router" send --session watched --source m --batch-id b0 --step 0 \
  "$work/npy/s0/b0" >/dev/null
for i in 0 1 2; do
  if cka --server "127.0.0.1:${replica_port[$i]}" get watched >/dev/null 2>&1; then w=$i; fi
done
send_more() {  # batch: a script that sends it through the router and prints the matrix file
  cat >"$work/send_$1.sh" <<EOF
set -e
"$ckactl" --tls-ca "$secrets/ca.crt" --server "$router" send --session watched --source m \\
  --batch-id $1 --step ${1#b} "$work/npy/s0/$1" >/dev/null
"$ckactl" --tls-ca "$secrets/ca.crt" --server "$router" matrix watched --measure lin \\
  --format json --precision 17 >"$work/watched_$1.json"
echo "$work/watched_$1.json"
EOF
  echo "bash $work/send_$1.sh"
}
http_check watch --url "https://127.0.0.1:${replica_http_port[$(((w + 1) % 3))]}" \
  --session watched --measure lin --then "$(send_more b1)"
# And through the router's HTTPS entry (nginx must pass the events on at once).
http_check watch --url "https://127.0.0.1:$router_http_port" --session watched --measure lin \
  --then "$(send_more b2)"
