/**
 * DOM helpers: data only ever becomes text nodes or attribute values (no HTML is parsed from data).
 * `document` is only touched when they are called.
 * @module
 */

/**
 * Creates an element. `props`: `class`, `text`, `on<event>` (a function), `dataset`, or any
 * attribute (true → empty value; null/undefined/false → not set). Children: nodes or text.
 * @param {string} tag
 * @param {Record<string, any>} [props]
 * @param {...any} children
 * @returns {HTMLElement}
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const key in props) {
    const value = props[key];
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  add(el, children);
  return el;
}

/** Appends nodes and text (as text nodes) to `el`, nested arrays flattened; null, undefined, false and "" skipped. */
export function add(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false || child === "") continue;
    if (Array.isArray(child)) add(el, child);
    else el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the children of `el` (as {@link add} takes them). */
export function put(el, ...children) {
  el.replaceChildren();
  add(el, children);
}

/** A copy of the content of index.html's `<template id=…>`. */
export const fromTemplate = (id) =>
  /** @type {HTMLTemplateElement} */ (document.getElementById(id)).content.cloneNode(true);

/** The element of index.html with this id. */
export const byId = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
