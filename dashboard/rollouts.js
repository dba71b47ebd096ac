/**
 * Rollouts from the laptop (`deploy-paradigm rollout`): the list (`#/rollouts?app=`, newest first:
 * app, commit, started, duration, outcome, servers done of all) and one rollout (`#/rollouts/ID`:
 * its options and, per server, the wave, outcome, version before → after, duration and message).
 * Both refresh with the live updates (a running rollout's rows and duration move on), and every
 * value from the API is text.
 * @module
 */
import { h, pageTitle, put } from "./dom.js";
import { api, ApiError, fleetNames } from "./api.js";
import { duration } from "./format.js";
import { optionsText, rolloutElapsed, serversDone, shortCommit, versionChange } from "./rollout_format.js";
import { rolloutHref, route, serverHref } from "./routes.js";
import { code, errorBox, outcomeBadge, select, table, when } from "./widgets.js";

/** Rollouts listed. */
const LIMIT = 50;

/** A commit as code (7 characters), the whole commit and the ref as its tooltip. */
const commitCode = (r) => code(shortCommit(r.commit), `${r.commit}${r.ref ? ` (${r.ref})` : ""}`);

/** The list view. */
export function rolloutsView() {
  const heading = h("h1", { tabindex: "-1", text: "Rollouts" });
  const filters = h("form", { class: "filters-row", "aria-label": "Filter rollouts" });
  const status = h("div", { class: "status", role: "status" });
  const list = h("div");
  const el = h(
    "div",
    { class: "view rollouts" },
    h("div", { class: "view-head" }, heading),
    h("p", {
      class: "muted small",
      text: "Rollouts of one app to several servers, run with `deploy-paradigm rollout`.",
    }),
    filters,
    status,
    list,
  );
  let app = "";

  filters.addEventListener("change", () => {
    location.hash = route("/rollouts", { app: String(new FormData(filters).get("app") ?? "") });
  });

  async function refresh() {
    const { rollouts } = await api("/api/rollouts", { app, limit: LIMIT });
    const now = Date.now();
    put(status, rollouts.length ? "" : app ? `No rollouts of ${app} recorded.` : "No rollouts recorded yet.");
    put(
      list,
      rollouts.length
        ? table(
          ["Rollout", "App", "Commit", "Started", "Duration", "Outcome", "Servers ok", "Message"],
          rollouts.map((r) =>
            h(
              "tr",
              { class: `rollout-row outcome-${r.outcome}`, dataset: { id: String(r.id) } },
              h("td", {}, h("a", { href: rolloutHref(r.id), text: `#${r.id}` })),
              h("td", { class: "app", text: r.app }),
              h("td", {}, commitCode(r)),
              h("td", {}, when(r.startedAt, now)),
              h("td", { class: "num duration", text: duration(rolloutElapsed(r, now)) }),
              h("td", { class: "outcome" }, outcomeBadge(r.outcome)),
              h("td", { class: "num servers-done", text: serversDone(r) }),
              h("td", { class: "message", text: r.message ?? "" }),
            )
          ),
          "rollouts",
        )
        : "",
    );
  }

  return {
    el,
    heading,
    title: "Rollouts · Fleet",
    async show(p) {
      app = p.get("app") ?? "";
      const names = await fleetNames();
      put(filters, select("app", "App", "every app", names.apps, app));
      await refresh();
    },
    refresh,
    notice(error) {
      put(status, errorBox(error));
    },
  };
}

/** One rollout's view. */
export function rolloutView(id) {
  const heading = h("h1", { tabindex: "-1", text: `Rollout #${id}` });
  const badge = h("span");
  const facts = h("dl", { class: "facts" });
  const message = h("div");
  const servers = h("div");
  const notices = h("div");
  const el = h(
    "div",
    { class: "view rollout" },
    h("p", { class: "crumbs" }, h("a", { href: route("/rollouts"), text: "← Rollouts" })),
    h("div", { class: "view-head" }, heading, badge),
    notices,
    facts,
    message,
    h("section", { class: "panel" }, h("h2", { text: "Servers" }), servers),
  );

  function render(r) {
    const now = Date.now();
    put(heading, `Rollout #${r.id} of ${r.app}`);
    pageTitle(`Rollout #${r.id} of ${r.app} · Fleet`);
    put(badge, outcomeBadge(r.outcome));
    const options = optionsText(r.options);
    put(
      facts,
      ...[
        ["App", h("a", { href: route("/rollouts", { app: r.app }), text: r.app })],
        ["Commit", [commitCode(r), r.ref ? ` ${r.ref}` : ""]],
        ["Started", when(r.startedAt, now)],
        [r.finishedAt ? "Finished" : "Running for", r.finishedAt ? when(r.finishedAt, now) : ""],
        ["Duration", duration(rolloutElapsed(r, now))],
        ["Servers ok", serversDone(r)],
        ["Options", options || "—"],
      ].map(([term, value]) => h("div", {}, h("dt", { text: term }), h("dd", {}, value))),
    );
    put(message, r.message ? h("p", { class: "rollout-message", text: r.message }) : "");
    put(
      servers,
      r.servers.length
        ? table(
          ["Wave", "Server", "Outcome", "Version before → after", "Started", "Duration", "Message"],
          r.servers.map((s) =>
            h(
              "tr",
              { class: `rollout-server outcome-${s.outcome}`, dataset: { server: s.server } },
              h("td", { class: "num", text: String(s.wave) }),
              h("td", { class: "server" }, h("a", { href: serverHref(s.server), text: s.server })),
              h("td", { class: "outcome" }, outcomeBadge(s.outcome)),
              h("td", { class: "versions" }, h("code", { text: versionChange(s.versionBefore, s.versionAfter) })),
              h("td", {}, when(s.startedAt, now)),
              h("td", { class: "num", text: duration(s.durationMs) }),
              h("td", { class: "message", text: s.message ?? "" }),
            )
          ),
          "rollout-servers",
        )
        : h("p", { class: "muted", text: "No server started yet." }),
    );
  }

  async function refresh() {
    let r;
    try {
      r = await api(`/api/rollouts/${id}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        // The view's nodes stay in place, so a later refresh that finds it again renders into the page.
        for (const part of [badge, facts, message, servers]) put(part);
        put(notices, errorBox(error), h("p", {}, h("a", { href: "#/rollouts", text: "All rollouts" })));
        return;
      }
      throw error;
    }
    put(notices);
    render(r);
  }

  return {
    el,
    heading,
    title: `Rollout #${id} · Fleet`,
    show: refresh,
    refresh,
    notice(error) {
      put(notices, errorBox(error));
    },
  };
}
