// GroupEditor front end: groups as coloured chips with their members, presets, undo.
// It only shows state and sends intent (model.send); Python validates and edits the groups.

import { button, el, onModel, setTrait, uniqueId } from "./_dom.js";

const P = "smnb-groups";

/** Each group shows at most this many of its images as buttons (then how many more). */
export const MEMBERS_SHOWN = 200;

/** The list shows this many groups at first, and this many more at each "Show more" (a
 * survey's thousands of exposures would be a hundred thousand elements, redrawn slowly). */
export const GROUPS_SHOWN = 300;

// {label: [names]} in order of first appearance, and the images alone, from {name: label}.
function partition(names, groups) {
  const byLabel = new Map();
  const alone = [];
  for (const name of names) {
    const label = groups[name];
    if (label === null || label === undefined) alone.push(name);
    else if (byLabel.has(label)) byLabel.get(label).push(name);
    else byLabel.set(label, [name]);
  }
  return { byLabel, alone };
}

// Something that finds "the same" control again after a re-render, to keep keyboard focus.
function focusKey(node) {
  if (!node || !node.dataset) return null;
  const { role, name, label, id } = node.dataset;
  return role ? JSON.stringify([role, name ?? null, label ?? null, id ?? null]) : null;
}

/**
 * @param {{model: *, el: HTMLElement}} view  anywidget's model and the output element
 * @returns {() => void}  cleanup
 */
