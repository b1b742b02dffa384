// Unit tests of js/src/theme_probe.js: `cd js && node --test tests/`
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { freshDom } from "./fake_model.js";

const { keepKeys, KEYS_CLASS } = await import("../src/theme_probe.js");

let page;
beforeEach(() => {
  page = freshDom();
});

const frame = () => new Promise((done) => requestAnimationFrame(() => done()));
const microtasks = () => new Promise((done) => setTimeout(done, 0));

function row(keys, inner = "") {
  const div = document.createElement("div");
  if (keys) div.classList.add(KEYS_CLASS);
  div.innerHTML = inner;
  return div;
}

/**
 * Whether JupyterLab runs its notebook shortcut for a key pressed in the focused `target`:
 * Lumino walks from the target up, stopping at `data-lm-suppress-shortcuts`, and the
 * shortcut's selector (".jp-Notebook.jp-mod-commandMode:not(.jp-mod-readWrite) :focus")
 * matches the focused element itself.
 */
function notebookShortcutRuns(target) {
  for (let node = target; node; node = node.parentElement) {
    if (node.hasAttribute("data-lm-suppress-shortcuts")) return false;
    if (node === target) return true; // ":focus" matches at distance 0
  }
  return false;
}

test("the dropdowns and checkboxes of the app's control rows keep their keys", async () => {
  const app = document.createElement("div");
  app.className = "smnb-app";
  const probe = document.createElement("div");
  const controls = row(true, "<select><option>local</option><option>match</option></select>"
    + "<input type='checkbox'><input type='text'>");
  const views = row(false, "<select class='map-colour'></select>");
  app.append(probe, controls, views);
  page.append(app);
  const stop = keepKeys(probe);
  assert.ok(!notebookShortcutRuns(controls.querySelector("select")));
  assert.ok(!notebookShortcutRuns(controls.querySelector("input[type=checkbox]")));
  assert.ok(!controls.querySelector("input[type=text]").hasAttribute("data-lm-suppress-shortcuts"));
  assert.ok(notebookShortcutRuns(views.querySelector("select"))); // another row: left alone
  // a row rendered later, and a control rendered later inside a row, are marked too
  const status = row(true, "<div class='export'></div>");
  app.append(status);
  await microtasks();
  status.querySelector(".export").innerHTML = "<select><option>pairs</option></select>";
  await microtasks();
  assert.ok(!notebookShortcutRuns(status.querySelector("select")));
  stop();
  const after = row(true, "<select></select>");
  app.append(after);
  await microtasks();
  assert.ok(notebookShortcutRuns(after.querySelector("select"))); // stopped watching
});

test("a probe rendered before it is in the app marks the controls once it is", async () => {
  const probe = document.createElement("div"); // anywidget renders into a detached element
  const stop = keepKeys(probe);
  const app = document.createElement("div");
  app.className = "smnb-app";
  const controls = row(true, "<input type='checkbox'>");
  app.append(controls);
  page.append(app);
  await frame();
  assert.ok(notebookShortcutRuns(controls.firstChild)); // the probe is not in the app yet
  app.prepend(probe);
  await frame();
  await frame();
  assert.ok(!notebookShortcutRuns(controls.firstChild));
  stop();
});
