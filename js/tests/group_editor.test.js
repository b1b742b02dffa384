// Unit tests of js/src/group_editor.js with a fake model: `cd js && node --test tests/`
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { FakeModel, freshDom } from "./fake_model.js";

const widget = (await import("../src/group_editor.js")).default;

const STATE = {
  names: ["img00", "img01", "img02", "img03", "img04"],
  groups: { img00: "e1", img01: "e1", img02: "e2", img03: null, img04: null },
  selected: [],
  colors: { e1: "#E69F00", e2: "#56B4E9" },
  presets: [
    { id: "alone", label: "Every image alone", title: "each image its own sky" },
    { id: "by:exposure", label: "By exposure", title: "2 groups" },
  ],
  active_preset: "",
  isolated: [],
  can_undo: false,
  error: "",
};

let el;
beforeEach(() => {
  el = freshDom();
});

function mount(overrides = {}) {
  const model = new FakeModel({ ...STATE, ...overrides });
  const cleanup = widget.render({ model, el });
  return { model, cleanup };
}

const click = (node, init = {}) => node.dispatchEvent(new MouseEvent("click", { bubbles: true, ...init }));
const key = (node, k, init = {}) =>
  node.dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true, cancelable: true, ...init }));
const q = (sel) => el.querySelector(sel);
const qa = (sel) => [...el.querySelectorAll(sel)];
const type = (input, text) => {
  input.value = text;
  input.dispatchEvent(new Event("input", { bubbles: true }));
};
const member = (name) => q(`.smnb-groups-member[data-name="${name}"]`);
const group = (label) => q(`.smnb-groups-group[data-label="${label}"]`);

test("renders one chip per group, in order, with its colour and members; the rest alone", () => {
  mount();
  const labels = qa(".smnb-groups-chip").map((c) => c.dataset.label);
  assert.deepEqual(labels, ["e1", "e2"]);
  assert.equal(group("e1").style.getPropertyValue("--smnb-group-color"), "#E69F00");
  const members = (node) => [...node.querySelectorAll(".smnb-groups-member")].map((b) => b.textContent);
  assert.deepEqual(members(group("e1")), ["img00", "img01"]);
  assert.deepEqual(members(q(".smnb-groups-alone")), ["img03", "img04"]);
  assert.equal(q('.smnb-groups-chip[data-label="e1"] .smnb-groups-size').textContent, "2");
  // every control is a real <button>, so Tab and Enter work without extra code
  for (const node of qa("[data-role]")) {
    assert.ok(["BUTTON", "INPUT"].includes(node.tagName), node.outerHTML);
  }
  assert.deepEqual(qa("datalist option").map((o) => o.value), ["e1", "e2"]);
});

test("clicking members toggles `selected` (in image order) and saves", () => {
  const { model } = mount();
  click(member("img03"));
  click(member("img00"));
  assert.deepEqual(model.get("selected"), ["img00", "img03"]);
  assert.equal(model.saves, 2);
  assert.equal(member("img00").getAttribute("aria-pressed"), "true"); // re-rendered on change
  click(member("img03"));
  assert.deepEqual(model.get("selected"), ["img00"]);
  assert.match(q(".smnb-groups-count").textContent, /1 selected/);
});

test("clicking a chip selects its group; again clears; shift adds", () => {
  const { model } = mount({ selected: ["img03"] });
  click(q('.smnb-groups-chip[data-label="e1"]'));
  assert.deepEqual(model.get("selected"), ["img00", "img01"]);
  assert.equal(q('.smnb-groups-chip[data-label="e1"]').getAttribute("aria-pressed"), "true");
  click(q('.smnb-groups-chip[data-label="e1"]'));
  assert.deepEqual(model.get("selected"), []);
  model.set("selected", ["img04"]);
  click(q('.smnb-groups-chip[data-label="e2"]'), { shiftKey: true });
  assert.deepEqual(model.get("selected"), ["img02", "img04"]);
});

test("Enter in the name input and the Assign button send assign; input clears once applied", () => {
  const { model } = mount({ selected: ["img03", "img04"] });
  const input = q(".smnb-groups-name");
  input.value = "new";
  key(input, "Enter");
  assert.deepEqual(model.sent, [{ type: "assign", names: ["img03", "img04"], label: "new" }]);
  model.set("groups", { ...STATE.groups, img03: "new", img04: "new" }); // Python applied it
  assert.equal(input.value, "");
  assert.deepEqual(qa(".smnb-groups-chip").map((c) => c.dataset.label), ["e1", "e2", "new"]);
  type(input, "e2");
  click(q(".smnb-groups-assign-button"));
  assert.deepEqual(model.sent[1], { type: "assign", names: ["img03", "img04"], label: "e2" });
  model.set("error", "some problem"); // Python refused: the name stays for correcting
  assert.equal(input.value, "e2");
});

