/** Notification payloads and URL redaction (pure). */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { type Notice, notifyAll, payload, redactUrl } from "../../src/notify.ts";

const NOTICE: Notice = {
  event: "failed",
  ok: false,
  title: "api 1a2b3c4 failed at health on web1 <@here>",
  text: "http://127.0.0.1:8000/health answered 500",
  at: "2026-11-29T09:00:00.000Z",
  fields: { app: "api", server: "web1", version: "1a2b3c4", step: "health", release: undefined },
};

Deno.test("payload: webhook JSON, Slack text + blocks (escaped), Discord embed without mentions", () => {
  const hook = payload("webhook", NOTICE) as Record<string, unknown>;
  assertEquals([hook.event, hook.ok, hook.app, hook.step, hook.release], ["failed", false, "api", "health", undefined]);
  const slack = payload("slack", NOTICE) as { text: string; blocks: { text?: { text: string } }[] };
  assertEquals(slack.text, "❌ api 1a2b3c4 failed at health on web1 &lt;@here&gt;");
  assert(slack.blocks[0].text!.text.includes("&lt;@here&gt;"), "a value cannot mention or link in Slack");
  assert(slack.blocks[1].text!.text.includes("*app:* api"));
  const discord = payload("discord", NOTICE) as {
    embeds: { title: string; color: number; fields: { name: string }[] }[];
    allowed_mentions: { parse: string[] };
  };
  assertEquals(discord.embeds[0].color, 0xc62828);
  assertEquals(discord.embeds[0].fields.map((f) => f.name), ["app", "server", "version", "step"]);
  assertEquals(discord.allowed_mentions.parse, []);
});

Deno.test("payload: a notice's time that is not a time makes no Slack mention or link, and Discord gets an ISO timestamp", () => {
  const evil = "<!channel> <https://evil.example/login|Re-authenticate>";
  const notice = { ...NOTICE, event: "failed <@U1>", at: evil };
  const slack = payload("slack", notice) as { blocks: { type: string; elements?: { text: string }[] }[] };
  const context = slack.blocks.find((b) => b.type === "context")!.elements![0].text;
  assertEquals(
    context,
    "deploy-paradigm · failed &lt;@U1&gt; · &lt;!channel&gt; &lt;https://evil.example/login|Re-authenticate&gt;",
  );
  const timestamp = (at: string) =>
    (payload("discord", { ...NOTICE, at }) as { embeds: { timestamp: string }[] }).embeds[0].timestamp;
  assertEquals(timestamp("2026-11-29T10:00:00+01:00"), "2026-11-29T09:00:00.000Z");
  for (const at of [evil, "", "+275760-09-13T00:00:00Z"]) {
    const sent = Date.now();
    const iso = timestamp(at);
    assertMatch(iso, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, at);
    assert(Math.abs(Date.parse(iso) - sent) < 5_000, `${at}: ${iso}, not the time of sending`);
  }
});

Deno.test("redactUrl: scheme and host only", () => {
  assertEquals(redactUrl("https://hooks.slack.com/services/T0/B0/secret?x=1"), "https://hooks.slack.com/…");
  assertEquals(redactUrl("not a url"), "(an invalid URL)");
});

Deno.test("notifyAll: a delivery to a closed port says the connection was refused, without the URL's path", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const [delivery] = await notifyAll([{ type: "webhook", url: `http://127.0.0.1:${port}/secret-path` }], NOTICE, 5000);
  assertEquals(delivery.ok, false);
  assertEquals(delivery.detail, "fetch failed: tcp connect error: Connection refused");
});
