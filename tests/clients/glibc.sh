#!/usr/bin/env bash
# glibc through /etc/resolv.conf, run inside a fresh mount + network namespace
# (`unshare -m -n bash glibc.sh SIGNPOST_BIN WORKDIR`): signpost answers on 127.0.0.1:53 and
# forwards other names to a second local DNS server (another signpost on 127.0.0.2:53 serving
# example.org) standing in as the upstream; a resolv.conf pointing at signpost, with
# `search service.internal`, is bind-mounted over /etc/resolv.conf. Prints `RESULT <what>
# <output>` lines for the Rust test to check.
set -euo pipefail
BIN=$1
W=$2
ip link set lo up
# getaddrinfo's AI_ADDRCONFIG ignores loopback: give the namespace an address of each
# family on a veth pair (it leads nowhere), as any real host has, so family-specific lookups
# are attempted at all.
ip link add sp0 type veth peer name sp1
ip addr add 192.0.2.10/24 dev sp0
ip addr add fd00:ffff::10/64 dev sp0 nodad
ip link set sp0 up
ip link set sp1 up

mkdir -p "$W/up/zones" "$W/main/config"
cat > "$W/up/zones/example.org.zone" <<'ZONE'
$ORIGIN example.org.
$TTL 300
@    IN SOA ns.example.org. hostmaster.example.org. 1 3600 600 86400 60
@    IN NS  ns.example.org.
ns   IN A   192.0.2.53
www  IN A   192.0.2.80
ZONE
cat > "$W/main/config/signpost.toml" <<'CONF'
[dns.forward]
upstreams = ["127.0.0.2:53"]
CONF

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

(cd "$W/up" && exec "$BIN" serve --dns-listen 127.0.0.2:53 --http-listen 127.0.0.2:8500 \
  --data-dir "$W/up/data" 2> "$W/up.log") &
pids+=($!)
(cd "$W/main" && exec "$BIN" serve --dns-listen 127.0.0.1:53 --http-listen 127.0.0.1:8500 \
  --data-dir "$W/main/data" 2> "$W/main.log") &
pids+=($!)
for _ in $(seq 1 100); do
  if curl -sf 127.0.0.1:8500/healthz >/dev/null && curl -sf 127.0.0.2:8500/healthz >/dev/null; then
    break
  fi
  sleep 0.1
done

curl -sf -X PUT 127.0.0.1:8500/v1/services/web/instances/web-1 -d '{"address":"10.0.0.7","port":8080}' >/dev/null
curl -sf -X PUT 127.0.0.1:8500/v1/services/web/instances/web-2 -d '{"address":"fd00::7","port":8080}' >/dev/null

printf 'nameserver 127.0.0.1\nsearch service.internal\noptions timeout:2 attempts:2\n' > "$W/resolv.conf"
mount --bind "$W/resolv.conf" /etc/resolv.conf

result() { local what=$1; shift; echo "RESULT $what $("$@" 2>&1 | tr '\n' ' ' | tr -s ' ')"; }
result hosts getent hosts web.service.internal
result ahosts getent ahosts web.service.internal
result ahostsv4 getent ahostsv4 web.service.internal
result short getent hosts web
result forwarded getent hosts www.example.org
result missing getent hosts nosuch.service.internal || true
echo "RESULT done"
