#!/bin/sh
# Development secrets for deploy/docker-compose.yml (and tests/deploy.rs,
# which runs this same script): a CA, trimatch's certificate signed by it
# (for the names trimatch, localhost and 127.0.0.1), the metrics token, and
# two API tokens. For trying trimatch out only: the CA's key lies next to
# the certificates, and the tokens are kept in clear beside the token file.
#
#   dev-secrets.sh certs DIR    (needs openssl; run as root in compose, which
#                                hands DIR to trimatch's user, uid 10001)
#   dev-secrets.sh tokens DIR   (needs trimatch: $TRIMATCH, default
#                                /usr/local/bin/trimatch)
# Each step does nothing if its files exist, so `compose up` keeps them.
set -eu
mode=$1
dir=$2
trimatch=${TRIMATCH:-/usr/local/bin/trimatch}
mkdir -p "$dir"
case "$mode" in
certs)
    [ -f "$dir/server.pem" ] && exit 0
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=trimatch dev CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=trimatch" \
        -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName = DNS:trimatch, DNS:localhost, IP:127.0.0.1\n' > "$dir/san.cnf"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 365 -extfile "$dir/san.cnf" -out "$dir/server.pem" 2>/dev/null
    openssl rand -hex 24 > "$dir/metrics.token"
    # Prometheus (another user) reads the CA and the metrics token.
    chmod 644 "$dir/ca.pem" "$dir/metrics.token"
    chmod 600 "$dir/server.key" "$dir/ca.key"
    if [ "$(id -u)" = 0 ]; then chown -R 10001:10001 "$dir"; fi
    ;;
tokens)
    [ -f "$dir/auth.toml" ] && exit 0
    "$trimatch" auth add-token --file "$dir/auth.toml" --name admin --role admin --tenants '*' \
        > "$dir/admin.token"
    "$trimatch" auth add-token --file "$dir/auth.toml" --name analyst --role reader \
        --tenants tenant-000,tenant-001 > "$dir/analyst.token"
    echo "tokens: $dir/admin.token (admin, every tenant), $dir/analyst.token (reader, tenant-000 and tenant-001)"
    ;;
*)
    echo "usage: dev-secrets.sh certs|tokens DIR" >&2
    exit 2
    ;;
esac
