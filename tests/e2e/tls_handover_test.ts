/**
 * A client that asks for a host name before its certificate exists (a browser opened as soon as
 * DNS pointed here, while the certificate is still being issued): Deno's TLS listener remembers
 * that failure for its life, so the certificate is put in service by a new listener on the same
 * port. Every connection after that must get the certificate: none may land on the old listener
 * that remembers the failure (the kernel spreads new connections over both sockets of the port).
 * Names found under a wildcard are remembered too: past a number of them, a fresh listener takes over.
 */
import { join } from "node:path";
import { assertEquals } from "../helpers/assert.ts";
import { selfSigned } from "../helpers/certs.ts";
import { withProxy } from "../helpers/proxy_server.ts";
import { freePort } from "../helpers/server.ts";
import { WireClient } from "../helpers/wire_client.ts";
import { deploymentsRoot } from "../../src/paths.ts";
import { sleep } from "../helpers/time.ts";

const HOST = "early.test";

Deno.test("tls: a name asked for before its certificate is served to every connection once the certificate is there", async () => {
  const app = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => new Response("early"));
  const httpsPort = freePort();
  try {
    await withProxy(async ({ root, proxy, logs, app: addApp }) => {
      await addApp("early", { port: app.addr.port });
      const config = join(deploymentsRoot(root), "early", "config.yml");
      await Deno.writeTextFile(config, `domains: [${HOST}]\n`, { append: true });
      const tls = await selfSigned(root, [HOST]);
      const ca = await Deno.readTextFile(tls.certificate);
      await proxy.start();

      // Before the certificate: the handshake fails (and the listener remembers it).
      const early = await WireClient.connectTls(httpsPort, HOST, ca, ["http/1.1"]).then(
        (client) => (client.close(), "served"),
        () => "refused",
      );
      assertEquals(early, "refused", logs.join("\n"));

      await Deno.writeTextFile(config, `tls: { certificate: ${tls.certificate}, key: ${tls.key} }\n`, {
        append: true,
      });
      await proxy.reload();
      const deadline = Date.now() + 10_000;
      while (!logs.some((line) => line.includes(`certificates: early: loaded`))) {
        if (Date.now() > deadline) throw new Error(`the certificate was not loaded:\n${logs.join("\n")}`);
        await sleep(5);
      }

      // At once (well inside the old listener's 1 s overlap): 40 connections, every one served.
      const results: string[] = [];
      for (let i = 0; i < 40; i++) {
        results.push(
          await WireClient.connectTls(httpsPort, HOST, ca, ["http/1.1"]).then(
            (client) => (client.close(), "served"),
            (error) => `failed: ${error}`,
          ),
        );
      }
      assertEquals(results.filter((result) => result !== "served"), [], logs.join("\n"));
    }, { proxyYml: `http: ${freePort()}\nhttps: ${httpsPort}\n` });
  } finally {
    await app.shutdown();
  }
});

Deno.test("tls: names under a wildcard count too: past the most a listener remembers, a fresh one takes over and serves on", async () => {
  const app = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => new Response("any"));
  const httpsPort = freePort();
  try {
    await withProxy(async ({ root, proxy, logs, app: addApp }) => {
      await addApp("wild", { port: app.addr.port });
      const tls = await selfSigned(root, ["*.w.test"]);
      await Deno.writeTextFile(
        join(deploymentsRoot(root), "wild", "config.yml"),
        `domains: ["*.w.test"]\ntls: { certificate: ${tls.certificate}, key: ${tls.key} }\n`,
        { append: true },
      );
      const ca = await Deno.readTextFile(tls.certificate);
      await proxy.start();
      // The listener the certificate's arrival put in service alone (the one before it accepts for 1 s more).
      await sleep(1200);
      // Each name found a certificate, and Deno's listener remembers each (its memory grew with random names).
      const handshakes = async (from: number, count: number) => {
        const results: string[] = [];
        for (let i = from; i < from + count; i++) {
          results.push(
            await WireClient.connectTls(httpsPort, `n${i}.w.test`, ca, ["http/1.1"]).then(
              (client) => (client.close(), "served"),
              (error) => `n${i}: ${error}`,
            ),
          );
        }
        return results.filter((result) => result !== "served");
      };
      assertEquals(await handshakes(0, 25), [], logs.join("\n"));
      const fresh = logs.filter((line) => line.includes("20 TLS server names asked for: a fresh listener takes over"));
      assertEquals(fresh.length, 1, logs.join("\n"));
      await sleep(50);
      assertEquals(await handshakes(25, 10), [], "the fresh listener serves");
    }, { proxyYml: `http: ${freePort()}\nhttps: ${httpsPort}\n`, maxServerNames: 20 });
  } finally {
    await app.shutdown();
  }
});