test("per-group buttons: add selected, dissolve; ungroup selected; presets; undo", () => {
  const { model } = mount({ selected: ["img03"], can_undo: true, active_preset: "by:exposure" });
  click(group("e2").querySelector(".smnb-groups-add"));
  click(group("e1").querySelector(".smnb-groups-dissolve"));
  click(q(".smnb-groups-ungroup-button"));
  click(q('.smnb-groups-preset[data-id="by:exposure"]'));
  click(q(".smnb-groups-undo"));
  assert.deepEqual(model.sent, [
    { type: "assign", names: ["img03"], label: "e2" },
    { type: "ungroup", names: ["img00", "img01"] },
    { type: "ungroup", names: ["img03"] },
    { type: "preset", id: "by:exposure" },
    { type: "undo" },
  ]);
  assert.equal(q('.smnb-groups-preset[data-id="by:exposure"]').getAttribute("aria-pressed"), "true");
  assert.equal(q('.smnb-groups-preset[data-id="alone"]').getAttribute("aria-pressed"), "false");
});

test("undo is disabled until can_undo; Ctrl+Z sends undo", () => {
  const { model } = mount();
  assert.equal(q(".smnb-groups-undo").disabled, true);
  key(q(".smnb-groups-member"), "z", { ctrlKey: true });
  assert.deepEqual(model.sent, []);
  model.set("can_undo", true);
  assert.equal(q(".smnb-groups-undo").disabled, false);
  key(q(".smnb-groups-member"), "z", { ctrlKey: true });
  assert.deepEqual(model.sent, [{ type: "undo" }]);
});

test("buttons that need a selection are disabled without one", () => {
  const { model } = mount();
  assert.equal(q(".smnb-groups-ungroup-button").disabled, true);
  assert.equal(group("e1").querySelector(".smnb-groups-add").disabled, true);
  model.set("selected", ["img00"]);
  assert.equal(q(".smnb-groups-ungroup-button").disabled, false);
  assert.equal(group("e1").querySelector(".smnb-groups-add").disabled, false);
});

test("rename in place: Enter sends rename, Escape cancels", () => {
  const { model } = mount();
  click(group("e2").querySelector(".smnb-groups-rename"));
  let field = q(".smnb-groups-rename-input");
  assert.equal(field.value, "e2");
  assert.equal(document.activeElement, field);
  field.value = "  second ";
  key(field, "Enter");
  assert.deepEqual(model.sent, [{ type: "rename", old: "e2", new: "second" }]);
  assert.equal(q(".smnb-groups-rename-input"), null);
  click(group("e1").querySelector(".smnb-groups-rename"));
  field = q(".smnb-groups-rename-input");
  field.value = "other";
  key(field, "Escape");
  assert.equal(model.sent.length, 1);
  assert.ok(q('.smnb-groups-chip[data-label="e1"]'));
});

test("error and isolated-group warning are shown from the traitlets; dismiss clears error", () => {
  const { model } = mount();
  assert.equal(q(".smnb-groups-error").hidden, true);
  assert.equal(q(".smnb-groups-warning").hidden, true);
  model.set("error", "assign(): the group name must be a non-empty str");
  assert.equal(q(".smnb-groups-error").hidden, false);
  assert.match(q(".smnb-groups-error").textContent, /non-empty str/);
  model.set("isolated", ["e2"]);
  assert.equal(q(".smnb-groups-warning").hidden, false);
  assert.match(q(".smnb-groups-warning").textContent, /“e2” overlaps no image outside it/);
  assert.ok(group("e2").classList.contains("smnb-groups-isolated"));
  assert.ok(!group("e1").classList.contains("smnb-groups-isolated"));
  click(q(".smnb-groups-dismiss"));
  assert.equal(model.get("error", ""), "");
  assert.equal(q(".smnb-groups-error").hidden, true);
});

test("keyboard focus survives a re-render caused by the click", () => {
  const { model } = mount();
  member("img01").focus();
  click(member("img01"));
  assert.equal(document.activeElement, member("img01"));
  assert.deepEqual(model.get("selected"), ["img01"]);
});

test("cleanup stops listening", () => {
  const { model, cleanup } = mount();
  cleanup();
  model.set("groups", { img00: null, img01: null, img02: null, img03: null, img04: null });
  assert.equal(el.children.length, 0);
});

