/**
 * The fleet API's rollout endpoints (./api.ts routes to them; same token and loopback rules):
 * - `/api/rollouts?app=&limit=`: `{ rollouts }`, newest first (./rollouts.ts);
 * - `/api/rollouts/:id`: one rollout with its servers; 400 for an id that is not a positive
 *   integer, 404 for an unknown one.
 * @module
 */
import { HttpError, Params } from "./api_params.ts";
import { listRollouts, ROLLOUT_PAGE, rolloutById, type RolloutView } from "./rollouts.ts";
import type { FleetStore } from "./store.ts";

/** The answer's body for a rollout endpoint; undefined when `url` names none. Throws {@link HttpError}. */
export function rolloutEndpoint(store: FleetStore, url: URL): { rollouts: RolloutView[] } | RolloutView | undefined {
  const path = url.pathname;
  if (path === "/api/rollouts") {
    const params = new Params(url);
    return {
      rollouts: listRollouts(store, { app: params.string("app"), limit: params.integer("limit", 1, ROLLOUT_PAGE.max) }),
    };
  }
  const one = /^\/api\/rollouts\/([^/]+)$/.exec(path);
  if (!one) return undefined;
  new Params(url); // checks the query's lengths like every endpoint
  const id = /^[1-9]\d{0,15}$/.test(one[1]) ? Number(one[1]) : NaN;
  if (!Number.isSafeInteger(id)) {
    throw new HttpError(
      400,
      `invalid rollout id ${JSON.stringify(one[1].slice(0, 40))}: a positive integer is expected`,
    );
  }
  const rollout = rolloutById(store, id);
  if (!rollout) throw new HttpError(404, `no rollout ${id} in the fleet database`, "list them at /api/rollouts");
  return rollout;
}
