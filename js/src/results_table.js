// ResultsTable front end: one row per image, sortable, linked to `selected` and `hovered`,
// downloadable as CSV (the same text as Python's ResultsTable.to_csv()).

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

  let rowNodes = []; // <tr> per row, in image order
  let indexOf = new Map(); // image name -> row index
  let shownHover = null;

  function drawHeader() {
    const tr = document.createElement("tr");
    const sortBy = model.get("sort_by");
    const ascending = model.get("ascending");
    for (const column of model.get("columns") ?? []) {
      const th = document.createElement("th");
      th.className = `${P}-${column.kind}`;
      th.setAttribute("aria-sort", column.key !== sortBy ? "none" : ascending ? "ascending" : "descending");
      const b = document.createElement("button");
      b.type = "button";
      b.className = `${P}-sort`;
      b.dataset.key = column.key;
      b.title = `Sort by ${column.label}`;
      const arrow = document.createElement("span");
      arrow.className = `${P}-arrow`;
      arrow.textContent = column.key !== sortBy ? "" : ascending ? "▲" : "▼";
      b.append(column.label, arrow);
      th.append(b);
      tr.append(th);
    }
    thead.replaceChildren(tr);
  }

  function buildRows() {
    const rows = model.get("rows") ?? [];
    const columns = model.get("columns") ?? [];
    indexOf = new Map(rows.map((r, i) => [r.name, i]));
    // the widest part after the decimal point, per numeric column (characters)
    const fractions = new Map(columns.filter((c) => c.kind === "num").map((c) => [c.key,
      Math.max(0, ...rows.map((r) => splitNumber(displayText(r[c.key], c.key))[1].length))]));
    rowNodes = rows.map((row) => {
      const tr = document.createElement("tr");
      tr.dataset.name = row.name;
      tr.tabIndex = -1;
      if (row.valid === false) tr.classList.add(`${P}-invalid`);
      for (const column of columns) {
        const td = document.createElement("td");
        const value = row[column.key];
        td.className = `${P}-${column.kind} ${P}-col-${column.key}`;
        if (isMissing(value)) td.classList.add(`${P}-missing`);
        if (column.key === "group" && !isMissing(value)) {
          const swatch = document.createElement("span");
          swatch.className = `${P}-swatch`;
          swatch.dataset.group = value;
          td.append(swatch);
        }
        if (column.kind === "num") {
          td.append(...numberParts(displayText(value, column.key), fractions.get(column.key)));
          tr.append(td);
          continue;
        }
        td.append(displayText(value, column.key));
        if (column.key === "reason" && value) td.title = value;
        tr.append(td);
      }
      return tr;
    });
    empty.hidden = rows.length > 0;
    table.hidden = rows.length === 0;
    shownHover = null;
    paintSwatches();
    order();
    markSelected();
    markHovered();
  }

  // Re-order the existing <tr>s (no rebuild) after a sort change.
  function order() {
    const rows = model.get("rows") ?? [];
    const fragment = document.createDocumentFragment();
    for (const i of sortedIndices(rows, model.get("sort_by"), model.get("ascending"))) {
      fragment.append(rowNodes[i]);
    }
    tbody.replaceChildren(fragment);
    // one row is reachable with Tab (roving tabindex); the arrow keys move between rows
    if (rowNodes.length && !rowNodes.some((tr) => tr.tabIndex === 0)) tbody.firstElementChild.tabIndex = 0;
    drawHeader();
  }

  function paintSwatches() {
    const colors = model.get("colors") ?? {};
    for (const tr of rowNodes) {
      const swatch = tr.querySelector(`.${P}-swatch`);
      if (swatch) swatch.style.background = colors[swatch.dataset.group] ?? "transparent";
    }
  }

  function markSelected() {
    const chosen = new Set(model.get("selected") ?? []);
    for (const tr of rowNodes) {
      const on = chosen.has(tr.dataset.name);
      tr.classList.toggle(`${P}-selected`, on);
      tr.setAttribute("aria-selected", String(on));
    }
    const rows = model.get("rows") ?? [];
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
    shownHover = indexOf.has(name) ? rowNodes[indexOf.get(name)] : null;
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
      const next = event.key === "ArrowDown" ? tr.nextElementSibling : tr.previousElementSibling;
      if (next) {
        next.tabIndex = 0;
        tr.tabIndex = -1;
        next.focus();
        setTrait(model, "hovered", next.dataset.name);
      }
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
    const csv = toCSV(model.get("rows") ?? [], model.get("columns") ?? []);
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
  download.addEventListener("click", onDownload);

  const stopModel = onModel(model, {
    "change:rows": buildRows, "change:columns": buildRows, "change:colors": paintSwatches,
    "change:sort_by": order, "change:ascending": order,
    "change:selected": markSelected, "change:hovered": markHovered,
  });
  buildRows();

  return () => {
    stopModel();
    root.remove();
  };
}

export default { render };
