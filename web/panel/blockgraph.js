// The block graph (one bar per block of the layout, grouped IN/M/OUT, D/S, …) and the per-row sparkline.
// Measured blocks are filled bars scaled to the strongest block; pending blocks are empty dashed outlines.

import { fmtNum, fmtPct, h, s } from "./dom.js";

export const GROUP_LABELS = { TE: "TE", IN: "IN", MID: "M", OUT: "OUT", DOUBLE: "D", SINGLE: "S", JOINT: "J",
  BLOCKS: "B" };

function groups(layoutBlocks) {
  const out = [];
  layoutBlocks.forEach((block, index) => {
    const last = out[out.length - 1];
    if (last && last.group === block.group) last.items.push({ block, index });
    else out.push({ group: block.group, items: [{ block, index }] });
  });
  return out;
}

// layout: {id, count, blocks: [{id, label, group}]}; blocks: rows in layout order ({share, norm, exact, …}) or null
// overlay: {values: weights in layout order} marks each bar's weighted height (share × weight); mode "combined"
// labels the bars as the combined norm of a stack instead of energy shares.
export function blockGraph(layout, blocks, { state = blocks ? "ready" : "pending", overlay = null,
  mode = "shares" } = {}) {
  const pending = !blocks;
  const combined = mode === "combined";
  const peak = pending ? 0 : Math.max(...blocks.map((b) => b.share ?? 0), 0);
  const head = h("div", { class: "lwb-graph-head" },
    h("span", { class: "lwb-graph-count" }, `${layout.count} blocks`),
    h("span", { class: "lwb-graph-layout", title: layout.title ?? layout.id }, layout.id),
    h("span", { class: ["lwb-graph-state", pending ? "is-pending" : "is-ready"] },
      pending ? (state === "error" ? "unreadable: no blocks" : "pending: not measured yet")
        : (combined ? "combined" : "measured")),
    pending ? null : h("span", { class: "lwb-graph-peak" }, combined ? `max ‖ΔW‖ ${fmtNum(peak)}` : `max ${fmtPct(peak)}`));
  const body = h("div", { class: "lwb-graph-body", role: "img",
    "aria-label": `${layout.count} blocks of layout ${layout.id}${pending ? ", not measured yet" : ""}` });
  for (const g of groups(layout.blocks)) {
    const bars = h("div", { class: "lwb-graph-bars" });
    for (const { block, index } of g.items) {
      const row = blocks ? blocks[index] : null;
      const share = row?.share ?? 0;
      const bar = h("div", { class: ["lwb-bar", pending && "lwb-bar-pending", !pending && !share && "lwb-bar-zero",
        row && row.exact === false && "lwb-bar-inexact"], dataset: { block: block.id } });
      const tip = pending ? `${block.id} (${block.label}): not measured yet`
        : combined ? `${block.id} (${block.label}): combined ‖ΔW‖ ${fmtNum(row?.norm)}`
        : `${block.id} (${block.label}): ${fmtPct(share)} of the energy, ‖ΔW‖ ${fmtNum(row?.norm)}`
          + `${row?.module_count ? `, ${row.module_count} modules` : ", untouched"}`
          + `${row && row.exact === false ? " (adapter-only figure: needs the base weight)" : ""}`;
      bar.title = tip;
      if (!pending) {
        bar.append(h("div", { class: "lwb-bar-fill", style: { height: `${peak > 0 ? (share / peak) * 100 : 0}%` } }));
      }
      if (overlay && overlay.values) {
        const v = typeof overlay.values[index] === "number" ? overlay.values[index] : 0;
        const pos = pending ? v / 2 : (peak > 0 ? (share * v) / peak : 0); // pending: the weight itself, 2 = top
        const marker = h("div", { class: ["lwb-bar-weight", v < 0 && "is-negative"],
          style: { bottom: `${Math.max(0, Math.min(1, Math.abs(pos))) * 100}%` } });
        bar.append(marker);
        bar.title += ` · weight ${fmtNum(v)}${pending ? "" : ` → ${fmtPct(share * v)}`}`;
        const strip = timelineStrip(overlay.ranges?.[index]);
        if (strip) {
          bar.append(strip);
          bar.title += ` · active ${strip.dataset.range}`;
        }
      }
      bars.append(bar);
    }
    const first = g.items[0].block.id;
    const last = g.items[g.items.length - 1].block.id;
    body.append(h("div", { class: "lwb-graph-group", style: { flexGrow: String(g.items.length) },
      dataset: { group: g.group } },
    bars,
    h("div", { class: "lwb-graph-label", title: first === last ? first : `${first} … ${last}` },
      GROUP_LABELS[g.group] ?? g.group)));
  }
  return h("div", { class: ["lwb-graph", pending && "is-pending"] }, head, body);
}

