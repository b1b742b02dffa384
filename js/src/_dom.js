// Small helpers shared by the widgets' front ends: making elements and ids, talking to the
// model, and undoing both on cleanup.  Imported by the widget modules (node and editors follow
// the import; in the page, Python's widgets/_assets.py inlines this module into each widget).

const SVGNS = "http://www.w3.org/2000/svg";

/**
 * An HTML element with a class and a text.
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 * @returns {HTMLElement}
 */
export function el(tag, className = "", text = undefined) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== "") node.textContent = text;
  return node;
}

/**
 * An SVG element with attributes and a class.
 * @param {string} tag
 * @param {Object<string, string|number>} [attrs]
 * @param {string} [className]
 * @returns {SVGElement}
 */
export function svgEl(tag, attrs = {}, className = "") {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (className) node.setAttribute("class", className);
  return node;
}

/**
 * A `<button type="button">` (never a form submit) with a class, a text and a title.
 * @param {string} className
 * @param {string} text
 * @param {string} [title]
 * @returns {HTMLButtonElement}
 */
export function button(className, text, title = "") {
  const b = /** @type {HTMLButtonElement} */ (el("button", className, text));
  b.type = "button";
  if (title) b.title = title;
  return b;
}

let counter = 0;

/**
 * An id unique in the page, for `id`/`for`/`url(#...)` references between elements of one
 * view: several views (and several copies of a module) may share the page.
 * @param {string} prefix
 * @returns {string}
 */
export function uniqueId(prefix) {
  counter += 1;
  return `${prefix}-${counter}-${Math.random().toString(36).slice(2, 8)}`;
}

/**
 * Set a traitlet from the page and send it to Python.
 * @param {{set: Function, save_changes: Function}} model
 * @param {string} key
 * @param {*} value
 */
export function setTrait(model, key, value) {
  model.set(key, value);
  model.save_changes();
}

/**
 * Listen to model events (`{"change:x": fn, "msg:custom": fn}`); returns what stops it.
 * @param {{on: Function, off: Function}} model
 * @param {Object<string, Function>} handlers
 * @returns {() => void}
 */
export function onModel(model, handlers) {
  for (const [event, fn] of Object.entries(handlers)) model.on(event, fn);
  return () => { for (const [event, fn] of Object.entries(handlers)) model.off(event, fn); };
}

/**
 * Listen to DOM events (`[target, type, fn, options?]` each); returns what stops it.
 * @param {Array<[EventTarget, string, Function, (AddEventListenerOptions|undefined)?]>} listeners
 * @returns {() => void}
 */
export function listen(listeners) {
  for (const [target, type, fn, options] of listeners) target.addEventListener(type, fn, options);
  return () => { for (const [target, type, fn, options] of listeners) target.removeEventListener(type, fn, options); };
}
