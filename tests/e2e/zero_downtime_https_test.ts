/**
 * Zero downtime over HTTPS, by host name: an app with `domains: [shop.test]` and its own certificate
 * (`tls:` in config.yml, a self-signed one made with openssl) is served on the proxy's shared HTTPS
 * port (proxy.yml `https:`), and goes through blue-green deploys, a deploy that fails its health
 * check and a rollback, with real git pushes and real PM2, under keep-alive HTTPS load with SNI
 * shop.test: no request fails, and after each step the expected version answers, over HTTP/1.1
 * and HTTP/2.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo, type Mode } from "../helpers/apps.ts";
import { HttpsLoadGenerator, type Sample } from "../helpers/load.ts";
import { freePort, withServer } from "../helpers/server.ts";
import { deploymentsRoot } from "../../src/paths.ts";
import { selfSigned } from "../helpers/certs.ts";

const NAME = "shop.test";
const HEALTH = "{ path: /health, window: 4s, interval: 150ms, successes: 2, timeout: 1s }";
/** Keep-alive HTTPS connections of the load. */
const CONNECTIONS = 4;

type Step = Mode | "rollback";

/** GET https://shop.test:`port`/ over HTTP/2 with curl, trusting `ca`: the body and the HTTP version used. */
async function overHttp2(port: number, ca: string): Promise<{ body: string; version: string }> {
  const { code, stdout, stderr } = await new Deno.Command("curl", {
    args: [
      "-sS",
      "--max-time",
      "5",
      "--http2",
      "--cacert",
      ca,
      "--resolve",
      `${NAME}:${port}:127.0.0.1`,
      "-w",
      "\n%{http_version}",
      `https://${NAME}:${port}/`,
    ],
  }).output();
  const out = new TextDecoder().decode(stdout);
  if (code !== 0) return { body: new TextDecoder().decode(stderr), version: "" };
  const at = out.lastIndexOf("\n");
  return { body: out.slice(0, at), version: out.slice(at + 1) };
}

const failed = (sample: Sample) => sample.status !== 200;

Deno.test("https by host name: blue-green deploys, a failing deploy and a rollback under keep-alive load lose no request", async () => {
  await withServer(async (server) => {
    // proxy.yml is read when the proxy starts, and setupApp starts it: write it first.
    const [httpPort, httpsPort] = [freePort(), freePort()];
    const base = deploymentsRoot(server.prefix);
    await Deno.mkdir(base, { recursive: true });
    await Deno.writeTextFile(join(base, "proxy.yml"), `http: ${httpPort}\nhttps: ${httpsPort}\n`, { mode: 0o644 });
    await Deno.mkdir(join(server.root, "tls"), { recursive: true, mode: 0o700 });
    const tls = await selfSigned(join(server.root, "tls"), [NAME]);
    const ca = await Deno.readTextFile(tls.certificate);
    const repo = await AppRepo.create(server, "shop", await server.setupApp("shop", { port: freePort() }));
    await Deno.writeTextFile(
      server.paths("shop").config,
      `domains: [${NAME}]\ntls: { certificate: ${tls.certificate}, key: ${tls.key} }\n`,
      { append: true },
    );
    const commit = (version: string, mode: Mode) => repo.python("shop", version, mode, { health: HEALTH });

    await commit("v1", "ok");
    const first = await repo.pushOk();
    // Its URL: HTTPS (its own certificate), with the shared port as proxy.yml has it.
    assertMatch(first.output, new RegExp(`✓ deployed shop .*: https://${NAME.replaceAll(".", "\\.")}:${httpsPort}/`));
    // The certificate is loaded in the background once the proxy has re-read config.yml.
    const deadline = Date.now() + 10_000;
    while ((await overHttp2(httpsPort, tls.certificate)).body !== "v1") {
      assert(Date.now() < deadline, `shop.test is not served over HTTPS:\n${server.proxyLog}`);
      await new Promise((r) => setTimeout(r, 200));
    }

    const load = new HttpsLoadGenerator(httpsPort, NAME, ca, CONNECTIONS).start();
    const steps: Step[] = ["ok", "500", "ok", "rollback"]; // v2, v3 fails, v4, back to v2
    const history = ["v1"]; // good versions, oldest first
    const records: { step: Step; expect: string; start: number; end: number; h2: { body: string; version: string } }[] =
      [];
    for (const [i, step] of steps.entries()) {
      const start = performance.now();
      if (step === "rollback") {
        const result = await server.cli(["rollback", "shop"]);
        assertEquals(result.code, 0, result.output);
        history.pop();
      } else {
        const version = `v${i + 2}`;
        await commit(version, step);
        const push = await repo.push();
        if (step === "ok") {
          assertEquals(push.code, 0, push.output);
          history.push(version);
        } else {
          assert(push.code !== 0, `${step} must fail:\n${push.output}`);
          await repo.git(["reset", "--quiet", "--hard", "HEAD~1"]);
        }
      }
      const end = performance.now();
      // HTTP/2 on a new connection, while the HTTP/1.1 load goes on.
      records.push({ step, expect: history.at(-1)!, start, end, h2: await overHttp2(httpsPort, tls.certificate) });
      await new Promise((r) => setTimeout(r, 300)); // let the load see the result
      await load.answered(end, `after ${step} (#${records.length})`);
    }
    const stopped = performance.now();
    await load.stop();

    // HTTP on the shared port redirects to HTTPS (the app has a certificate).
    const redirect = await new Deno.Command("curl", {
      args: [
        "-sS",
        "--max-time",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "-H",
        `Host: ${NAME}`,
        `http://127.0.0.1:${httpPort}/cart`,
      ],
    }).output();
    assertEquals(new TextDecoder().decode(redirect.stdout), `308 https://${NAME}:${httpsPort}/cart`);

    const figures: string[] = [];
    for (const [i, record] of records.entries()) {
      const until = records[i + 1]?.start ?? stopped;
      const samples = load.samples.filter((s) => s.at >= record.start && s.at <= until);
      figures.push(
        `${record.step} → ${record.expect}: ${samples.length} served, ${samples.filter(failed).length} failed`,
      );
      assertEquals(record.h2, { body: record.expect, version: "2" }, `HTTP/2 after ${record.step} (#${i + 1})`);
      const seen = load.bodiesBetween(record.end, until);
      assertEquals([...seen], [record.expect], `after ${record.step} (#${i + 1}), answers came from ${[...seen]}`);
      if (record.step !== "ok" && record.step !== "rollback") {
        // A deploy that fails its health check never gets traffic.
        const during = load.bodiesBetween(record.start, record.end);
        assertEquals([...during], [records[i - 1]?.expect ?? "v1"], `during the failed deploy #${i + 1}`);
      }
    }
    const failures = load.samples.filter(failed);
    console.log(
      `zero-downtime over HTTPS (${CONNECTIONS} keep-alive connections, SNI ${NAME}): ${load.samples.length} ` +
        `requests, ${failures.length} failed, ${load.connects} connections opened; ${figures.join("; ")}`,
    );
    assertEquals(failures.length, 0, `failed requests: ${JSON.stringify(failures.slice(0, 5))}`);
    assertEquals(load.connects, CONNECTIONS, "every keep-alive connection lasted the whole run");
    assert(load.samples.length > 200, `too few requests: ${load.samples.length}`);
  });
});
