/**
 * What a (compromised) server may write where a time goes, for tests of src/fleet/server_time.ts's
 * rule as each record's reader applies it (deploy.log's `time`, cron.log's `start` and `end`, the
 * deployments a migration checks).
 */

/**
 * Values that are not a time the fleet takes at `now` (src/fleet/server_time.ts's zonedTime): text
 * around a time (a Slack mention), no zone, another format, before 2000, more than a day past `now`
 * (by `slack` ms: more when what is tested takes its own `now`, later), not a string.
 */
export function notTimes(now: number, slack = 1000): unknown[] {
  const hourAgo = new Date(now - 3_600_000);
  const local = hourAgo.toISOString().slice(0, 19); // no zone: the fleet's local time would be read
  return [
    "<!channel> <https://evil.example/login|Re-authenticate>",
    `${local}Z <!channel>`,
    local,
    local.slice(0, 10),
    hourAgo.toUTCString(),
    "9999-12-31T23:59:59Z",
    new Date(now + 86_400_000 + slack).toISOString(),
    "1970-01-01T00:00:00Z",
    "+275760-09-13T00:00:00Z",
    now,
    null,
    [`${local}Z`],
    undefined,
  ];
}
