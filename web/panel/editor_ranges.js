// The editor's range column: the part of sampling each block acts over (percent of the run). "" = the whole run.
// One percent range per block is edited here (two handles on a 0–100 % bar and a text box "20-60", kept in sync);
// a block whose stored schedule has several ranges, a ramp (0.2~1@0-50%) or counts steps is shown as text and kept
// as stored (edit those in a weights text: OUT03=1@0-30%, OUT03=0.5@30-100%; the block graph draws their pieces).

import { h } from "./dom.js";

const RANGE = /^\s*(\d+(?:\.\d*)?)\s*%?\s*-\s*(\d+(?:\.\d*)?)\s*%?\s*$/;
const PIECE = /^(.+)@(\d+(?:\.\d*)?)-(\d+(?:\.\d*)?)%$/;

// "" → whole run; "20-60" (or "20%-60%") → {start, end} in percent, 0 ≤ start < end ≤ 100.
export function parseRange(raw) {
  const text = String(raw ?? "").trim();
  if (!text) return { ok: true, value: null };
  const m = RANGE.exec(text);
  if (!m) return { ok: false, why: "range is not START-END (e.g. 0-40)" };
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (start < 0 || end > 100) return { ok: false, why: "range outside 0-100 %" };
  if (start >= end) return { ok: false, why: "range starts at or after its end" };
  return { ok: true, value: { start, end } };
}

export const rangeText = (r) => (r ? `${r.start}-${r.end}` : "");

// The stored schedule in the editor's terms: per block index either a range text, or {locked: [pieces]}.
export function savedRanges(profile, blockIds) {
  const schedule = profile?.schedule ?? {};
  return blockIds.map((b) => {
    const pieces = schedule[b];
    if (!pieces || !pieces.length) return "";
    const m = pieces.length === 1 ? PIECE.exec(pieces[0]) : null;
    if (m && Number(m[1]) === profile.weights[b]) return `${Number(m[2])}-${Number(m[3])}`;
    return { locked: pieces };
  });
}

// The draft schedule for the routes: {block: ["w@a-b%"]} from the range texts (weights from the draft), locked
// blocks as stored.
export function draftSchedule(blockIds, draft, ranges) {
  const out = {};
  blockIds.forEach((b, i) => {
    const r = ranges[i];
    if (r && typeof r === "object") out[b] = r.locked;
    else if (r) {
      const p = parseRange(r);
      if (p.ok && p.value) out[b] = [`${draft[i]}@${p.value.start}-${p.value.end}%`];
    }
  });
  return out;
}

// The range cell of one editor row: start and end handles over a 0–100 % bar and the text box, in sync.
export function rangeCell(blockId, current, onChange) {
  if (current && typeof current === "object") {
    return h("span", { class: "lwb-range is-locked", title: "Several ranges, a ramp or steps: edit them in a weights text" },
      current.locked.join(", "));
  }
  const parsed = parseRange(current);
  const r = parsed.ok && parsed.value ? parsed.value : { start: 0, end: 100 };
  const handle = (which, value) => h("input", { type: "range", class: `lwb-range-${which}`, min: "0", max: "100",
    step: "1", "aria-label": `${blockId} range ${which}`, props: { value: String(value) } });
  const start = handle("start", r.start);
  const end = handle("end", r.end);
  const text = h("input", { type: "text", class: "lwb-input lwb-range-text", name: `${blockId}-range`,
    placeholder: "0-100", "aria-label": `${blockId} range (percent of the run)`, props: { value: current || "" } });
  const bar = h("span", { class: "lwb-range-bar" }, h("span", { class: "lwb-range-fill" }), start, end);
  const cell = h("span", { class: "lwb-range" }, bar, text);
  const paint = (a, b) => {
    const fill = bar.firstChild;
    fill.style.left = `${a}%`;
    fill.style.width = `${Math.max(0, b - a)}%`;
  };
  const mark = (result) => {
    text.classList.toggle("is-invalid", !result.ok);
    text.setAttribute("aria-invalid", String(!result.ok));
    text.title = result.ok ? "" : `${blockId}: ${result.why}`;
  };
  const fromHandles = () => {
    const a = Number(start.value);
    const b = Number(end.value);
    text.value = a === 0 && b === 100 ? "" : `${a}-${b}`;
    paint(a, b);
    mark(onChange(text.value));
  };
  start.addEventListener("input", fromHandles);
  end.addEventListener("input", fromHandles);
  text.addEventListener("input", () => {
    const result = onChange(text.value);
    if (result.ok) {
      const v = result.value ?? { start: 0, end: 100 };
      start.value = String(v.start);
      end.value = String(v.end);
      paint(v.start, v.end);
    }
    mark(result);
  });
  paint(r.start, r.end);
  mark(parsed);
  return cell;
}
