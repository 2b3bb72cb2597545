// The `consul` npm client against signpost's Consul API.
//
// Run by tests/consul.rs with the package tests/clients/consul-clients.sh installs:
//   NODE_PATH=target/consul-clients/node/node_modules node consul_node.js HOST PORT TOKEN
// Registers two instances (one with a TTL check), reports health, reads the catalog and the
// health API, follows the service with the client's own `watch` (blocking queries) while an
// instance is deregistered, and checks a filter. Every step prints one line; any failure
// exits non-zero.
"use strict";

const assert = require("assert");
const Consul = require("consul");

const [host, port, token] = process.argv.slice(2);
const consul = new Consul({ host, port: Number(port), defaults: { token } });

function step(msg) {
  console.log(msg);
}

async function main() {
  await consul.agent.service.register({
    name: "nodeweb",
    id: "nodeweb-1",
    address: "127.0.0.1",
    port: 9001,
    tags: ["blue"],
    meta: { version: "1.0.0" },
    check: { ttl: "30s", status: "passing" },
  });
  await consul.agent.service.register({
    name: "nodeweb",
    id: "nodeweb-2",
    address: "127.0.0.2",
    port: 9002,
    tags: ["green"],
    meta: { version: "2.0.0" },
  });
  step("registered nodeweb-1 (ttl check, initially passing) and nodeweb-2 (no check)");

  let nodes = await consul.health.service({ service: "nodeweb", passing: true });
  assert.deepStrictEqual(nodes.map((n) => n.Service.ID).sort(), ["nodeweb-1", "nodeweb-2"]);
  for (const n of nodes) {
    assert.ok(n.Checks.length >= 1, "every instance has a check");
    assert.strictEqual(n.Service.Address !== "", true);
    assert.strictEqual(n.Node.Datacenter, "dc1");
  }
  step("health.service passing: both");

  await consul.agent.check.fail({ id: "service:nodeweb-1", note: "disk full" });
  nodes = await consul.health.service({ service: "nodeweb", passing: true });
  assert.deepStrictEqual(nodes.map((n) => n.Service.ID), ["nodeweb-2"]);
  const all = await consul.health.service("nodeweb");
  const failed = all.find((n) => n.Service.ID === "nodeweb-1").Checks[0];
  assert.strictEqual(failed.Status, "critical");
  assert.strictEqual(failed.Output, "disk full");
  await consul.agent.check.pass("service:nodeweb-1");
  step("agent.check.fail drops it from passing, with its note; pass brings it back");

  const filtered = await consul.health.service({
    service: "nodeweb",
    filter: 'Service.Meta.version == "2.0.0"',
  });
  assert.deepStrictEqual(filtered.map((n) => n.Service.ID), ["nodeweb-2"]);
  await assert.rejects(
    consul.health.service({ service: "nodeweb", filter: "Node.Meta.rack == a" }),
    (err) => err.statusCode === 400,
  );
  step("filter: a supported expression selects, an unsupported one is 400");

  const catalog = await consul.catalog.service.list();
  assert.deepStrictEqual(catalog.nodeweb, ["blue", "green"]);
  const instances = await consul.catalog.service.nodes("nodeweb");
  assert.deepStrictEqual(instances.map((i) => i.ServicePort).sort(), [9001, 9002]);
  const leader = await consul.status.leader();
  assert.ok(leader.length > 0, "a leader");
  const self = await consul.agent.self();
  assert.strictEqual(self.Config.Datacenter, "dc1");
  step("catalog.service.list, catalog.service.nodes, status.leader, agent.self");

  // The client's own watch: blocking queries with index and wait.
  const watch = consul.watch({
    method: consul.health.service,
    options: { service: "nodeweb", wait: "10s" },
    backoffFactor: 100,
  });
  const seen = [];
  const gone = new Promise((resolve, reject) => {
    watch.on("change", (data) => {
      seen.push(data.map((n) => n.Service.ID).sort().join(","));
      if (seen.length === 1) {
        consul.agent.service.deregister("nodeweb-2").catch(reject);
      } else if (data.length === 1) {
        resolve();
      }
    });
    watch.on("error", reject);
  });
  const timeout = new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`watch saw ${JSON.stringify(seen)}`)), 10000),
  );
  await Promise.race([gone, timeout]);
  watch.end();
  assert.deepStrictEqual(seen, ["nodeweb-1,nodeweb-2", "nodeweb-1"]);
  step("watch: a change after the deregistration, nothing in between");

  await consul.agent.service.deregister("nodeweb-1");
  assert.deepStrictEqual(await consul.health.service("nodeweb"), []);
  step("deregistered");
  console.log("ok");
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
