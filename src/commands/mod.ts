/**
 * Every subcommand, registered in one list. Command files are light: they load their
 * implementation when they run, so `--help` and the hook path stay fast.
 * @module
 */
import type { ProgramSpec } from "../cli.ts";
import { VERSION } from "../version.ts";
import { canaryCommand } from "./canary.ts";
import { cronCommand, cronRunCommand, cronSchedulerCommand } from "./cron.ts";
import { dockerLogsCommand } from "./docker_logs.ts";
import { executeCommand } from "./execute.ts";
import { fleetCommand } from "./fleet.ts";
import { initCommand } from "./init.ts";
import { maintenanceCommand } from "./maintenance.ts";
import { proxyCommand } from "./proxy.ts";
import { receiveCommand } from "./receive.ts";
import { releasesCommand } from "./releases.ts";
import { rollbackCommand } from "./rollback.ts";
import { rolloutCommand } from "./rollout.ts";
import { schemaCommand } from "./schema.ts";
import { setupCommand } from "./setup.ts";
import { statusCommand } from "./status.ts";

/** The program: name, version, commands. */
export const program: ProgramSpec = {
  name: "deploy-paradigm",
  version: VERSION,
  summary: "safe git-push deploys to your own servers",
  commands: [
    initCommand,
    setupCommand,
    executeCommand,
    receiveCommand,
    rollbackCommand,
    canaryCommand,
    maintenanceCommand,
    releasesCommand,
    statusCommand,
    schemaCommand,
    proxyCommand,
    dockerLogsCommand,
    cronCommand,
    cronRunCommand,
    cronSchedulerCommand,
    fleetCommand,
    rolloutCommand,
  ],
};
