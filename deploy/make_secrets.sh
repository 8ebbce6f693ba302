#!/usr/bin/env bash
# Makes the secrets a ckad deployment needs, for trying it out: random bearer tokens and a
# self-signed TLS setup (a private CA and a server certificate it signs). For production, use
# certificates from your own CA (or cert-manager) and keep the same file names.
#
#   bash deploy/make_secrets.sh [DIR]        DIR: default deploy/secrets (what compose.yaml mounts)
#
# Environment: CKAD_NAMESPACE (default "default") and CKAD_TLS_NAMES (extra DNS names or IP
# addresses for the certificate, comma-separated) name where clients will reach ckad.
#
# Writes into DIR, which must not exist yet or be empty:
#   tokens        ckad --auth-tokens: one admin, one writer and one reader token ("token role"
#                 lines); the reader's is for Prometheus (/metrics) and people at the page
#   admin.token, writer.token, reader.token   the same tokens alone, for ckactl (CKA_TOKEN),
#                 clients and Prometheus' credentials_file
#   tls.crt, tls.key            the server certificate (ckad --tls-cert/--tls-key, the router)
#   ca.crt        the CA that signed tls.crt: what clients trust (ckactl --tls-ca)
#   ca.key        the CA's private key: only to sign a new tls.crt; mounted nowhere
# The certificate names localhost, 127.0.0.1 and ::1 (probes and health checks run inside the
# container), ckad (the name the router checks on every replica), ckad-router and its Service
# names in CKAD_NAMESPACE, and CKAD_TLS_NAMES. It is valid for 365 days.
#
# DIR is private to its owner (0700). The files ckad reads are readable by all (0644) so that
# the container's user (uid 10001) can read them through compose's bind mounts; the directory
# is what keeps them from other users of this machine. ca.key stays 0600.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$here/secrets}
namespace=${CKAD_NAMESPACE:-default}
openssl=$(command -v openssl || true)
[ -n "$openssl" ] || { echo "make_secrets: openssl is not installed" >&2; exit 1; }
if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
  echo "make_secrets: $dir is not empty; remove it or name another directory" >&2
  exit 1
fi

umask 077
mkdir -p "$dir"
chmod 0700 "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# SANs: DNS names and IP addresses.
sans="DNS:localhost,IP:127.0.0.1,IP:::1,DNS:ckad"
for name in ckad-router "ckad-router.$namespace" "ckad-router.$namespace.svc" \
            "ckad-router.$namespace.svc.cluster.local"; do
  sans+=",DNS:$name"
done
IFS=',' read -r -a extra <<<"${CKAD_TLS_NAMES:-}"
for name in "${extra[@]}"; do
  [ -n "$name" ] || continue
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then sans+=",IP:$name"; else sans+=",DNS:$name"; fi
done

ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
"$openssl" req -x509 "${ec[@]}" -days 3650 -subj "/CN=ckad CA (make_secrets.sh)" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>"$tmp/log" || { cat "$tmp/log" >&2; exit 1; }
cat >"$tmp/server.ext" <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$sans
EOF
"$openssl" req "${ec[@]}" -subj "/CN=ckad" -keyout "$dir/tls.key" -out "$tmp/server.csr" \
  2>"$tmp/log" || { cat "$tmp/log" >&2; exit 1; }
"$openssl" x509 -req -in "$tmp/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
  -CAcreateserial -CAserial "$tmp/ca.srl" -days 365 -extfile "$tmp/server.ext" \
  -out "$dir/tls.crt" 2>"$tmp/log" || { cat "$tmp/log" >&2; exit 1; }

# 24 random bytes: 48 hex characters (ckad wants at least 16 printable ones).
"$openssl" rand -hex 24 >"$dir/admin.token"
"$openssl" rand -hex 24 >"$dir/writer.token"
"$openssl" rand -hex 24 >"$dir/reader.token"
{
  echo "# ckad --auth-tokens: token role. Made by deploy/make_secrets.sh on $(date -u +%F)."
  echo "$(cat "$dir/admin.token") admin"
  echo "$(cat "$dir/writer.token") writer"
  echo "$(cat "$dir/reader.token") reader"
} >"$dir/tokens"

chmod 0644 "$dir/tokens" "$dir/tls.crt" "$dir/tls.key" "$dir/ca.crt"
chmod 0600 "$dir/ca.key" "$dir/admin.token" "$dir/writer.token" "$dir/reader.token"

cat <<EOF
make_secrets: wrote $dir (certificate for $sans)

Compose (it mounts $here/secrets): docker compose -f deploy/compose.yaml up
Kubernetes (namespace $namespace):
  kubectl -n $namespace create secret generic ckad-tokens --from-file=tokens=$dir/tokens
  kubectl -n $namespace create secret generic ckad-tls --type=kubernetes.io/tls \\
      --from-file=tls.crt=$dir/tls.crt --from-file=tls.key=$dir/tls.key --from-file=ca.crt=$dir/ca.crt
ckactl:
  CKA_TOKEN=\$(cat $dir/admin.token) ckactl --tls-ca $dir/ca.crt --server 127.0.0.1:50051 list
EOF
