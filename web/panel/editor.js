// The profile editor view: a sticky header (profile chooser, unsaved marker, mean and variance, save / save as /
// delete / reset, copy in a dialect, CSV, compact toggle) over one row per block with a slider and a number box
// kept in sync and checked as you type, and a last row for REST (the keys outside every block). State:
// editor_state.js (in the session).

import { copyText, download, fmtNum, h } from "./dom.js";
import { REST, WEIGHT_MAX, WEIGHT_MIN } from "./editor_state.js";
import { SETTING } from "./settings.js";

const SLIDER_MIN = -2;
const SLIDER_MAX = 2;
const DIALECT_NAMES = { ours: "ours (BLOCK=value)", lbw: "LBW", inspire: "Inspire" };

function fmtW(v) {
  return typeof v === "number" ? String(Math.round(v * 10000) / 10000) : String(v);
}

// Mounts into `container`; returns a cleanup. onDraft() is called when a value changes (the graph overlay).
export function mountEditor(container, session, onDraft) {
  const editor = session.editor;
  const ed = editor.data;
  const root = h("section", { class: "lwb-section lwb-editor" });
  container.append(root);
  let compact = false;
  const rows = [];

  const stats = h("span", { class: "lwb-editor-stats" });
  const dirtyMark = h("span", { class: "lwb-dirty", title: "Unsaved changes", hidden: true }, "● unsaved");
  const message = h("div", { class: "lwb-editor-msg", role: "status" });
  const saveBtn = h("button", { class: "lwb-btn lwb-primary", type: "button", on: { click: () => editor.save() } },
    "Save");
  const saveAsBtn = h("button", { class: "lwb-btn", type: "button", on: { click: () => editor.saveAs() } },
    "Save as…");
  const deleteBtn = h("button", { class: "lwb-btn", type: "button", on: { click: () => editor.remove() } }, "Delete");
  const resetBtn = h("button", { class: "lwb-btn", type: "button", title: "Back to the saved values",
    on: { click: () => editor.reset() } }, "Reset");

  function drawStatus() {
    const s = editor.stats();
    stats.textContent = s ? `mean ${fmtNum(s.mean, 3)} · variance ${fmtNum(s.variance, 3)}` : "";
    const dirty = editor.dirty;
    dirtyMark.hidden = !dirty;
    root.classList.toggle("is-dirty", dirty);
    const invalid = [...ed.invalid.entries()];
    message.textContent = invalid.length
      ? `${invalid.length} invalid value${invalid.length > 1 ? "s" : ""}: `
        + invalid.slice(0, 3).map(([i, why]) => `${ed.blockIds[i]} ${why}`).join("; ")
      : "";
    message.classList.toggle("is-error", invalid.length > 0);
    const builtin = !!ed.saved?.builtin;
    saveBtn.disabled = !dirty || !editor.valid;
    saveBtn.textContent = builtin ? "Save…" : "Save";
    saveBtn.title = builtin ? "Built-in profiles are read-only: save your changes under a new name" : "Save";
    saveAsBtn.disabled = !ed.saved || !editor.valid;
    deleteBtn.disabled = !ed.saved || builtin;
    resetBtn.disabled = !dirty;
  }

  function profileSelect() {
    const sel = h("select", { class: "lwb-select lwb-profile-select", name: "profile", "aria-label": "Profile" });
    const groups = [["Built-in", ed.profiles.filter((p) => p.builtin)],
      ["Library", ed.profiles.filter((p) => !p.builtin)]];
    for (const [label, items] of groups) {
      if (!items.length) continue;
      const og = h("optgroup", { label });
      for (const p of items) og.append(h("option", { value: editor.keyOf(p) }, p.name));
      sel.append(og);
    }
    sel.value = ed.key ?? "";
    sel.addEventListener("change", async () => {
      const ok = await editor.choose(sel.value);
      if (!ok) sel.value = ed.key ?? "";
    });
    return sel;
  }

  function exportControls() {
    const dialects = (ed.dialects ?? ["ours", "lbw", "inspire"]).filter((d) => d in DIALECT_NAMES);
    const sel = h("select", { class: "lwb-select", name: "dialect", "aria-label": "Dialect to copy" });
    for (const d of dialects) sel.append(h("option", { value: d }, DIALECT_NAMES[d]));
    const preferred = session.setting(SETTING.dialect);
    sel.value = dialects.includes(preferred) ? preferred : dialects[0];
    const copy = h("button", { class: "lwb-btn", type: "button", title: "Copy the weights (as edited) in this dialect",
      on: { click: async () => {
        if (!editor.valid) { session.host.toast("warn", "Copy", "Fix the invalid values first."); return; }
        try {
          const text = (await editor.exportDraft(sel.value)).trim();
          const ok = await copyText(text);
          root.dataset.copied = text;
          session.host.toast(ok ? "success" : "warn", ok ? `Copied (${DIALECT_NAMES[sel.value]})` : "Copy failed", text);
        } catch (err) { session.host.toast("error", "Copy", err.message); }
      } } }, "Copy");
    const csv = h("button", { class: "lwb-btn", type: "button", title: "Download the weights as CSV",
      on: { click: async () => {
        if (!editor.valid) { session.host.toast("warn", "CSV", "Fix the invalid values first."); return; }
        try { download(`${ed.saved?.name ?? "profile"}-${ed.layoutId}.csv`, await editor.exportDraft("csv")); } catch (err) {
          session.host.toast("error", "CSV export", err.message);
        }
      } } }, "CSV");
    return [sel, copy, csv];
  }

  function row(blockId, index, label) {
    const value = ed.draft[index];
    const slider = h("input", { type: "range", class: "lwb-slider", min: String(SLIDER_MIN), max: String(SLIDER_MAX),
      step: "0.05", "aria-label": `${blockId} weight slider`, props: { value: String(typeof value === "number" ? value : 0) } });
    const number = h("input", { type: "number", class: "lwb-input lwb-weight", min: String(WEIGHT_MIN),
      max: String(WEIGHT_MAX), step: "0.05", name: blockId, "aria-label": `${blockId} weight`,
      props: { value: fmtW(value) } });
    const r = h("div", { class: ["lwb-editor-row", blockId === REST && "is-rest"], dataset: { block: blockId } },
      h("span", { class: "lwb-editor-block", title: label }, blockId), slider, number);
    function mark(result) {
      number.classList.toggle("is-invalid", !result.ok);
      number.setAttribute("aria-invalid", String(!result.ok));
      number.title = result.ok ? "" : `${blockId}: ${result.why}`;
      r.classList.toggle("is-changed", result.ok && ed.saved && result.value !== ed.saved.weights[blockId]);
    }
    slider.addEventListener("input", () => {
      number.value = slider.value;
      mark(editor.setValue(index, slider.value));
    });
    number.addEventListener("input", () => {
      const result = editor.setValue(index, number.value === "" && number.validity.badInput ? "?" : number.value);
      if (result.ok) slider.value = String(Math.max(SLIDER_MIN, Math.min(SLIDER_MAX, result.value)));
      mark(result);
    });
    mark(ed.invalid.has(index) ? { ok: false, why: ed.invalid.get(index) } : { ok: true, value });
    rows.push(r);
    return r;
  }

  function draw() {
    root.replaceChildren();
    rows.length = 0;
    root.append(h("h4", { class: "lwb-section-title" }, "Block weights"));
    if (ed.error) { root.append(h("div", { class: "lwb-empty is-error" }, ed.error.message)); return; }
    if (ed.loading || !ed.saved) {
      root.append(h("div", { class: "lwb-empty" }, ed.loading ? "Loading profiles…" : "No profile for this layout."));
      return;
    }
    const densityBtn = h("button", { class: ["lwb-btn", "lwb-icon-btn", compact && "is-on"], type: "button",
      title: "Compact rows", "aria-pressed": String(compact),
      on: { click: () => { compact = !compact; root.classList.toggle("is-compact", compact); draw(); } } }, "≡");
    const head = h("div", { class: "lwb-editor-head" },
      h("div", { class: "lwb-editor-line" }, profileSelect(), dirtyMark, stats),
      h("div", { class: "lwb-editor-line" }, saveBtn, saveAsBtn, deleteBtn, resetBtn, densityBtn),
      h("div", { class: "lwb-editor-line" }, ...exportControls()),
      message);
    const layout = session.layout(ed.layoutId);
    const labels = new Map((layout?.blocks ?? []).map((b) => [b.id, `${b.id} — ${b.label} (${b.group})`]));
    labels.set(REST, `${REST} — the keys outside every block (time_embed, conv_in/conv_out, label_emb …); `
      + "1 applies them as trained, NONE sets 0");
    const grid = h("div", { class: "lwb-editor-grid" }, ...ed.blockIds.map((b, i) => row(b, i, labels.get(b) ?? b)));
    root.classList.toggle("is-compact", compact);
    root.append(head, grid);
    drawStatus();
  }

  draw();
  const unsubscribe = session.subscribe((topic) => {
    if (topic === "editor") { draw(); onDraft?.(); } else if (topic === "editor-value") { drawStatus(); onDraft?.(); }
  });
  return () => { unsubscribe(); root.remove(); };
}
