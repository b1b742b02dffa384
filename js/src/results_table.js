// ResultsTable front end: one row per image, sortable, linked to `selected` and `hovered`,
// downloadable as CSV (the same text as Python's ResultsTable.to_csv()).

import { decodeTexts, float64s, uint8s } from "./_data.js";
import { button, el, onModel, setTrait } from "./_dom.js";

const P = "smnb-table";

// -- pure helpers (exported for the unit tests) ----------------------------------------------
const isMissing = (v) => v === null || v === undefined || (typeof v === "number" && Number.isNaN(v));

const collator = new Intl.Collator(undefined, { numeric: true }); // "img2" before "img10"

function compareValues(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  if (typeof a === "boolean" && typeof b === "boolean") return Number(a) - Number(b);
  return collator.compare(String(a), String(b));
}

// Indices of `rows` sorted by `key`; missing values last in either direction, ties in image order.
export function sortedIndices(rows, key, ascending = true) {
  const order = rows.map((_, i) => i);
  if (!key) return ascending ? order : order.reverse();
  const sign = ascending ? 1 : -1;
  return order.sort((i, j) => {
    const a = rows[i][key];
    const b = rows[j][key];
    const ma = isMissing(a);
    const mb = isMissing(b);
    if (ma || mb) return ma === mb ? i - j : ma ? 1 : -1;
    return sign * compareValues(a, b) || i - j;
  });
}

function csvText(value) {
  if (isMissing(value)) return "";
  if (typeof value === "boolean") return value ? "True" : "False";
  return String(value);
}

