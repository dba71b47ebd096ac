/**
 * Deploy notifications from the server (`notify:` in config.yml) to a receiver on loopback that
 * records what it gets: the plain webhook, Slack's and Discord's native payloads, the events
 * filter, URL secrets redacted, and receivers that hang or fail costing at most the timeout.
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo, SHORT_HEALTH } from "../helpers/apps.ts";
import { freePort, withServer } from "../helpers/server.ts";
import { deployLog } from "../helpers/state.ts";
import { NOTIFY_TIMEOUT_MS } from "../../src/notify.ts";

interface Received {
  path: string;
  body: Record<string, unknown>;
}

/** A receiver on loopback: /ok/* answers 204, /fail/* 500, /hang/* never. */
function receiver() {
  const received: Received[] = [];
  const hanging: (() => void)[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    const path = new URL(request.url).pathname;
    received.push({ path, body: await request.json() });
    if (path.startsWith("/hang/")) await new Promise<void>((resolve) => hanging.push(resolve));
    return new Response(null, { status: path.startsWith("/fail/") ? 500 : 204 });
  });
  return {
    url: (path: string) => `http://127.0.0.1:${server.addr.port}${path}`,
    received,
    async close() {
      for (const release of hanging) release();
      await server.shutdown();
    },
  };
}

const SECRET = "T0KEN-s3cr3t-in-the-url";

Deno.test("notifications: webhook, Slack and Discord payloads; events filter; hanging and failing receivers bounded", async () => {
  const sink = receiver();
  try {
    await withServer(async (server) => {
      const port = freePort();
      const app = "note";
      const repo = await AppRepo.create(server, app, await server.setupApp(app, { port }));
      const config = server.paths(app).config;
      await Deno.writeTextFile(
        config,
        (await Deno.readTextFile(config)) +
          "notify:\n" +
          `  - { type: webhook, url: "${sink.url(`/ok/hook/${SECRET}`)}" }\n` +
          `  - { type: slack, url: "${sink.url(`/ok/slack/${SECRET}`)}" }\n` +
          `  - { type: discord, url: "${sink.url(`/ok/discord/${SECRET}`)}", events: [failed, rolled_back] }\n`,
      );
      await repo.python(app, "v1");
      const v1 = await repo.pushOk();
      const first = sink.received.splice(0);
      assertEquals(first.map((r) => r.path.split("/")[2]).sort(), ["hook", "slack"], "discord only wants failures");
      const hook = first.find((r) => r.path.includes("/hook/"))!.body;
      assertEquals([hook.event, hook.ok, hook.app, hook.version], ["success", true, app, v1CommitShort(hook)]);
      assertMatch(String(hook.duration), /^\d+\.\d s$/);
      assert(typeof hook.server === "string" && hook.server.length > 0);
      const slack = first.find((r) => r.path.includes("/slack/"))!.body as { text: string; blocks: unknown[] };
      assertMatch(slack.text, /^✅ note [0-9a-f]{7} deployed on /);
      assert(Array.isArray(slack.blocks) && slack.blocks.length >= 2);
      assertMatch(v1.output, /✓ notified webhook http:\/\/127\.0\.0\.1:\d+\/…: 204 in \d+ ms/);

      // A failing deploy: all three hear of it, Discord as an embed.
      await repo.python(app, "v2", "500", { health: SHORT_HEALTH });
      const v2 = await repo.push();
      assert(v2.code !== 0, v2.output);
      const second = sink.received.splice(0);
      assertEquals(second.map((r) => r.path.split("/")[2]).sort(), ["discord", "hook", "slack"]);
      const failed = second.find((r) => r.path.includes("/hook/"))!.body;
      assertEquals([failed.event, failed.ok, failed.step], ["failed", false, "health"]);
      assertMatch(String(failed.text), /did not answer 2xx/);
      const discord = second.find((r) => r.path.includes("/discord/"))!.body as {
        embeds: { title: string; color: number; fields: { name: string; value: string }[] }[];
      };
      assertMatch(discord.embeds[0].title, /^note [0-9a-f]{7} failed at health on /);
      assertEquals(discord.embeds[0].color, 0xc62828);
      assert(discord.embeds[0].fields.some((f) => f.name === "step" && f.value === "health"));
      await repo.git(["reset", "--quiet", "--hard", "HEAD~1"]);

      // Receivers that hang and fail: the deploy succeeds, costs at most the timeout, says so.
      await Deno.writeTextFile(
        config,
        (await Deno.readTextFile(config)).replace(
          "notify:\n",
          `notify:\n  - { type: webhook, url: "${sink.url(`/hang/${SECRET}`)}" }\n` +
            `  - { type: webhook, url: "${sink.url(`/fail/${SECRET}`)}" }\n`,
        ),
      );
      await repo.python(app, "v3");
      const started = performance.now();
      const v3 = await repo.pushOk();
      const took = performance.now() - started;
      // The push's time past the deploy's own (its ✓ line, before the notifications): the timeout once at most,
      // both receivers at once (the machine's load is in both figures).
      const deployed = Number(/✓ deployed note \S+ \(release \S+\) in ([\d.]+)s/.exec(v3.output)?.[1]) * 1000;
      const notifying = took - deployed;
      console.log(
        `a deploy with a hanging and a failing receiver took ${(took / 1000).toFixed(1)} s, ` +
          `${(notifying / 1000).toFixed(1)} s past its deploy`,
      );
      assert(notifying < NOTIFY_TIMEOUT_MS + 4_000, `${notifying} ms past the deploy's ${deployed} ms`);
      assertMatch(v3.output, /! notified webhook http:\/\/127\.0\.0\.1:\d+\/…: no answer within 5000 ms/);
      assertMatch(v3.output, /! notified webhook http:\/\/127\.0\.0\.1:\d+\/…: 500 in \d+ ms/);
      const notes = (await deployLog(server, app)).filter((e) => e.event === "notify");
      assert(notes.some((e) => e.ok === false && /no answer within/.test(String(e.message))));

      // The URLs' secrets are never printed or recorded.
      const log = await Deno.readTextFile(server.paths(app).deployLog);
      for (const [where, text] of [["v1", v1.output], ["v2", v2.output], ["v3", v3.output], ["deploy.log", log]]) {
        assert(!text.includes(SECRET), `the URL's secret is in ${where}`);
      }
    });
  } finally {
    await sink.close();
  }
});

/** The webhook's version is the short commit it names. */
function v1CommitShort(hook: Record<string, unknown>): string {
  return String(hook.commit).slice(0, 7);
}
