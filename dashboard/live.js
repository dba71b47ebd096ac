/**
 * Live updates: the /api/events stream refreshes the view on screen after every collector cycle,
 * and the header's indicator says whether updates arrive.
 * @module
 */
import { api, orLogin, token } from "./api.js";
import { clock } from "./format.js";

/** How long to wait before trying again after the stream was refused. */
const RETRY_MS = 10_000;

/**
 * `run` made to run one at a time: a call while it runs is kept as one more run after it (any
 * number of calls meanwhile make one run). The returned function resolves when the runs it joined
 * are done.
 * @param {() => Promise<void>} run
 * @returns {() => Promise<void>}
 */
export function coalesce(run) {
  let running = null;
  let again = false;
  return async () => {
    if (running) {
      again = true;
      return;
    }
    running = (async () => {
      do {
        again = false;
        await run();
      } while (again);
    })();
    try {
      await running;
    } finally {
      running = null;
    }
  };
}

/** The time of a `cycle` event (its summary's `at`), in ms; `now` when the data has none. */
export function cycleTime(data, now = Date.now()) {
  let summary = null;
  try {
    summary = JSON.parse(data);
  } catch { /* refresh anyway */ }
  const at = summary?.at ? Date.parse(summary.at) : NaN;
  return Number.isNaN(at) ? now : at;
}

/**
 * The event stream and its indicator (`indicator`, an element). `refresh` re-renders the view;
 * `paused()` says not to retry (the login is on screen).
 * @param {{ indicator: HTMLElement, refresh: () => unknown, paused: () => boolean }} options
 */
export function liveUpdates({ indicator, refresh, paused }) {
  /** @type {EventSource | null} */
  let events = null;

  function show(state, text) {
    indicator.dataset.state = state;
    indicator.textContent = text;
    indicator.title = state === "live" ? "Updates arrive after every collector cycle" : "";
  }

  /** Opens the stream (`?token=`: EventSource cannot send headers); refreshes the view on each cycle. */
  function connect() {
    events?.close();
    const stored = token();
    const source = new EventSource(`/api/events${stored ? `?token=${encodeURIComponent(stored)}` : ""}`);
    events = source;
    let dropped = false;
    show("connecting", "connecting…");
    source.addEventListener("open", () => {
      show("live", "live");
      if (dropped) refresh(); // cycles may have been missed
      dropped = false;
    });
    source.addEventListener("error", () => {
      dropped = true;
      if (source.readyState === EventSource.CLOSED) {
        show("off", "offline");
        retry();
      } else show("connecting", "reconnecting…"); // EventSource retries by itself
    });
    source.addEventListener("cycle", (event) => {
      show("live", `live · ${clock().format(cycleTime(event.data))}`);
      refresh();
    });
  }

  /**
   * After the stream was refused (an HTTP error: EventSource gives up), tries a plain API call
   * every 10 s: it reopens the stream when it works, and asks for the token on a 401.
   */
  function retry() {
    events = null;
    setTimeout(async () => {
      if (events || paused()) return;
      try {
        await api("/api/fleet"); // reopens the stream (see the boot module's afterAnswer)
        refresh();
      } catch (error) {
        if (!orLogin(error)) retry();
      }
    }, RETRY_MS);
  }

  return {
    /** Opens the stream unless it is open. */
    ensure() {
      if (!events) connect();
    },
    /** Closes the stream: offline. */
    close() {
      events?.close();
      events = null;
      show("off", "offline");
    },
  };
}
