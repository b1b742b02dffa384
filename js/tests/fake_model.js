// A stand-in for the anywidget model (get/set/on/off/save_changes/send) and a jsdom page,
// so that each widget's render() can be tested in node without a browser or a kernel.
import { JSDOM } from "jsdom";

export class FakeModel {
  constructor(state) {
    this.state = structuredClone(state);
    this.handlers = new Map();
    this.saves = 0;
    this.sent = [];
  }
  get(key) {
    return this.state[key];
  }
  set(key, value) {
    this.state[key] = value;
    for (const cb of this.handlers.get(`change:${key}`) ?? []) cb();
  }
  on(event, cb) {
    this.handlers.set(event, [...(this.handlers.get(event) ?? []), cb]);
  }
  off(event, cb) {
    this.handlers.set(event, (this.handlers.get(event) ?? []).filter((h) => h !== cb));
  }
  save_changes() {
    this.saves += 1;
  }
  send(message) {
    this.sent.push(message);
  }
  // a message from Python (anywidget's "msg:custom")
  receive(message) {
    for (const cb of this.handlers.get("msg:custom") ?? []) cb(message);
  }
}

// Install a fresh jsdom document as the global DOM; returns the element to render into.
export function freshDom() {
  const dom = new JSDOM("<!doctype html><html><body><div id='el'></div></body></html>", {
    pretendToBeVisual: true,
  });
  const { window } = dom;
  for (const key of ["window", "document", "navigator", "Node", "Element", "HTMLElement",
    "SVGElement", "Event", "KeyboardEvent", "MouseEvent", "WheelEvent", "Blob", "URL",
    "getComputedStyle", "requestAnimationFrame", "cancelAnimationFrame"]) {
    if (window[key] !== undefined) {
      Object.defineProperty(globalThis, key, { value: window[key], configurable: true, writable: true });
    }
  }
  return document.getElementById("el");
}
