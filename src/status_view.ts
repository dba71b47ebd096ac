/**
 * `status`: a table or JSON of the apps' status.json files.
 * @module
 */
import { NAME_PATTERN } from "./config/names.ts";
import { type AppStatus, readStatus } from "./deploy/status.ts";
import { UsageError } from "./errors.ts";
import { appPaths, deploymentsRoot } from "./paths.ts";

/** Status of every deployed app, by name. Apps set up but never deployed have none. */
export async function collectStatus(only?: string): Promise<AppStatus[]> {
  const names: string[] = [];
  if (only !== undefined) {
    if (!NAME_PATTERN.test(only)) throw new UsageError(`"${only}" is not a valid app name`);
    names.push(only);
  } else {
    try {
      for await (const entry of Deno.readDir(deploymentsRoot())) if (entry.isDirectory) names.push(entry.name);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  const statuses: AppStatus[] = [];
  for (const name of names.sort()) {
    const status = await readStatus(appPaths(name).status);
    if (status) statuses.push(status);
    else if (only !== undefined) {
      throw new UsageError(`app "${only}" has no status: it was never deployed on this server`, {
        suggestion: "push to the app's repository to deploy it",
      });
    }
  }
  return statuses;
}

/** Prints the status table (or JSON). Returns 0. */
export async function showStatus(only: string | undefined, json: boolean): Promise<number> {
  const statuses = await collectStatus(only);
  if (json) {
    console.log(JSON.stringify(only !== undefined ? statuses[0] : statuses, null, 2));
    return 0;
  }
  if (!statuses.length) {
    console.log("No app has been deployed on this server yet.");
    return 0;
  }
  const rows = [
    ["APP", "STATUS", "HEALTHY", "VERSION", "RELEASE", "DEPLOYED", "LAST DEPLOY"],
    ...statuses.map((s) => [
      s.name,
      s.status,
      s.healthy ? "yes" : "no",
      s.version ?? "-",
      s.release ?? "-",
      s.deployed ?? "-",
      `${s.lastDeploy.outcome} ${s.lastDeploy.version}${s.lastDeploy.step ? ` at ${s.lastDeploy.step}` : ""}`,
    ]),
  ];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const row of rows) console.log(row.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd());
  return 0;
}