function render({ model, el: host }) {
  const root = el("div", P);
  const toolbar = el("div", `${P}-toolbar`);
  const presetBox = el("div", `${P}-presets`);
  presetBox.setAttribute("role", "group");
  presetBox.setAttribute("aria-label", "Grouping presets");
  const undoButton = button(`${P}-undo`, "↶ Undo", "Take back the last group edit");
  undoButton.dataset.role = "undo";
  toolbar.append(el("span", `${P}-heading`, "Sky groups"), presetBox, undoButton);

  const list = el("ul", `${P}-list`);
  list.setAttribute("aria-label", "Groups and their images");

  const assignRow = el("div", `${P}-assign`);
  const count = el("span", `${P}-count`);
  count.setAttribute("aria-live", "polite");
  const input = el("input", `${P}-name`);
  input.type = "text";
  input.placeholder = "group name";
  input.setAttribute("aria-label", "Group name for the selected images");
  const datalist = el("datalist");
  datalist.id = uniqueId(`${P}-labels`);
  input.setAttribute("list", datalist.id);
  const assignButton = button(`${P}-assign-button`, "Assign", "Put the selected images in this group (Enter)");
  assignButton.dataset.role = "assign";
  const ungroupButton = button(`${P}-ungroup-button`, "Ungroup", "Make the selected images alone");
  ungroupButton.dataset.role = "ungroup";
  const clearButton = button(`${P}-clear`, "Clear selection");
  clearButton.dataset.role = "clear";
  assignRow.append(count, input, datalist, assignButton, ungroupButton, clearButton);

  const warning = el("div", `${P}-warning`);
  warning.setAttribute("role", "status");
  const errorBox = el("div", `${P}-error`);
  errorBox.setAttribute("role", "alert");
  const errorText = el("span", `${P}-error-text`);
  const dismiss = button(`${P}-dismiss`, "×", "Dismiss");
  dismiss.setAttribute("aria-label", "Dismiss the error");
  errorBox.append(errorText, dismiss);

  root.append(toolbar, list, assignRow, warning, errorBox);
  host.append(root);

  let pendingAssign = false; // clear the name input once Python has applied the assignment
  let renaming = null; // the label being renamed in place
  let refocus = null; // focusKey of the control to focus after the next re-render
  let limit = GROUPS_SHOWN; // groups drawn (more at each "Show more")
  let drawn = new Map(); // label -> members of the groups drawn (for `drawSelection`)

  const selected = () => model.get("selected") ?? [];
  function setSelected(names) {
    const order = model.get("names") ?? [];
    const chosen = new Set(names);
    setTrait(model, "selected", order.filter((n) => chosen.has(n)));
  }
  const send = (message) => model.send(message);

  // -- drawing ----------------------------------------------------------------------------
  function drawPresets() {
    const active = model.get("active_preset") ?? "";
    presetBox.replaceChildren(
      ...(model.get("presets") ?? []).map((p) => {
        const b = button(`${P}-preset`, p.label, p.title);
        b.dataset.role = "preset";
        b.dataset.id = p.id;
        b.setAttribute("aria-pressed", String(p.id === active));
        return b;
      }),
    );
    undoButton.disabled = !model.get("can_undo");
  }

  function memberButton(name, chosen) {
    const b = button(`${P}-member`, name, "Select or deselect this image");
    b.dataset.role = "member";
    b.dataset.name = name;
    b.setAttribute("aria-pressed", String(chosen.has(name)));
    return b;
  }

  // a button per image, up to MEMBERS_SHOWN (thousands of buttons would stall the page)
  function memberButtons(names, chosen) {
    const box = el("span", `${P}-members`);
    box.append(...names.slice(0, MEMBERS_SHOWN).map((n) => memberButton(n, chosen)));
    if (names.length > MEMBERS_SHOWN) {
      const more = names.length - MEMBERS_SHOWN;
      box.append(el("span", `${P}-more`, `+ ${more} more (select them in the map or the table)`));
    }
    return box;
  }

  function groupItem(label, members, chosen, colors, isolated) {
    const item = el("li", `${P}-group`);
    item.dataset.label = label;
    item.style.setProperty("--smnb-group-color", colors[label] ?? "#bdbdbd");
    if (isolated.has(label)) item.classList.add(`${P}-isolated`);
    let chip;
    if (renaming === label) {
      chip = el("input", `${P}-rename-input`);
      chip.type = "text";
      chip.value = label;
      chip.setAttribute("aria-label", `New name for group ${label}`);
      chip.dataset.role = "rename-input";
      chip.dataset.label = label;
    } else {
      chip = button(`${P}-chip`, "", `Select the ${members.length} image(s) of group ${label}`);
      chip.dataset.role = "chip";
      chip.dataset.label = label;
      chip.append(el("span", `${P}-swatch`), el("span", `${P}-label`, label),
        el("span", `${P}-size`, String(members.length)));
      chip.setAttribute("aria-pressed", String(members.every((n) => chosen.has(n))));
    }
    const memberBox = memberButtons(members, chosen);
    const actions = el("span", `${P}-actions`);
    const add = button(`${P}-add`, "+ selected", `Add the selected images to ${label}`);
    const rename = button(`${P}-rename`, "Rename", `Rename group ${label}`);
    const dissolve = button(`${P}-dissolve`, "Dissolve", `Ungroup all images of ${label}`);
    for (const [b, role] of [[add, "add"], [rename, "rename"], [dissolve, "dissolve"]]) {
      b.dataset.role = role;
      b.dataset.label = label;
    }
    add.disabled = chosen.size === 0;
    actions.append(add, rename, dissolve);
    item.append(chip, memberBox, actions);
    return item;
  }

  function drawGroups() {
    const keep = refocus ?? focusKey(root.contains(document.activeElement) ? document.activeElement : null);
    refocus = null;
    const names = model.get("names") ?? [];
    const { byLabel, alone } = partition(names, model.get("groups") ?? {});
    const chosen = new Set(selected());
    const colors = model.get("colors") ?? {};
    const isolated = new Set(model.get("isolated") ?? []);
    const entries = [...byLabel].slice(0, limit);
    drawn = new Map(entries);
    const items = entries.map(([label, members]) => groupItem(label, members, chosen, colors, isolated));
    if (byLabel.size > limit) {
      const hidden = byLabel.size - limit;
      const item = el("li", `${P}-group ${P}-hidden`);
      const more = button(`${P}-show-more`, `Show ${Math.min(hidden, GROUPS_SHOWN)} more groups`,
        `${hidden} more groups are not drawn; every group can be selected in the map or the table`);
      more.dataset.role = "more-groups";
      item.append(el("span", `${P}-hidden-count`, `${hidden} more groups`), more);
      items.push(item);
    }
    if (alone.length) {
      const item = el("li", `${P}-group ${P}-alone`);
      const tag = el("span", `${P}-alone-tag`, "alone");
      tag.title = "Each of these images has its own sky";
      const memberBox = memberButtons(alone, chosen);
      item.append(tag, memberBox);
      items.push(item);
    }
    list.replaceChildren(...items);
    datalist.replaceChildren(...[...byLabel.keys()].map((label) => {
      const option = el("option");
      option.value = label;
      return option;
    }));
    drawCount(chosen.size);
    if (renaming !== null) {
      const field = list.querySelector(`.${P}-rename-input`);
      if (field) {
        field.focus();
        field.select();
        return;
      }
      renaming = null; // the group went away meanwhile
    }
    if (keep) {
      const again = [...root.querySelectorAll("[data-role]")].find((node) => focusKey(node) === keep);
      again?.focus();
    }
  }

  function drawCount(n) {
    count.textContent = n ? `${n} selected` : "Select images, then:";
    ungroupButton.disabled = clearButton.disabled = n === 0;
    drawAssign();
  }

  // A new selection changes only what shows it: the buttons stay (and keep the focus), so a
  // click in the map of a survey redraws in milliseconds, not the whole list.
  function drawSelection() {
    const chosen = new Set(selected());
    const pressed = (node, value) => {
      const text = String(value);
      if (node.getAttribute("aria-pressed") !== text) node.setAttribute("aria-pressed", text);
    };
    for (const b of list.querySelectorAll(`.${P}-member`)) pressed(b, chosen.has(b.dataset.name));
    for (const chip of list.querySelectorAll(`.${P}-chip`)) {
      pressed(chip, (drawn.get(chip.dataset.label) ?? []).every((n) => chosen.has(n)));
    }
    for (const b of list.querySelectorAll(`.${P}-add`)) b.disabled = chosen.size === 0;
    drawCount(chosen.size);
  }

  // Assign needs images selected and a group name; its title says what is missing.
  function drawAssign() {
    const n = selected().length;
    const named = input.value.trim() !== "";
    assignButton.disabled = n === 0 || !named;
    assignButton.title = n === 0 ? "Select images first (click them here, in the map or in the table)"
      : !named ? "Type a group name first" : `Put the ${n} selected image(s) in group “${input.value.trim()}” (Enter)`;
  }

  function drawMessages() {
    const isolated = model.get("isolated") ?? [];
    warning.replaceChildren(...isolated.map((label) => el("div", `${P}-warning-line`,
      `⚠ Group “${label}” overlaps no image outside it: its sky cannot be matched to the others.`)));
    warning.hidden = isolated.length === 0;
    const error = model.get("error") ?? "";
    errorText.textContent = error;
    errorBox.hidden = !error;
  }

  // -- intent -----------------------------------------------------------------------------
  function assignFromInput() {
    pendingAssign = true;
    send({ type: "assign", names: selected(), label: input.value });
  }

  function finishRename(field, commit) {
    if (renaming === null) return;
    const old = renaming;
    const value = field.value.trim();
    renaming = null;
    refocus = JSON.stringify(["chip", null, old, null]);
    drawGroups();
    if (commit && value && value !== old) {
      refocus = JSON.stringify(["chip", null, value, null]); // where focus goes once renamed
      send({ type: "rename", old, new: value });
    }
  }

  function onClick(event) {
    const target = event.target.closest("button[data-role]");
    if (!target || !root.contains(target) || target.disabled) return;
    const { role, name, label, id } = target.dataset;
    const groups = model.get("groups") ?? {};
    const membersOf = (l) => (model.get("names") ?? []).filter((n) => groups[n] === l);
    if (role === "member") {
      const current = selected();
      setSelected(current.includes(name) ? current.filter((n) => n !== name) : [...current, name]);
    } else if (role === "more-groups") {  // the focus goes to the first group drawn now
      const first = [...partition(model.get("names") ?? [], groups).byLabel.keys()][limit];
      limit += GROUPS_SHOWN;
      refocus = JSON.stringify(["chip", null, first, null]);
      drawGroups();
    } else if (role === "chip") {
      const members = membersOf(label);
      const current = selected();
      const inSelection = new Set(current);
      const all = members.every((n) => inSelection.has(n)) && current.length === members.length;
      setSelected(event.shiftKey ? [...current, ...members] : (all ? [] : members));
    } else if (role === "add") {
      send({ type: "assign", names: selected(), label });
    } else if (role === "rename") {
      renaming = label;
      drawGroups();
    } else if (role === "dissolve") {
      send({ type: "ungroup", names: membersOf(label) });
    } else if (role === "preset") {
      send({ type: "preset", id });
    } else if (role === "undo") {
      send({ type: "undo" });
    } else if (role === "assign") {
      assignFromInput();
    } else if (role === "ungroup") {
      send({ type: "ungroup", names: selected() });
    } else if (role === "clear") {
      setSelected([]);
    }
  }

  function onKeydown(event) {
    const t = event.target;
    if (t === input && event.key === "Enter") {
      event.preventDefault();
      assignFromInput();
    } else if (t.dataset?.role === "rename-input" && (event.key === "Enter" || event.key === "Escape")) {
      event.preventDefault();
      finishRename(t, event.key === "Enter");
    } else if ((event.ctrlKey || event.metaKey) && event.key === "z" && t.tagName !== "INPUT") {
      event.preventDefault();
      if (model.get("can_undo")) send({ type: "undo" });
    }
  }

  function onFocusout(event) {
    if (event.target.dataset?.role === "rename-input") finishRename(event.target, true);
  }

  input.addEventListener("input", drawAssign);
  root.addEventListener("click", onClick);
  root.addEventListener("keydown", onKeydown);
  root.addEventListener("focusout", onFocusout);
  dismiss.addEventListener("click", () => setTrait(model, "error", ""));

  const onGroups = () => {
    if (pendingAssign) input.value = ""; // drawGroups then disables Assign again
    pendingAssign = false;
    drawGroups();
  };
  const onError = () => {
    pendingAssign = false;
    drawMessages();
  };
  const onIsolated = () => {
    drawGroups();
    drawMessages();
  };
  const stopModel = onModel(model, {
    "change:groups": onGroups, "change:selected": drawSelection, "change:colors": drawGroups,
    "change:names": drawGroups, "change:isolated": onIsolated, "change:error": onError,
    "change:presets": drawPresets, "change:active_preset": drawPresets, "change:can_undo": drawPresets,
  });
  drawPresets();
  drawGroups();
  drawMessages();
  return () => {
    stopModel();
    root.remove();
  };
}

export default { render };
