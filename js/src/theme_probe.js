// ThemeProbe front end: tells Python whether the page is dark, and again when the theme changes,
// so that marks Python colours (bqplot's) follow the theme as CSS variables do elsewhere.  It
// also gives the app's controls their keys back from JupyterLab (`keepKeys`).

/**
 * Whether the page around `el` is dark: JupyterLab says so on <body>; elsewhere (VS Code,
 * a plain page) the luminance of the nearest opaque background decides.
 * @param {HTMLElement} el
 * @returns {boolean}
 */
export function isDark(el) {
  const light = document.body?.dataset?.jpThemeLight;
  if (light === "true" || light === "false") return light === "false";
  for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
    const rgba = getComputedStyle(node).backgroundColor.match(/[\d.]+/g)?.map(Number) ?? [];
    if (rgba.length >= 3 && (rgba[3] ?? 1) > 0.5) {
      return 0.2126 * rgba[0] + 0.7152 * rgba[1] + 0.0722 * rgba[2] < 128;
    }
  }
  return false;
}

/** The app's rows whose controls JupyterLab must leave the keys of (the Python side adds it). */
export const KEYS_CLASS = "smnb-app-keys";

/** The controls of those rows that take keys a notebook shortcut also has (text fields do not). */
const KEYED = "select, input[type=checkbox]";

/**
 * Keep JupyterLab's notebook shortcuts off the app's controls.  In command mode JupyterLab
 * runs a shortcut for a key pressed in any focused element that is not a text field, and
 * prevents the key's default: ArrowUp/Down on a focused dropdown select the cell above/below
 * instead of stepping through the values, and typing a value's first letter ("m" for
 * "match") would turn the cell into Markdown.  Lumino runs no shortcut for a key whose target
 * has `data-lm-suppress-shortcuts` (the shortcuts' selector matches the focused element
 * itself, so the attribute must be on it): set it on the dropdowns and checkboxes of the
 * rows with `KEYS_CLASS` of the `.smnb-app` around `el`, and on those rendered later (ipywidgets
 * renders a box's children asynchronously, in any order).  Only those small rows are watched.
 * @param {HTMLElement} el An element inside the app (rendered before it is in the page).
 * @returns {() => void} Stops watching.
 */
export function keepKeys(el) {
  let observer = null;
  let frame = 0;
  let tries = 0;
  const later = typeof requestAnimationFrame === "function" ? requestAnimationFrame : (f) => setTimeout(f, 16);
  const cancel = typeof cancelAnimationFrame === "function" ? cancelAnimationFrame : clearTimeout;
  const mark = (app) => {
    for (const row of app.children) {
      if (!row.classList.contains(KEYS_CLASS)) continue;
      for (const control of row.querySelectorAll(KEYED)) {
        if (!control.hasAttribute("data-lm-suppress-shortcuts")) {
          control.setAttribute("data-lm-suppress-shortcuts", "true");
        }
      }
      observer.observe(row, { childList: true, subtree: true }); // again: the same options
    }
  };
  const attach = () => {
    const app = el.closest(".smnb-app");
    if (!app) {
      if (tries++ < 600) frame = later(attach); // not in the app's element yet: next frame
      return;
    }
    observer = new MutationObserver(() => mark(app));
    observer.observe(app, { childList: true }); // rows added, not what happens inside the views
    mark(app);
  };
  attach();
  return () => {
    cancel(frame);
    observer?.disconnect();
  };
}

function render({ model, el }) {
  const report = () => {
    const dark = isDark(el);
    if (model.get("dark") !== dark) {
      model.set("dark", dark);
      model.save_changes();
    }
  };
  report();
  const observer = new MutationObserver(report);
  observer.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light"] });
  const stopKeys = keepKeys(el);
  return () => {
    observer.disconnect();
    stopKeys();
  };
}

export default { render };
