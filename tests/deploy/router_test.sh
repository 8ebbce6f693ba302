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

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_serving() {  # address
  for _ in $(seq 100); do
    cka --server "$1" --timeout 1 health >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "FAIL: nothing serving at $1"; exit 1
}

replica_pid=()
replica_port=()
start_replica() {  # index
  local i=$1
  "$ckad" --listen "127.0.0.1:${replica_port[$i]}" --data-dir "$work/replica$i" \
    "${tls_flags[@]}" --log-level warn >"$work/replica$i.log" 2>&1 &
  replica_pid[$i]=$!
  pids+=("$!")
  wait_serving "127.0.0.1:${replica_port[$i]}"
}

backends=""
for i in 0 1 2; do
  replica_port[$i]=$(free_port)
  mkdir -p "$work/replica$i"
  start_replica "$i"
  backends+="server 127.0.0.1:${replica_port[$i]} max_fails=0; "
done
ref_port=$(free_port)
"$ckad" --listen "127.0.0.1:$ref_port" "${tls_flags[@]}" --log-level warn \
  >"$work/reference.log" 2>&1 &
pids+=("$!")
wait_serving "127.0.0.1:$ref_port"

router_port=$(free_port)
mkdir -p "$work/nginx"
sed -e "s|@BACKENDS@|$backends|" -e "s|@LISTEN@|127.0.0.1:$router_port|" \
    -e "s|@PID@|$work/nginx/nginx.pid|" -e "s|@TMP@|$work/nginx|g" \
    -e "s|@TLS_CERT@|$secrets/tls.crt|" -e "s|@TLS_KEY@|$secrets/tls.key|" \
    -e "s|@TLS_CA@|$secrets/ca.crt|" \
    "$root/deploy/router/nginx.conf.template" >"$work/nginx/nginx.conf"
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" -e stderr >"$work/nginx.log" 2>&1 &
pids+=("$!")
router="127.0.0.1:$router_port"
wait_serving "$router"

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
  else
    got=$(matrix "$router" "session$s" lin)
    [ "$got" = "${before[${s}lin]}" ] || { echo "FAIL: session$s changed while another replica was down"; exit 1; }
  fi
done
echo "OK: with replica $victim down, only its sessions fail (UNAVAILABLE)"

start_replica "$victim"
for s in $(seq 0 9); do
  for m in lin rbf; do
    got=$(matrix "$router" "session$s" "$m")
    [ "$got" = "${before[$s$m]}" ] || { echo "FAIL: session$s $m differs after the restart"; exit 1; }
  done
done
echo "OK: after the restart on its data dir, replica $victim answers as before"
