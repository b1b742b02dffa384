// ThemeProbe front end: tells Python whether the page is dark, and again when the theme changes,
// so that marks Python colours (bqplot's) follow the theme as CSS variables do elsewhere.

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
  return () => observer.disconnect();
}

export default { render };