// The part of the run a block acts over, as a strip under its bar (null for the whole run). A stored schedule the
// range column cannot edit (several ranges, ramps "0.2~1@0-50%", steps) is drawn piece by piece where its pieces are
// in percent (a ramp as a gradient from its start to its end weight); steps have no place on a percent strip.
const PERCENT_PIECE = /^(.+)@(\d+(?:\.\d*)?)-(\d+(?:\.\d*)?)%$/;

function timelineStrip(range) {
  if (!range) return null;
  const label = typeof range === "object" ? range.locked.join(", ") : `${range} %`;
  const m = typeof range === "string" ? /^(\d+(?:\.\d*)?)-(\d+(?:\.\d*)?)$/.exec(range) : null;
  const strip = h("div", { class: ["lwb-bar-range", !m && "is-locked"], dataset: { range: label } });
  const segment = (a, b, piece = null, ramp = null) => h("div", {
    class: ["lwb-bar-range-on", ramp && "is-ramp"], dataset: piece ? { piece } : {},
    style: { left: `${a}%`, width: `${Math.max(0, b - a)}%`, ...(ramp ?? {}) } });
  if (m) strip.append(segment(Number(m[1]), Number(m[2])));
  for (const piece of typeof range === "object" ? range.locked : []) {
    const p = PERCENT_PIECE.exec(piece);
    if (!p) continue;
    const [from, to] = p[1].split("~").map(Number);
    let ramp = null;
    if (to !== undefined) {  // opacity at each end: that end's weight as a share of the larger one
      const peak = Math.max(Math.abs(from), Math.abs(to), 1e-9);
      const share = (v) => `${Math.round((Math.abs(v) / peak) * 100)}%`;
      ramp = { "--lwb-ramp-from": share(from), "--lwb-ramp-to": share(to) };
    }
    strip.append(segment(Number(p[2]), Number(p[3]), piece, ramp));
  }
  return strip;
}

// A mini bar chart of block shares (list rows); null values = pending (a dashed baseline).
export function sparkline(values, { width = 64, height = 18 } = {}) {
  const svg = s("svg", { class: "lwb-spark", width: String(width), height: String(height),
    viewBox: `0 0 ${width} ${height}`, "aria-hidden": "true" });
  if (!values || !values.length) {
    svg.append(s("line", { x1: "0", y1: String(height - 1), x2: String(width), y2: String(height - 1),
      class: "lwb-spark-pending" }));
    return svg;
  }
  const peak = Math.max(...values, 1e-9);
  const w = width / values.length;
  let d = "";
  values.forEach((v, i) => {
    const bh = Math.max(0.5, (Number(v) / peak) * (height - 1));
    d += `M${(i * w).toFixed(2)} ${height}v${(-bh).toFixed(2)}h${Math.max(0.6, w - 0.4).toFixed(2)}v${bh.toFixed(2)}z`;
  });
  svg.append(s("path", { d, class: "lwb-spark-bars" }));
  return svg;
}
