#!/usr/bin/env bash
# Prometheus `dns_sd_configs` (type SRV) through the system resolver, run inside a fresh mount
# + network namespace (`unshare -m -n bash prometheus.sh SIGNPOST_BIN WORKDIR`): signpost
# answers on 127.0.0.1:53, a resolv.conf pointing at it is bind-mounted over /etc/resolv.conf,
# two instances of `node` (python3 http.server listeners serving a static `metrics` file on
# 127.0.0.1:9101 and :9102) are registered over HTTP, and Prometheus must discover both, scrape
# them, and drop the one deregistered. Prints `RESULT <what> <value>` lines for the Rust test.
# Every wait is bounded; everything started here is killed on exit.
set -euo pipefail
BIN=$1
W=$2
ip link set lo up
mkdir -p "$W/signpost" "$W/prometheus" "$W/node-1" "$W/node-2"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 1' TERM INT

# On failure: a RESULT line saying what did not happen, and the logs.
fail() {
  echo "RESULT failed $*"
  for f in signpost.log prometheus.log node-1.log node-2.log; do
    echo "--- $f (tail)" >&2
    tail -n 40 "$W/$f" >&2 || true
  done
  exit 1
}

# Bounded wait: `until_ok SECS CMD...` runs CMD every 0.2 s until it succeeds, for at most
# SECS seconds (and at most 5 * SECS tries).
until_ok() {
  local end=$((SECONDS + $1)) tries=$(($1 * 5))
  shift
  while ((tries-- > 0 && SECONDS < end)); do
    if "$@"; then return 0; fi
    sleep 0.2
  done
  return 1
}

(cd "$W/signpost" && exec "$BIN" serve --dns-listen 127.0.0.1:53 --http-listen 127.0.0.1:8500 \
  --data-dir "$W/signpost/data" 2> "$W/signpost.log") &
pids+=($!)
until_ok 20 curl -sf -o /dev/null 127.0.0.1:8500/healthz || fail "signpost did not start"

for n in 1 2; do
  printf '# TYPE signpost_client_test gauge\nsignpost_client_test{node="%s"} 1\n' "$n" \
    > "$W/node-$n/metrics"
  (cd "$W/node-$n" && exec python3 -m http.server "910$n" --bind 127.0.0.1 \
    > "$W/node-$n.log" 2>&1) &
  pids+=($!)
done
until_ok 20 curl -sf -o /dev/null 127.0.0.1:9101/metrics || fail "node-1 listener did not start"
until_ok 20 curl -sf -o /dev/null 127.0.0.1:9102/metrics || fail "node-2 listener did not start"

printf 'nameserver 127.0.0.1\noptions timeout:2 attempts:2\n' > "$W/resolv.conf"
mount --bind "$W/resolv.conf" /etc/resolv.conf

for n in 1 2; do
  curl -sf -X PUT "127.0.0.1:8500/v1/services/node/instances/node-$n" \
    -d "{\"address\":\"127.0.0.1\",\"port\":910$n}" > /dev/null || fail "registering node-$n"
done

cat > "$W/prometheus.yml" <<'YAML'
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: node
    dns_sd_configs:
      - names: ['_node._tcp.service.internal']
        type: SRV
        refresh_interval: 1s
YAML
prometheus --config.file="$W/prometheus.yml" --storage.tsdb.path="$W/prometheus" \
  --web.listen-address=127.0.0.1:9090 2> "$W/prometheus.log" &
pids+=($!)

# The active targets of job `node`, one per line, sorted: `<instance> <health>`.
targets() {
  curl -sf --max-time 2 127.0.0.1:9090/api/v1/targets | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
for t in d["data"]["activeTargets"]:
    if t["labels"].get("job") == "node":
        print(t["labels"]["instance"], t["health"])
' | sort
}
line() { targets | tr '\n' ' ' | sed 's/ $//'; }

N1=node-1.node.instance.internal:9101
N2=node-2.node.instance.internal:9102
# Both discovered, and both scraped at least once (health no longer "unknown").
both_scraped() {
  local t
  t=$(targets) || return 1
  grep -q "^$N1 " <<<"$t" && grep -q "^$N2 " <<<"$t" && ! grep -q ' unknown$' <<<"$t"
}
start=$SECONDS
until_ok 30 both_scraped || fail "discovery: $(line || true)"
echo "RESULT discovered $(line) after $((SECONDS - start))s"
# The labels discovery attached to each target (one JSON object per target, on one line).
curl -sf --max-time 2 127.0.0.1:9090/api/v1/targets | python3 -c '
import json, sys
d = json.load(sys.stdin)
ts = [t["discoveredLabels"] for t in d["data"]["activeTargets"] if t["labels"].get("job") == "node"]
print("RESULT labels", json.dumps(sorted(ts, key=lambda l: l["__address__"]), sort_keys=True))
' || fail "reading discovered labels"

curl -sf -o /dev/null -X DELETE 127.0.0.1:8500/v1/services/node/instances/node-2 \
  || fail "deregistering node-2"
only_n1() {
  local t
  t=$(targets) || return 1
  grep -q "^$N1 " <<<"$t" && ! grep -q "^$N2 " <<<"$t"
}
start=$SECONDS
until_ok 30 only_n1 || fail "after deregistering node-2: $(line || true)"
echo "RESULT remaining $(line) after $((SECONDS - start))s"
echo "RESULT done"