function csvField(text) {
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

// The CSV text of the rows in image order: see ResultsTable.to_csv in Python.
export function toCSV(rows, columns) {
  const keys = columns.map((c) => c.key);
  const lines = [keys.map(csvField).join(",")];
  for (const row of rows) lines.push(keys.map((k) => csvField(csvText(row[k]))).join(","));
  return lines.join("\n") + "\n";
}

function displayText(value, key) {
  if (isMissing(value)) return key === "group" ? "alone" : "—";
  if (typeof value === "boolean") return value ? "yes" : "no";
  return String(value);
}

// A number's text split where its decimal point is (or would be): ["-12", ".5"], ["3", ""],
// ["1", ".5e+21"], ["1", "e-7"]. Numbers of a column line up on that point.
export function splitNumber(text) {
  const at = text.search(/[.eE]/);
  return at < 0 ? [text, ""] : [text.slice(0, at), text.slice(at)];
}

// Right-aligned cell content whose decimal points line up: the fraction (from the point on)
// is padded to the column's widest, in a monospace font with tabular digits.
function numberParts(text, width) {
  const [whole, fraction] = splitNumber(text);
  const a = el("span", `${P}-int`, whole);
  const b = el("span", `${P}-frac`, fraction);
  b.style.minWidth = `${width ?? 0}ch`;
  return [a, b];
}

/** Above this many rows only those in view are in the DOM (a virtual window over the rest). */
export const VIRTUAL_LIMIT = 500;
const OVERSCAN = 12; // rows rendered above and below the visible ones
const NOMINAL_HEIGHT = 420; // pixels of the scroller without layout (jsdom)

/**
 * The rows (one object per image, keys of the columns) of the columnar `data` traitlet:
 * numbers as float64 buffers (NaN: missing), booleans as uint8, strings as {texts, index}.
 * @param {Object} data
 * @param {{key: string, kind: string}[]} columns
 * @returns {Object[]}
 */
export function rowsFrom(data, columns) {
  const n = data?.count ?? 0;
  const decoded = columns.map((c) => {
    const v = data?.[c.key];
    if (c.kind === "num") return Array.from(float64s(v), (x) => (Number.isNaN(x) ? null : x));
    if (c.kind === "bool") return Array.from(uint8s(v), (x) => x === 1);
    return decodeTexts(v);
  });
  return Array.from({ length: n }, (_, i) => Object.fromEntries(columns.map((c, k) => [c.key, decoded[k][i] ?? null])));
}

// -- the widget ------------------------------------------------------------------------------
/**
 * @param {{model: *, el: HTMLElement}} view  anywidget's model and the output element
 * @returns {() => void}  cleanup
 */
function render({ model, el: host }) {
  const root = el("div", `${P}-widget`);
  const toolbar = el("div", `${P}-toolbar`);
  const summary = el("span", `${P}-summary`);
  summary.setAttribute("aria-live", "polite");
  const download = button(`${P}-download`, "Download CSV", "Save the table as a CSV file (image order)");
  toolbar.append(summary, download);

  const scroller = el("div", `${P}-scroll`);
  const table = /** @type {HTMLTableElement} */ (el("table", `${P}-grid`));
  const thead = table.createTHead();
  const tbody = table.createTBody();
  scroller.append(table);
  const empty = el("div", `${P}-empty`, "No results yet: run the sky matching.");
  root.append(toolbar, scroller, empty);
  host.append(root);

  let rows = []; // one object per image, in image order
  let order = []; // row indices in the order shown
  let position = new Map(); // row index -> place in `order`
  let indexOf = new Map(); // image name -> row index
  let nodes = new Map(); // row index -> <tr>, for the rows in the DOM
  let fractions = new Map(); // numeric column -> widest part after the decimal point
  let virtual = false;
  let rowHeight = 0;
  let focusRow = -1; // the row reachable with Tab (roving tabindex)
  let shownHover = null;
  let frame = 0;

  const columns = () => model.get("columns") ?? [];

  function drawHeader() {
    const tr = el("tr");
    const sortBy = model.get("sort_by");
    const ascending = model.get("ascending");
    for (const column of columns()) {
      const th = el("th", `${P}-${column.kind}`);
      th.setAttribute("aria-sort", column.key !== sortBy ? "none" : ascending ? "ascending" : "descending");
      const b = button(`${P}-sort`, "", `Sort by ${column.label}`);
      b.dataset.key = column.key;
      b.append(column.label, el("span", `${P}-arrow`, column.key !== sortBy ? "" : ascending ? "▲" : "▼"));
      th.append(b);
      tr.append(th);
    }
    thead.replaceChildren(tr);
  }

  /** The content of the cell `td` of `column` for `value` (its classes and children). */
  function fillCell(td, column, value, colors) {
    td.className = `${P}-${column.kind} ${P}-col-${column.key}`;
    if (isMissing(value)) td.classList.add(`${P}-missing`);
    td.replaceChildren();
    if (column.key === "group" && !isMissing(value)) {
      const swatch = el("span", `${P}-swatch`);
      swatch.dataset.group = value;
      swatch.style.background = colors[value] ?? "transparent";
      td.append(swatch);
    }
    if (column.kind === "num") {
      td.append(...numberParts(displayText(value, column.key), fractions.get(column.key)));
    } else {
      td.append(displayText(value, column.key));
      if (column.key === "reason" && value) td.title = value;
      else td.removeAttribute("title");
    }
  }

  function makeRow(i) {
    const row = rows[i];
    const tr = el("tr");
    tr.dataset.name = row.name;
    tr.tabIndex = i === focusRow ? 0 : -1;
    if (row.valid === false) tr.classList.add(`${P}-invalid`);
    const colors = model.get("colors") ?? {};
    for (const column of columns()) {
      const td = el("td");
      fillCell(td, column, row[column.key], colors);
      tr.append(td);
    }
    return tr;
  }

  /** Per numeric column, the widest part after the decimal point of its values. */
  function widestFractions() {
    return new Map(columns().filter((c) => c.kind === "num").map((c) => [c.key,
      rows.reduce((widest, r) => Math.max(widest, splitNumber(displayText(r[c.key], c.key))[1].length), 0)]));
  }

  /**
   * New data for the same images and columns (a re-solve): the rows in the DOM keep their
   * elements (focus, hover, scroll) and only the cells whose value changed are rewritten;
   * the order moves rows only if it changed.  Anything else rebuilds the body.
   */
  function updateRows() {
    const next = rowsFrom(model.get("data"), columns());
    const keys = columns().map((c) => c.key).join("\n");
    if (keys !== shownKeys || next.length !== rows.length || next.some((r, i) => r.name !== rows[i].name)) {
      return buildRows();
    }
    const before = rows;
    const widths = fractions;
    rows = next;
    fractions = widestFractions();
    const colors = model.get("colors") ?? {};
    const cols = columns();
    for (const [i, tr] of nodes) {
      tr.classList.toggle(`${P}-invalid`, rows[i].valid === false);
      cols.forEach((column, k) => {
        const value = rows[i][column.key];
        const td = tr.children[k];
        if (Object.is(value, before[i][column.key])) {
          if (column.kind === "num" && fractions.get(column.key) !== widths.get(column.key)) {
            td.querySelector(`.${P}-frac`).style.minWidth = `${fractions.get(column.key) ?? 0}ch`;
          }
          return;
        }
        fillCell(td, column, value, colors);
      });
    }
    const sortBy = model.get("sort_by");
    const moved = sortBy && rows.some((r, i) => !Object.is(r[sortBy], before[i][sortBy]));
    if (moved) order_();
    markSelected();
    markHovered();
  }

  let shownKeys = "";

  function buildRows() {
    rows = rowsFrom(model.get("data"), columns());
    shownKeys = columns().map((c) => c.key).join("\n");
    indexOf = new Map(rows.map((r, i) => [r.name, i]));
    fractions = widestFractions();
    virtual = rows.length > VIRTUAL_LIMIT;
    focusRow = -1;
    nodes = new Map();
    if (!virtual) rows.forEach((_, i) => nodes.set(i, makeRow(i)));
    empty.hidden = rows.length > 0;
    table.hidden = rows.length === 0;
    shownHover = null;
    order_();
    markSelected();
    markHovered();
  }

  // Sort: the existing <tr>s are moved (no rebuild); a virtual table re-draws its window.
  function order_() {
    order = sortedIndices(rows, model.get("sort_by"), model.get("ascending"));
    position = new Map(order.map((i, p) => [i, p]));
    if (focusRow < 0 || !position.has(focusRow)) focusRow = order[0] ?? -1;
    if (virtual) drawWindow();
    else {
      const fragment = document.createDocumentFragment();
      for (const i of order) fragment.append(nodes.get(i));
      tbody.replaceChildren(fragment);
      nodes.forEach((tr, i) => { tr.tabIndex = i === focusRow ? 0 : -1; });
    }
    drawHeader();
  }

  /** The rows in view (and a few more) between two spacers of the others' height. */
  function drawWindow() {
    const height = rowHeight || 24;
    const visible = scroller.clientHeight || NOMINAL_HEIGHT;
    const start = Math.max(0, Math.floor(scroller.scrollTop / height) - OVERSCAN);
    const end = Math.min(order.length, start + Math.ceil(visible / height) + 2 * OVERSCAN);
    const kept = new Map();
    const shown = [];
    for (let p = start; p < end; p++) {
      const i = order[p];
      const tr = nodes.get(i) ?? makeRow(i);
      kept.set(i, tr);
      shown.push(tr);
    }
    nodes = kept;
    const spacer = (rowsOf) => {
      const tr = el("tr", `${P}-spacer`);
      tr.setAttribute("aria-hidden", "true");
      const td = el("td");
      td.colSpan = Math.max(1, columns().length);
      td.style.height = `${rowsOf * height}px`;
      tr.append(td);
      return tr;
    };
    tbody.replaceChildren(spacer(start), ...shown, spacer(order.length - end));
    if (!rowHeight && shown.length) rowHeight = shown[0].getBoundingClientRect().height || 0;
    markSelected();
    markHovered();
  }

  /** Bring the row at place `p` of the order into the DOM and view. */
  function reveal(p) {
    const i = order[p];
    if (virtual && !nodes.has(i)) {
      const height = rowHeight || 24;
      scroller.scrollTop = Math.max(0, p * height - (scroller.clientHeight || NOMINAL_HEIGHT) / 2);
      drawWindow();
    }
    return nodes.get(i);
  }

  function onScroll() {
    if (!virtual || frame) return;
    const run = () => { frame = 0; drawWindow(); };
    frame = typeof requestAnimationFrame === "function" ? requestAnimationFrame(run) : setTimeout(run, 0);
  }

  function paintSwatches() {
    const colors = model.get("colors") ?? {};
    for (const tr of nodes.values()) {
      const swatch = tr.querySelector(`.${P}-swatch`);
      if (swatch) swatch.style.background = colors[swatch.dataset.group] ?? "transparent";
    }
  }

  function markSelected() {
    const chosen = new Set(model.get("selected") ?? []);
    for (const tr of nodes.values()) {
      const on = chosen.has(tr.dataset.name);
      tr.classList.toggle(`${P}-selected`, on);
      tr.setAttribute("aria-selected", String(on));
    }
    const invalid = rows.filter((r) => r.valid === false).length;
    summary.textContent = [
      `${rows.length} image${rows.length === 1 ? "" : "s"}`,
      invalid ? `${invalid} invalid` : "",
      chosen.size ? `${chosen.size} selected` : "",
    ].filter(Boolean).join(" · ");
  }

  function markHovered() {
    const name = model.get("hovered") ?? "";
    if (shownHover) shownHover.classList.remove(`${P}-hovered`);
    shownHover = nodes.get(indexOf.get(name)) ?? null;
    if (shownHover) shownHover.classList.add(`${P}-hovered`);
  }

  // -- events (delegated: one listener per kind, whatever the number of rows) ----------------
  function onHeaderClick(event) {
    const b = event.target.closest(`button.${P}-sort`);
    if (!b) return;
    const key = b.dataset.key;
    if (model.get("sort_by") === key) {
      model.set("ascending", !model.get("ascending"));
    } else {
      model.set("sort_by", key);
      model.set("ascending", true);
    }
    model.save_changes();
  }

  // A click deselects a selected row, or selects only this one; with shift (ctrl, cmd) it adds.
  function toggleRow(name, add) {
    const current = model.get("selected") ?? [];
    if (current.includes(name)) setTrait(model, "selected", current.filter((n) => n !== name));
    else setTrait(model, "selected", add ? [...current, name] : [name]);
  }

  function onRowClick(event) {
    const tr = event.target.closest("tr[data-name]");
    if (!tr) return;
    toggleRow(tr.dataset.name, event.shiftKey || event.ctrlKey || event.metaKey);
  }

  function onRowKey(event) {
    const tr = event.target.closest("tr[data-name]");
    if (!tr) return;
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      toggleRow(tr.dataset.name, event.shiftKey || event.ctrlKey || event.metaKey);
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const p = position.get(indexOf.get(tr.dataset.name)) + (event.key === "ArrowDown" ? 1 : -1);
      if (p < 0 || p >= order.length) return;
      const next = reveal(p);
      tr.tabIndex = -1;
      focusRow = order[p];
      next.tabIndex = 0;
      next.focus();
      setTrait(model, "hovered", next.dataset.name);
    }
  }

  function onRowOver(event) {
    const tr = event.target.closest("tr[data-name]");
    if (tr && model.get("hovered") !== tr.dataset.name) setTrait(model, "hovered", tr.dataset.name);
  }

  function onLeave() {
    if (model.get("hovered")) setTrait(model, "hovered", "");
  }

  function onDownload() {
    const csv = toCSV(rows, columns());
    const urls = URL; // the same object revokes the URL later
    const url = urls.createObjectURL(new Blob([csv], { type: "text/csv;charset=utf-8" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = model.get("filename") || "skymatch_results.csv";
    a.style.display = "none";
    root.append(a);
    a.click();
    a.remove();
    setTimeout(() => urls.revokeObjectURL(url), 1000);
  }

  thead.addEventListener("click", onHeaderClick);
  tbody.addEventListener("click", onRowClick);
  tbody.addEventListener("mousedown", (event) => {
    // a shift-click selects rows, not the text between two clicks
    if (event.shiftKey || event.ctrlKey || event.metaKey) event.preventDefault();
  });
  tbody.addEventListener("keydown", onRowKey);
  tbody.addEventListener("mouseover", onRowOver);
  tbody.addEventListener("mouseleave", onLeave);
  scroller.addEventListener("scroll", onScroll);
  download.addEventListener("click", onDownload);

  const stopModel = onModel(model, {
    "change:data": updateRows, "change:columns": buildRows, "change:colors": paintSwatches,
    "change:sort_by": order_, "change:ascending": order_,
    "change:selected": markSelected, "change:hovered": markHovered,
  });
  buildRows();

  return () => {
    stopModel();
    root.remove();
  };
}

export default { render };
