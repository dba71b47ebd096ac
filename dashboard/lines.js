/**
 * Log lines (a server's error lines, search results) that open the lines around them on a click.
 * @module
 */
import { h, put } from "./dom.js";
import { api, orLogin } from "./api.js";
import { OWN_TIME } from "./format.js";
import { errorBox, stamp } from "./widgets.js";

/**
 * One log line as a button that opens the lines around it (Escape closes them).
 * @param {any} line a LineView
 * @param {any[]} content what the button shows
 */
export function lineItem(line, content) {
  const panelId = `ctx-${line.id}`;
  const button = h(
    "button",
    { type: "button", class: "line", "aria-expanded": "false", "aria-controls": panelId },
    content,
  );
  const item = h("li", { class: "line-item" }, button);
  /** @type {HTMLElement | null} */
  let panel = null;
  const close = () => {
    panel?.remove();
    panel = null;
    button.setAttribute("aria-expanded", "false");
    item.classList.remove("open");
  };
  button.addEventListener("click", async () => {
    if (panel) return close();
    panel = h(
      "div",
      { class: "context", id: panelId, role: "region", "aria-label": "Surrounding lines" },
      h("p", { class: "muted", text: "Loading…" }),
    );
    button.setAttribute("aria-expanded", "true");
    item.classList.add("open");
    item.append(panel);
    const mine = panel;
    try {
      const context = await api("/api/logs/context", {
        server: line.server,
        app: line.app,
        file: line.file,
        offset: line.offset,
        id: line.id,
        lines: 15,
      });
      if (panel !== mine) return;
      showContext(mine, context, () => (close(), button.focus()));
    } catch (error) {
      if (!orLogin(error) && panel === mine) put(mine, errorBox(error));
    }
  });
  item.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && panel) {
      close();
      button.focus();
    }
  });
  return item;
}

/** Fills `panel` with a /api/logs/context answer, the hit in the middle of its scroll box. */
function showContext(panel, context, close) {
  // Lines that start with their own timestamp need no second one beside them.
  const own = context.lines.every((l) => OWN_TIME.test(l.text));
  const list = h(
    "ol",
    { class: `ctx-lines${own ? " own-time" : ""}` },
    context.lines.map((l) =>
      h("li", { class: l.hit ? "hit" : null }, own ? null : stamp(l.ts), h("span", { class: "text", text: l.text }))
    ),
  );
  put(
    panel,
    h(
      "div",
      { class: "ctx-head" },
      h("span", {
        text:
          `${context.server} · ${context.app}/${context.file} · ${context.lines.length} lines around offset ${context.offset}`,
      }),
      h("button", { type: "button", class: "link-button", text: "Close", onclick: close }),
    ),
    list,
  );
  const hit = list.querySelector(".hit");
  if (hit instanceof HTMLElement) list.scrollTop = hit.offsetTop - list.clientHeight / 2 + hit.clientHeight / 2;
}

/** Search-result and error-line metadata: time, where (the server unless `server` is false). */
export const lineMeta = (line, server = true) =>
  h(
    "span",
    { class: "meta" },
    stamp(line.ts),
    server ? h("span", { class: "where", text: line.server }) : null,
    h("span", { class: "where", text: `${line.app}/${line.file}` }),
    line.kind === "gap" ? h("span", { class: "badge warn", text: "gap" }) : null,
  );
