// Unit tests of js/src/results_table.js with a fake model: `cd js && node --test tests/`
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { encodeRows, FakeModel, freshDom } from "./fake_model.js";

const module = await import("../src/results_table.js");
const widget = module.default;
const { rowsFrom, sortedIndices, splitNumber, toCSV, VIRTUAL_LIMIT } = module;

// rows with awkward values and the CSV Python's ResultsTable.to_csv() makes of them
const FIXTURE = JSON.parse(readFileSync(new URL("./results_table_csv.json", import.meta.url), "utf8"));

const COLUMNS = FIXTURE.columns;
const row = (name, group, sky, valid = true, reason = "") => ({
  name, group, component: 0, sky, sky_err: sky === null ? null : 0.5, npix: 100, valid, reason,
});
const ROWS = [
  row("img2", "g", 10),
  row("img10", null, null, false, "no valid pixels"),
  row("img1", "g", 9.5),
  row("img3", "b", 100),
];
const data = (rows) => encodeRows(rows, COLUMNS);
const STATE = {
  data: data(ROWS), columns: COLUMNS, colors: { g: "#E69F00", b: "#56B4E9" }, selected: [], hovered: "",
  sort_by: "", ascending: true, filename: "results.csv",
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
const q = (sel) => el.querySelector(sel);
const shown = () => [...el.querySelectorAll("tbody tr")].map((tr) => tr.dataset.name);
const header = (key) => q(`button.smnb-table-sort[data-key="${key}"]`);
const tr = (name) => q(`tbody tr[data-name="${name}"]`);

test("renders a header per column and a row per image, invalid rows marked with their reason", () => {
  mount();
  assert.deepEqual([...el.querySelectorAll("th")].map((th) => th.textContent), COLUMNS.map((c) => c.label));
  assert.deepEqual(shown(), ["img2", "img10", "img1", "img3"]);
  const bad = tr("img10");
  assert.ok(bad.classList.contains("smnb-table-invalid"));
  assert.equal(bad.querySelector(".smnb-table-col-reason").textContent, "no valid pixels");
  assert.equal(bad.querySelector(".smnb-table-col-sky").textContent, "—");
  assert.equal(bad.querySelector(".smnb-table-col-valid").textContent, "no");
  assert.equal(bad.querySelector(".smnb-table-col-group").textContent, "alone");
  assert.equal(tr("img2").querySelector(".smnb-table-swatch").style.background, "rgb(230, 159, 0)");
  assert.match(q(".smnb-table-summary").textContent, /4 images · 1 invalid/);
  assert.equal(q(".smnb-table-empty").hidden, true);
});

test("no rows: an explanation instead of an empty table", () => {
  mount({ data: data([]) });
  assert.equal(q(".smnb-table-empty").hidden, false);
  assert.equal(q("table").hidden, true);
});

test("sortedIndices: numbers numerically, strings naturally, missing last both ways, stable", () => {
  const rows = [{ v: 10 }, { v: null }, { v: 9.5 }, { v: 100 }, { v: 9.5 }, { v: NaN }];
  assert.deepEqual(sortedIndices(rows, "v", true), [2, 4, 0, 3, 1, 5]);
  assert.deepEqual(sortedIndices(rows, "v", false), [3, 0, 2, 4, 1, 5]);
  const names = ["img10", "img2", "img1"].map((v) => ({ v }));
  assert.deepEqual(sortedIndices(names, "v", true), [2, 1, 0]);
  const flags = [true, false, true].map((v) => ({ v }));
  assert.deepEqual(sortedIndices(flags, "v", true), [1, 0, 2]);
  assert.deepEqual(sortedIndices(rows, "", true), [0, 1, 2, 3, 4, 5]);
});

test("clicking a header sorts (saved to the model); again reverses; DOM rows are moved, not rebuilt", () => {
  const { model } = mount();
  const before = tr("img1");
  click(header("sky"));
  assert.equal(model.get("sort_by"), "sky");
  assert.equal(model.get("ascending"), true);
  assert.equal(model.saves, 1);
  assert.deepEqual(shown(), ["img1", "img2", "img3", "img10"]);
  assert.equal(header("sky").parentElement.getAttribute("aria-sort"), "ascending");
  click(header("sky"));
  assert.equal(model.get("ascending"), false);
  assert.deepEqual(shown(), ["img3", "img2", "img1", "img10"]);
  assert.equal(header("sky").parentElement.getAttribute("aria-sort"), "descending");
  assert.equal(tr("img1"), before);
  click(header("name"));
  assert.deepEqual(shown(), ["img1", "img2", "img3", "img10"]);
  assert.equal(model.get("ascending"), true);
});

test("Python setting sort_by / ascending re-orders the rows", () => {
  const { model } = mount();
  model.set("sort_by", "group");
  assert.deepEqual(shown(), ["img3", "img2", "img1", "img10"]);
  model.set("ascending", false);
  assert.deepEqual(shown(), ["img2", "img1", "img3", "img10"]);
});

test("click selects only its row or deselects it; shift/ctrl-click adds", () => {
  const { model } = mount();
  click(tr("img2").querySelector("td"));
  assert.deepEqual(model.get("selected"), ["img2"]);
  assert.ok(tr("img2").classList.contains("smnb-table-selected"));
  click(tr("img3"), { shiftKey: true });
  click(tr("img1"), { ctrlKey: true });
  assert.deepEqual(model.get("selected"), ["img2", "img3", "img1"]);
  assert.match(q(".smnb-table-summary").textContent, /3 selected/);
  click(tr("img3"));
  assert.deepEqual(model.get("selected"), ["img2", "img1"]);
  click(tr("img10"));
  assert.deepEqual(model.get("selected"), ["img10"]);
  click(tr("img10"));
  assert.deepEqual(model.get("selected"), []);
  assert.equal(model.saves, 6);
  model.set("selected", ["img3"]); // from Python or a linked view
  assert.deepEqual([...el.querySelectorAll(".smnb-table-selected")].map((r) => r.dataset.name), ["img3"]);
  assert.equal(tr("img3").getAttribute("aria-selected"), "true");
});

test("keyboard: Enter toggles the focused row, arrows move and hover", () => {
  const { model } = mount();
  assert.equal(tr("img2").tabIndex, 0);
  tr("img2").focus();
  tr("img2").dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowDown", bubbles: true }));
  assert.equal(document.activeElement, tr("img10"));
  assert.equal(model.get("hovered"), "img10");
  tr("img10").dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
  assert.deepEqual(model.get("selected"), ["img10"]);
});

test("hovering a row sets `hovered`; leaving clears it; Python's hovered highlights the row", () => {
  const { model } = mount();
  tr("img3").querySelector("td").dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
  assert.equal(model.get("hovered"), "img3");
  assert.ok(tr("img3").classList.contains("smnb-table-hovered"));
  q("tbody").dispatchEvent(new MouseEvent("mouseleave"));
  assert.equal(model.get("hovered"), "");
  assert.equal(el.querySelectorAll(".smnb-table-hovered").length, 0);
  model.set("hovered", "img1");
  assert.deepEqual([...el.querySelectorAll(".smnb-table-hovered")].map((r) => r.dataset.name), ["img1"]);
  model.set("hovered", "not-an-image");
  assert.equal(el.querySelectorAll(".smnb-table-hovered").length, 0);
});

test("toCSV gives exactly the CSV Python's to_csv() gives for the same rows", () => {
  assert.equal(toCSV(FIXTURE.rows, FIXTURE.columns), FIXTURE.csv);
});

test("Download CSV saves the rows in image order as a Blob through a[download]", async () => {
  const { model } = mount({ sort_by: "sky", ascending: false });
  const blobs = [];
  const clicked = [];
  URL.createObjectURL = (blob) => {
    blobs.push(blob);
    return "blob:fake";
  };
  URL.revokeObjectURL = () => {};
  window.HTMLAnchorElement.prototype.click = function () {
    clicked.push([this.download, this.href]);
  };
  click(q(".smnb-table-download"));
  assert.deepEqual(clicked, [["results.csv", "blob:fake"]]);
  assert.equal(await blobs[0].text(), toCSV(rowsFrom(model.get("data"), COLUMNS), COLUMNS));
  assert.equal(await blobs[0].text(), toCSV(ROWS, COLUMNS)); // the rows Python sent, unchanged
  assert.match(blobs[0].type, /^text\/csv/);
});

test("new rows rebuild the body and keep sort and selection", () => {
  const { model } = mount({ sort_by: "sky", selected: ["img3"] });
  model.set("data", data([row("x", null, 3), row("img3", "b", 1)]));
  assert.deepEqual(shown(), ["img3", "x"]);
  assert.ok(tr("img3").classList.contains("smnb-table-selected"));
});

test("a re-solve (new values, same images) rewrites only changed cells: the rows are not rebuilt", () => {
  const { model } = mount({ selected: ["img3"] });
  const rowsBefore = [...el.querySelectorAll("tbody tr")];
  const nameCell = tr("img2").querySelector(".smnb-table-col-name");
  const skyCell = tr("img2").querySelector(".smnb-table-col-sky");
  const skyInner = tr("img1").querySelector(".smnb-table-col-sky .smnb-table-int");
  tr("img1").focus();
  model.set("data", data([
    row("img2", "g", 11.25), row("img10", null, null, false, "no valid pixels"), row("img1", "g", 9.5),
    row("img3", "b", 7, false, "flagged"),
  ]));
  const rowsAfter = [...el.querySelectorAll("tbody tr")];
  assert.equal(rowsAfter.length, 4);
  rowsAfter.forEach((node, k) => assert.equal(node, rowsBefore[k])); // the same <tr>s, same order
  assert.equal(tr("img2").querySelector(".smnb-table-col-name"), nameCell); // the same <td>s
  assert.equal(tr("img2").querySelector(".smnb-table-col-sky"), skyCell);
  assert.equal(skyCell.textContent, "11.25");
  assert.equal(tr("img1").querySelector(".smnb-table-col-sky .smnb-table-int"), skyInner); // unchanged value
  // the unchanged cell follows the column's new decimal width (".25": 3 characters)
  assert.equal(tr("img1").querySelector(".smnb-table-col-sky .smnb-table-frac").style.minWidth, "3ch");
  assert.equal(tr("img3").querySelector(".smnb-table-col-sky").textContent, "7");
  assert.ok(tr("img3").classList.contains("smnb-table-invalid"));
  assert.equal(tr("img3").querySelector(".smnb-table-col-reason").title, "flagged");
  assert.ok(tr("img3").classList.contains("smnb-table-selected"));
  assert.equal(document.activeElement, tr("img1")); // the keyboard focus stays where it was
  assert.match(q(".smnb-table-summary").textContent, /4 images · 2 invalid · 1 selected/);
});

test("a re-solve sorted by the changed column moves the existing rows into the new order", () => {
  const { model } = mount({ sort_by: "sky" });
  assert.deepEqual(shown(), ["img1", "img2", "img3", "img10"]);
  const node = tr("img3");
  model.set("data", data([row("img2", "g", 10), row("img10", null, null, false), row("img1", "g", 9.5),
    row("img3", "b", 1)]));
  assert.deepEqual(shown(), ["img3", "img1", "img2", "img10"]);
  assert.equal(tr("img3"), node);
  // other images or columns: the body is built anew
  model.set("data", data([row("x", null, 3), row("img3", "b", 1)]));
  assert.deepEqual(shown(), ["img3", "x"]);
  assert.notEqual(tr("img3"), node);
});

test("500 rows: render, sort both ways and re-select (timings: bench/bench_results_table.js)", () => {
  const many = Array.from({ length: 500 }, (_, i) => row(`img${i}`, `g${i % 7}`, (i * 7919) % 503));
  const { model } = mount({ data: data(many) });
  const skies = () => shown().map((name) => many.find((r) => r.name === name).sky);
  click(header("sky"));
  const up = skies();
  assert.deepEqual(up, [...up].sort((a, b) => a - b));
  click(header("sky"));
  const down = skies();
  assert.deepEqual(down, [...up].reverse().sort((a, b) => b - a));
  model.set("selected", many.slice(0, 250).map((r) => r.name));
  assert.equal(el.querySelectorAll("tbody tr").length, 500);
  assert.deepEqual([...el.querySelectorAll(".smnb-table-selected")].map((tr) => tr.dataset.name).sort(),
    many.slice(0, 250).map((r) => r.name).sort());
});

test("cleanup stops listening", () => {
  const { model, cleanup } = mount();
  cleanup();
  model.set("data", data([]));
  assert.equal(el.children.length, 0);
});

test("numbers line up on the decimal point: the part after it is padded to the column's widest", () => {
  assert.deepEqual(splitNumber("-12.5"), ["-12", ".5"]);
  assert.deepEqual(splitNumber("100"), ["100", ""]);
  assert.deepEqual(splitNumber("1.5e+21"), ["1", ".5e+21"]);
  assert.deepEqual(splitNumber("1e-7"), ["1", "e-7"]);
  assert.deepEqual(splitNumber("—"), ["—", ""]);
  mount({ data: data([row("a", null, 100), row("b", null, -0.125), row("c", null, 12.5), row("d", null, null, false)]) });
  const cells = [...el.querySelectorAll("td.smnb-table-col-sky")];
  assert.deepEqual(cells.map((td) => td.textContent), ["100", "-0.125", "12.5", "—"]); // text unchanged
  assert.deepEqual(cells.map((td) => td.querySelector(".smnb-table-int").textContent), ["100", "-0", "12", "—"]);
  assert.deepEqual(cells.map((td) => td.querySelector(".smnb-table-frac").textContent), ["", ".125", ".5", ""]);
  assert.deepEqual(new Set(cells.map((td) => td.querySelector(".smnb-table-frac").style.minWidth)), new Set(["4ch"]));
  // each numeric column has its own width; text columns are left as they are
  const npix = [...el.querySelectorAll("td.smnb-table-col-npix .smnb-table-frac")];
  assert.deepEqual(new Set(npix.map((f) => f.style.minWidth)), new Set(["0ch"]));
  assert.equal(el.querySelector("td.smnb-table-col-name .smnb-table-int"), null);
});

test("the columnar data decodes to exactly the rows Python made (awkward values too)", () => {
  assert.deepEqual(rowsFrom(encodeRows(FIXTURE.rows, FIXTURE.columns), FIXTURE.columns), FIXTURE.rows);
});

test("10,000 rows: only those in view are in the DOM; sort, select and the keyboard still work", () => {
  const n = 10000;
  const many = Array.from({ length: n }, (_, i) => row(`img${i}`, `g${i % 7}`, (i * 7919) % 10007));
  const { model } = mount({ data: data(many) });
  const rendered = () => [...el.querySelectorAll("tbody tr[data-name]")];
  assert.ok(n > VIRTUAL_LIMIT && rendered().length > 10 && rendered().length < 100);
  assert.match(q(".smnb-table-summary").textContent, /10000 images/);
  const spacers = [...el.querySelectorAll("tbody tr.smnb-table-spacer")];
  assert.equal(spacers.length, 2);
  click(header("sky"));
  const skies = rendered().map((r) => many.find((m) => m.name === r.dataset.name).sky);
  assert.deepEqual(skies, [...skies].sort((a, b) => a - b));
  assert.equal(skies[0], 0);
  // a selection made elsewhere (the map) shows on the rows in view
  model.set("selected", [rendered()[3].dataset.name]);
  assert.equal(el.querySelectorAll(".smnb-table-selected").length, 1);
  // the keyboard walks past the rows in the DOM: the window follows
  let current = rendered()[0];
  current.focus();
  for (let k = 0; k < 150; k++) {
    current.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowDown", bubbles: true }));
    current = document.activeElement;
  }
  const sorted = [...many].sort((a, b) => a.sky - b.sky || many.indexOf(a) - many.indexOf(b));
  assert.equal(current.dataset.name, sorted[150].name);
  assert.equal(model.get("hovered"), sorted[150].name);
  current.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
  assert.deepEqual(model.get("selected"), [sorted[150].name]);
  // a re-solve: the rows in view keep their elements, their skies change in place
  model.set("sort_by", "");
  const inView = rendered();
  const resolved = many.map((r, i) => ({ ...r, sky: r.sky + 0.5 + (i % 3) }));
  model.set("data", data(resolved));
  assert.deepEqual(rendered(), inView);
  for (const node of inView) {
    const expected = resolved.find((r) => r.name === node.dataset.name).sky;
    assert.equal(node.querySelector(".smnb-table-col-sky").textContent, String(expected));
  }
});