test("Assign is disabled until images are selected and a name is typed, and says why", () => {
  const { model } = mount();
  const assign = q(".smnb-groups-assign-button");
  const input = q(".smnb-groups-name");
  assert.equal(assign.disabled, true);
  assert.match(assign.title, /Select images first/);
  type(input, "new");
  assert.equal(assign.disabled, true); // a name, but nothing selected
  click(assign);
  assert.deepEqual(model.sent, []); // a disabled button sends nothing
  model.set("selected", ["img03"]);
  assert.equal(assign.disabled, false);
  assert.match(assign.title, /Put the 1 selected image\(s\) in group “new”/);
  type(input, "  ");
  assert.equal(assign.disabled, true);
  assert.match(assign.title, /Type a group name first/);
  type(input, "new");
  click(assign);
  assert.deepEqual(model.sent, [{ type: "assign", names: ["img03"], label: "new" }]);
  model.set("groups", { ...STATE.groups, img03: "new" }); // applied: the name clears
  assert.equal(input.value, "");
  assert.equal(assign.disabled, true);
});

test("a group of thousands shows its first images as buttons and says how many more", async () => {
  const { MEMBERS_SHOWN } = await import("../src/group_editor.js");
  const names = Array.from({ length: 5000 }, (_, i) => `i${i}`);
  const el = freshDom();
  const model = new FakeModel({ ...STATE, names, groups: Object.fromEntries(names.map((n, i) => [n, i < 3000 ? "big" : null])) });
  widget.render({ model, el });
  const rows = [...el.querySelectorAll("li")];
  assert.equal(rows[0].querySelectorAll(".smnb-groups-member").length, MEMBERS_SHOWN);
  assert.match(rows[0].textContent, new RegExp(`\\+ ${3000 - MEMBERS_SHOWN} more`));
  assert.match(rows[1].textContent, new RegExp(`\\+ ${2000 - MEMBERS_SHOWN} more`));
});

test("a new selection updates what shows it without redrawing the list", () => {
  const { model } = mount();
  const before = qa("[data-role]");
  model.set("selected", ["img00", "img01", "img03"]);
  const after = qa("[data-role]"); // the same elements: the focus stays where it is
  assert.ok(after.length === before.length && after.every((node, i) => node === before[i]));
  assert.equal(member("img00").getAttribute("aria-pressed"), "true");
  assert.equal(member("img02").getAttribute("aria-pressed"), "false");
  assert.equal(member("img03").getAttribute("aria-pressed"), "true");
  assert.equal(q('.smnb-groups-chip[data-label="e1"]').getAttribute("aria-pressed"), "true"); // all of e1
  assert.equal(q('.smnb-groups-chip[data-label="e2"]').getAttribute("aria-pressed"), "false");
  assert.ok(qa(".smnb-groups-add").every((b) => !b.disabled));
  assert.equal(q(".smnb-groups-count").textContent, "3 selected");
  assert.equal(q(".smnb-groups-ungroup-button").disabled, false);
  model.set("selected", ["img01"]);
  assert.equal(q('.smnb-groups-chip[data-label="e1"]').getAttribute("aria-pressed"), "false");
  model.set("selected", []);
  assert.ok(qa(".smnb-groups-add").every((b) => b.disabled));
  assert.equal(q(".smnb-groups-clear").disabled, true);
});

test("thousands of groups: the first ones drawn, the rest on request, focus on the first new", async () => {
  const { GROUPS_SHOWN } = await import("../src/group_editor.js");
  const n = 2 * GROUPS_SHOWN + 50;
  const names = Array.from({ length: n }, (_, i) => `i${i}`);
  const { model } = mount({ names, groups: Object.fromEntries(names.map((m, i) => [m, `g${i}`])), colors: {} });
  const chips = () => qa(".smnb-groups-chip").map((c) => c.dataset.label);
  assert.equal(chips().length, GROUPS_SHOWN);
  assert.deepEqual(chips().slice(0, 2), ["g0", "g1"]);
  const more = q('[data-role="more-groups"]');
  assert.equal(more.tagName, "BUTTON"); // keyboard: Tab and Enter
  assert.match(q(".smnb-groups-hidden").textContent, new RegExp(`${n - GROUPS_SHOWN} more groups`));
  more.focus();
  click(more);
  assert.equal(chips().length, 2 * GROUPS_SHOWN);
  assert.equal(document.activeElement.dataset.label, `g${GROUPS_SHOWN}`);
  click(q('[data-role="more-groups"]'));
  assert.equal(chips().length, n);
  assert.equal(q('[data-role="more-groups"]'), null);
  // a chip still selects its group, and a selection still shows on the groups drawn
  click(q('.smnb-groups-chip[data-label="g7"]'));
  assert.deepEqual(model.get("selected"), ["i7"]);
  assert.equal(q('.smnb-groups-chip[data-label="g7"]').getAttribute("aria-pressed"), "true");
});
