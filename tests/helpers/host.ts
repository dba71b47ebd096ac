/**
 * What the test hosts share (the fake VPS in vps.ts and the systemd host in nspawn.ts): a network
 * namespace joined to this machine by a veth pair on a private /30, and SSH access to it with a
 * key and a pinned host key.
 */
import { join } from "node:path";
import { run } from "./server.ts";

/** Runs a command that must succeed; returns its stdout. */
export async function must(argv: string[]): Promise<string> {
  const result = await run(argv);
  if (result.code !== 0) throw new Error(`${argv.join(" ")} failed (${result.code}):\n${result.output}`);
  return result.stdout;
}

/**
 * Creates namespace `name` with `${name}v` inside at `<net>.<subnet>.2/30` and `${name}h` here at
 * `.1`. Returns the address inside.
 */
export async function addNetns(name: string, net: string): Promise<string> {
  // Test files run in parallel processes: the choice of a free /30 and the host-side address
  // that claims it happen under one machine-wide lock, so two hosts never share a subnet.
  using lock = await Deno.open("/run/dp-test-netns.lock", { create: true, write: true });
  await lock.lock(true);
  const used = new Set(
    [...(await must(["ip", "-o", "-4", "addr", "show"])).matchAll(
      new RegExp(`${net.replace(".", "\\.")}\\.(\\d+)\\.`, "g"),
    )]
      .map((m) => Number(m[1])),
  );
  const free = Array.from({ length: 250 }, (_, i) => i + 1).filter((n) => !used.has(n));
  if (!free.length) throw new Error(`no free /30 left in ${net}.0.0/16`);
  const subnet = free[Math.floor(Math.random() * free.length)];
  const address = `${net}.${subnet}.2`;
  const inside = (...argv: string[]) => must(["ip", "netns", "exec", name, ...argv]);
  await must(["ip", "netns", "add", name]);
  await must(["ip", "link", "add", `${name}h`, "type", "veth", "peer", "name", `${name}v`]);
  await must(["ip", "link", "set", `${name}v`, "netns", name]);
  await must(["ip", "addr", "add", `${net}.${subnet}.1/30`, "dev", `${name}h`]);
  await must(["ip", "link", "set", `${name}h`, "up"]);
  await inside("ip", "addr", "add", `${address}/30`, "dev", `${name}v`);
  await inside("ip", "link", "set", `${name}v`, "up");
  await inside("ip", "link", "set", "lo", "up");
  return address;
}

/** Removes what {@link addNetns} made (whatever of it exists). */
export async function removeNetns(name: string): Promise<void> {
  await run(["ip", "link", "del", `${name}h`]);
  await run(["ip", "netns", "del", name]);
}

/**
 * SSH to a host whose client key is `dir/client_key` and whose pinned host key is in
 * `dir/known_hosts`: the argv of `ssh` (strict host key checking, never a prompt) and the
 * environment for git on the laptop side.
 */
export function sshAccess(dir: string): { sshArgv: string[]; env: Record<string, string> } {
  const sshArgv = [
    "ssh",
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=5",
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    `UserKnownHostsFile=${join(dir, "known_hosts")}`,
    "-i",
    join(dir, "client_key"),
  ];
  return {
    sshArgv,
    env: {
      GIT_SSH_COMMAND: sshArgv.join(" "),
      GIT_AUTHOR_NAME: "Test",
      GIT_AUTHOR_EMAIL: "test@example.invalid",
      GIT_COMMITTER_NAME: "Test",
      GIT_COMMITTER_EMAIL: "test@example.invalid",
      NO_COLOR: "1",
    },
  };
}

/**
 * A system user and group of its own for a test (no home, no login), also in `group` when given;
 * removed by the returned function.
 */
export async function addTestUser(name: string, group?: string): Promise<() => Promise<void>> {
  await must([
    "useradd",
    "--system",
    "--user-group",
    ...(group === undefined ? [] : ["--groups", group]),
    "--no-create-home",
    "--home-dir",
    "/nonexistent",
    "--shell",
    "/usr/sbin/nologin",
    name,
  ]);
  return async () => void await new Deno.Command("userdel", { args: [name], stdout: "null", stderr: "null" }).output();
}
