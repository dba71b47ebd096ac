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

const SVG_NS = "http://www.w3.org/2000/svg";

/**
 * SVG elements from a tree `[tag, attributes, ...children]` (dashboard/charts.js makes them): a
 * child is a node, a string (a text node) or a list of children; null, undefined and false are
 * skipped, and so are attributes with those values. Nothing is parsed: text stays text.
 * @param {any} node
 * @returns {Node}
 */
export function svg(node) {
  if (typeof node === "string") return document.createTextNode(node);
  const el = document.createElementNS(SVG_NS, node[0]);
  const attrs = node[1];
  for (const key in attrs) {
    const value = attrs[key];
    if (value !== undefined && value !== null && value !== false) el.setAttribute(key, String(value));
  }
  for (let i = 2; i < node.length; i++) svgChildren(el, node[i]);
  return el;
}

function svgChildren(el, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child) && typeof child[0] !== "string") { for (const c of child) svgChildren(el, c); }
  else el.appendChild(svg(child));
}
