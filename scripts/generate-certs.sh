#!/usr/bin/env bash
# The runbook's "Certificate Rotation": writes a new TLS key and certificate for the gateway to certs/server.key and
# certs/server.crt, for the `helixagent-tls` Secret (`kubectl create secret tls helixagent-tls --cert=certs/server.crt
# --key=certs/server.key ...`) or for Kestrel directly (Kestrel__Certificates__Default__Path / __KeyPath).
#
# The certificate is signed by a private CA kept beside it (certs/ca.crt, certs/ca.key), made on the first run and
# reused afterwards: clients that trust certs/ca.crt keep trusting the gateway across rotations. Each run makes a new
# server key. To sign with your own CA instead, put its ca.crt and ca.key into the folder first. To use a public CA,
# do not use this script: put that certificate and key into the Secret the same way.
#
# Settings (environment):
#   HELIXAGENT_CERT_DIR        output folder (default: certs, relative to the current directory)
#   HELIXAGENT_CERT_DAYS       server certificate lifetime in days (default 90)
#   HELIXAGENT_CERT_HOSTS      extra DNS names or IP addresses, comma-separated (e.g. llm.example.com,10.0.0.5)
#   HELIXAGENT_NAMESPACE       Kubernetes namespace for the Service names (default: default)
set -euo pipefail

dir="${HELIXAGENT_CERT_DIR:-certs}"
days="${HELIXAGENT_CERT_DAYS:-90}"
namespace="${HELIXAGENT_NAMESPACE:-default}"
extra="${HELIXAGENT_CERT_HOSTS:-}"

command -v openssl >/dev/null || { echo "generate-certs: needs openssl (apt-get install openssl)" >&2; exit 1; }
[[ "$days" =~ ^[1-9][0-9]{0,4}$ ]] || { echo "generate-certs: HELIXAGENT_CERT_DAYS must be a whole number of days, not '$days'" >&2; exit 2; }
[[ "$namespace" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || { echo "generate-certs: HELIXAGENT_NAMESPACE '$namespace' is not a Kubernetes namespace name" >&2; exit 2; }

# Subject alternative names: the Service inside the cluster, localhost, and what the operator adds.
sans="DNS:helixagent,DNS:helixagent.$namespace,DNS:helixagent.$namespace.svc,DNS:helixagent.$namespace.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:::1"
IFS=',' read -r -a hosts <<<"$extra"
for h in "${hosts[@]}"; do
  h="${h// /}"
  [ -z "$h" ] && continue
  if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then
    sans="$sans,IP:$h"
  elif [[ "$h" =~ ^(\*\.)?[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$ ]]; then
    sans="$sans,DNS:$h"
  else
    echo "generate-certs: '$h' in HELIXAGENT_CERT_HOSTS is neither a DNS name nor an IP address" >&2
    exit 2
  fi
done

mkdir -p "$dir"
umask 077
if [ ! -f "$dir/ca.crt" ] || [ ! -f "$dir/ca.key" ]; then
  [ -f "$dir/ca.crt" ] || [ -f "$dir/ca.key" ] && { echo "generate-certs: $dir has only one of ca.crt and ca.key" >&2; exit 1; }
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 3650 \
    -subj "/O=HelixAgent/CN=HelixAgent private CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  echo "generate-certs: new private CA $dir/ca.crt (10 years); give it to clients that call the gateway over TLS"
fi

# New key and certificate beside the current ones; replace them only when both are complete.
tmp=$(mktemp -d "$dir/.rotate.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -subj "/O=HelixAgent/CN=helixagent" \
  -keyout "$tmp/server.key" -out "$tmp/server.csr" 2>/dev/null
cat >"$tmp/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$sans
EXT
openssl x509 -req -in "$tmp/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -CAserial "$tmp/ca.srl" \
  -sha256 -days "$days" -extfile "$tmp/ext.cnf" -out "$tmp/server.crt" 2>/dev/null
openssl verify -CAfile "$dir/ca.crt" "$tmp/server.crt" >/dev/null
chmod 600 "$tmp/server.key"
chmod 644 "$tmp/server.crt" "$dir/ca.crt"
mv -f "$tmp/server.key" "$dir/server.key"
mv -f "$tmp/server.crt" "$dir/server.crt"

echo "generate-certs: $dir/server.crt and $dir/server.key ($(openssl x509 -in "$dir/server.crt" -noout -enddate | sed 's/notAfter=/valid until /'))"
echo "  names: ${sans//,/, }"
echo "  sha256 fingerprint: $(openssl x509 -in "$dir/server.crt" -noout -fingerprint -sha256 | cut -d= -f2)"
echo "next: kubectl create secret tls helixagent-tls --cert=$dir/server.crt --key=$dir/server.key --dry-run=client -o yaml | kubectl apply -f -"
echo "      kubectl rollout restart deployment/helixagent"
