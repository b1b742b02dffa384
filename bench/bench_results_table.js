// The results table's front end in node + jsdom: render, sort both ways and re-select, for
// 100, 500, 2000 and 10,000 rows (above 500 a virtual window). Measures and prints (medians of repeated runs); asserts nothing.
// The behaviour is tested in js/tests/results_table.test.js.
//
//   node bench/bench_results_table.js [repeats]
//
// jsdom is far slower than a browser: compare sizes with each other and runs with runs, as
// ratios, on the same machine at the same load (the load average is printed).
import { loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { encodeRows, FakeModel, freshDom } from "../js/tests/fake_model.js";

const widget = (await import("../js/src/results_table.js")).default;
const repeats = Number(process.argv[2] ?? 7);

const COLUMNS = [
  ["name", "image", "str"], ["group", "group", "str"], ["component", "component", "num"],
  ["sky", "sky", "num"], ["sky_err", "sky_err", "num"], ["npix", "npix", "num"],
  ["valid", "valid", "bool"], ["reason", "reason", "str"],
].map(([key, label, kind]) => ({ key, label, kind }));

function rows(n) {
  return Array.from({ length: n }, (_, i) => ({
    name: `img${i}`, group: `g${i % 7}`, component: 0, sky: ((i * 7919) % 503) + 0.125,
    sky_err: 0.5, npix: 1000 + i, valid: i % 50 !== 0, reason: i % 50 ? "" : "no valid pixels",
  }));
}

function once(n) {
  const el = freshDom();
  const many = rows(n);
  const model = new FakeModel({
    data: encodeRows(many, COLUMNS), columns: COLUMNS, colors: {}, selected: [], hovered: "", sort_by: "",
    ascending: true, filename: "results.csv",
  });
  const t = [performance.now()];
  const cleanup = widget.render({ model, el });
  t.push(performance.now());
  const sky = el.querySelector('button.smnb-table-sort[data-key="sky"]');
  sky.dispatchEvent(new MouseEvent("click", { bubbles: true }));
  sky.dispatchEvent(new MouseEvent("click", { bubbles: true }));
  t.push(performance.now());
  model.set("selected", many.slice(0, n / 2).map((r) => r.name));
  t.push(performance.now());
  cleanup();
  return [t[1] - t[0], t[2] - t[1], t[3] - t[2], t[3] - t[0]];
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

console.log(`results table in jsdom, medians of ${repeats} runs; load average ${loadavg().map((v) => v.toFixed(2)).join(" ")}`);
console.log("rows   render ms   sort x2 ms   select half ms   total ms");
once(100); // warm-up: module compilation, jsdom caches
for (const n of [100, 500, 2000, 10000]) {
  const runs = Array.from({ length: repeats }, () => once(n));
  const m = [0, 1, 2, 3].map((k) => median(runs.map((r) => r[k])));
  console.log(`${String(n).padStart(5)}   ${m.map((v, k) => v.toFixed(1).padStart([9, 12, 16, 10][k])).join(" ")}`);
}
