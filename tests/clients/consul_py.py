"""py-consul (PyPI `py-consul`, module `consul`) against signpost's Consul API.

Run by tests/consul.rs with the venv of tests/clients/consul-clients.sh:
    consul_py.py HOST PORT TOKEN
Registers with a TTL check, passes it, blocks on health.service while maintenance is turned
on (the watch must wake with the maintenance check), and cleans up. Every step prints one
line; any failure is an exception and a non-zero exit.
"""

import sys
import threading
import time

import consul

host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = consul.Consul(host=host, port=port, token=token)


def step(msg):
    print(msg, flush=True)


def statuses(entry):
    return {ch["CheckID"]: ch["Status"] for ch in entry["Checks"]}


assert c.agent.service.register(
    "pyweb",
    service_id="pyweb-1",
    address="127.0.0.1",
    port=8081,
    tags=["v1", "py"],
    meta={"team": "payments"},
    check=consul.Check.ttl("30s"),
)
step("registered pyweb-1 with a ttl check")

services = c.agent.services()
s = services["pyweb-1"]
assert s["Service"] == "pyweb" and s["Port"] == 8081 and s["Address"] == "127.0.0.1", s
assert s["Tags"] == ["v1", "py"] and s["Meta"] == {"team": "payments"}, s
step("agent.services shows it")

index, nodes = c.health.service("pyweb")
assert len(nodes) == 1, nodes
assert statuses(nodes[0]) == {"service:pyweb-1": "critical"}, nodes[0]["Checks"]
_, nodes = c.health.service("pyweb", passing=True)
assert nodes == [], nodes
step("critical until its first report; passing=True leaves it out")

assert c.agent.check.ttl_pass("service:pyweb-1", notes="all good")
index, nodes = c.health.service("pyweb", passing=True)
assert len(nodes) == 1 and statuses(nodes[0]) == {"service:pyweb-1": "passing"}, nodes
assert nodes[0]["Checks"][0]["Output"] == "all good", nodes[0]["Checks"]
step("ttl_pass: passing, with its note as output")

assert c.agent.check.ttl_warn("service:pyweb-1")
_, nodes = c.health.service("pyweb", passing=True)
assert nodes == [], "passing leaves warning out"
assert c.agent.check.ttl_pass("service:pyweb-1")
index, _ = c.health.service("pyweb")
step("ttl_warn drops it from passing=True; ttl_pass brings it back")

# A blocking query on the service: it must wait, then wake when maintenance turns on.
woke = {}


def watch():
    t0 = time.monotonic()
    woke["index"], woke["nodes"] = c.health.service("pyweb", index=index, wait="20s")
    woke["after"] = time.monotonic() - t0


t = threading.Thread(target=watch)
t.start()
time.sleep(0.5)
assert t.is_alive(), "the blocking query returned before anything changed"
assert c.agent.service.maintenance("pyweb-1", True, "kernel upgrade")
t.join(10)
assert not t.is_alive(), "the blocking query did not wake on maintenance"
assert int(woke["index"]) > int(index), (woke["index"], index)
checks = statuses(woke["nodes"][0])
assert checks == {"_service_maintenance:pyweb-1": "critical", "service:pyweb-1": "passing"}, checks
maint = [ch for ch in woke["nodes"][0]["Checks"] if ch["CheckID"].startswith("_service")][0]
assert maint["Notes"] == "kernel upgrade", maint
step(f"blocking health.service woke after {woke['after']:.2f}s on maintenance")

_, nodes = c.health.service("pyweb", passing=True)
assert nodes == [], "maintenance leaves it out of passing"
assert c.agent.service.maintenance("pyweb-1", False)
_, nodes = c.health.service("pyweb", passing=True)
assert len(nodes) == 1, nodes
step("maintenance off: passing again")

_, catalog = c.catalog.services()
assert catalog["pyweb"] == ["py", "v1"], catalog
_, leader_nodes = c.catalog.service("pyweb")
assert leader_nodes[0]["ServiceAddress"] == "127.0.0.1", leader_nodes
assert c.status.leader(), "a leader while writable"
step("catalog.services, catalog.service and status.leader")

assert c.agent.service.deregister("pyweb-1")
_, nodes = c.health.service("pyweb")
assert nodes == [], nodes
_, catalog = c.catalog.services()
assert "pyweb" not in catalog, catalog
step("deregistered")

bad = consul.Consul(host=host, port=port, token="wrong")
try:
    bad.agent.service.register("pyweb", service_id="pyweb-2", address="127.0.0.1", port=1)
    raise AssertionError("a wrong token registered")
except consul.ConsulException as e:
    step(f"a wrong token is refused: {e}")
print("ok")
