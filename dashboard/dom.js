/**
 * DOM helpers: data only ever becomes text nodes or attribute values (no HTML is parsed from data),
 * and what is shown of it (text, and the attributes in {@link SHOWN}) goes through format.js's
 * `visible`: control and bidi characters escaped, as on the terminal. `document` is only touched
 * when they are called.
 * @module
 */
import { visible } from "./format.js";

/** Attributes the page shows (tooltips, labels read out): escaped like text. Others (value, href, data-) are kept. */
const SHOWN = new Set(["title", "aria-label", "alt", "placeholder"]);

/** An attribute's value as set: shown ones {@link visible}. */
const attribute = (key, value) => SHOWN.has(key) ? visible(String(value)) : String(value);

/** A text node of `text`, {@link visible}. */
const textNode = (text) => document.createTextNode(visible(String(text)));

/** Sets the page's title (a tab's label), {@link visible}. */
export function pageTitle(text) {
  document.title = visible(text);
}

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
    else if (key === "text") el.textContent = visible(String(value));
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : attribute(key, value));
  }
  add(el, children);
  return el;
}

/** Appends nodes and text (as text nodes) to `el`, nested arrays flattened; null, undefined, false and "" skipped. */
export function add(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false || child === "") continue;
    if (Array.isArray(child)) add(el, child);
    else el.appendChild(child instanceof Node ? child : textNode(child));
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
  if (typeof node === "string") return textNode(node);
  const el = document.createElementNS(SVG_NS, node[0]);
  const attrs = node[1];
  for (const key in attrs) {
    const value = attrs[key];
    if (value !== undefined && value !== null && value !== false) el.setAttribute(key, attribute(key, value));
  }
  for (let i = 2; i < node.length; i++) svgChildren(el, node[i]);
  return el;
}

function svgChildren(el, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child) && typeof child[0] !== "string") { for (const c of child) svgChildren(el, c); }
  else el.appendChild(svg(child));
}
