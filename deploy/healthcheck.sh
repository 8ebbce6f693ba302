#!/bin/sh
# The container's health check (Docker HEALTHCHECK and the Kubernetes probes): asks ckad's
# standard gRPC health service on loopback, which needs no token. Over TLS, trusting
# $CKAD_HEALTH_CA (default /etc/ckad/tls/ca.crt) and expecting the certificate to name
# $CKAD_HEALTH_SERVER_NAME (default localhost), when that CA file is mounted; in plaintext
# otherwise (a ckad run with --allow-insecure and no TLS).
ca=${CKAD_HEALTH_CA:-/etc/ckad/tls/ca.crt}
if [ -r "$ca" ]; then
  exec /usr/local/bin/ckactl --server 127.0.0.1:50051 --timeout 2 --tls-ca "$ca" \
    --tls-server-name "${CKAD_HEALTH_SERVER_NAME:-localhost}" health
fi
exec /usr/local/bin/ckactl --server 127.0.0.1:50051 --timeout 2 health
