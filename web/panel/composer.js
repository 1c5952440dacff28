// The composer: a stack of LoRAs (Ctrl/⌘-click rows or "Add to composer"), checked by the server's compose gate:
// verdict, reasons, warnings and the combined per-block graph. State lives in the session.

import { openAbDialog, openXyDialog } from "./batch_dialogs.js";
import { blockGraph } from "./blockgraph.js";
import { clear, debounce, familyBadge, fmtNum, h } from "./dom.js";

const MAX_STACK = 16;

// One stack entry as the compose, merge and save-profile routes take it (block weights as typed text, any dialect).
const payload = (e) => ({ lora: e.stable_id, strength_model: e.strength_model, strength_clip: e.strength_clip,
  ...(e.weights ? { weights: e.weights } : {}) });

export function createComposerState(session) {
  const { api, host } = session;
  const st = { entries: [], verdict: null, error: null, checking: false, generation: 0 };
  const notify = () => session.notify("composer");

  const check = debounce(async () => {
    const generation = ++st.generation;
    if (!st.entries.length) { st.verdict = null; st.error = null; notify(); return; }
    st.checking = true;
    notify();
    try {
      const verdict = await api.composeCheck({ entries: st.entries.map(payload) });
      if (generation === st.generation) { st.verdict = verdict; st.error = null; }
    } catch (err) {
      if (generation === st.generation) { st.error = err; st.verdict = null; }
    } finally {
      if (generation === st.generation) { st.checking = false; notify(); }
    }
  }, 250);

  return {
    get data() { return st; },
    has: (id) => st.entries.some((e) => e.stable_id === id),
    toggle(lora) {
      if (!lora?.stable_id) return;
      if (st.entries.some((e) => e.stable_id === lora.stable_id)) {
        st.entries = st.entries.filter((e) => e.stable_id !== lora.stable_id);
      } else {
        if (st.entries.length >= MAX_STACK) { host.toast("warn", "Composer", `At most ${MAX_STACK} LoRAs.`); return; }
        st.entries = [...st.entries, { stable_id: lora.stable_id, name: lora.name, family: lora.family,
          variant: lora.variant, layout_id: lora.layout_id, strength_model: 1, strength_clip: 1, weights: "" }];
      }
      notify();
      session.notify("list-marks");
      check();
    },
    setStrength(id, key, value) {
      const v = Number(value);
      if (!Number.isFinite(v)) return;
      st.entries = st.entries.map((e) => (e.stable_id === id ? { ...e, [key]: v } : e));
      check();
    },
    setWeights(id, text) {
      st.entries = st.entries.map((e) => (e.stable_id === id ? { ...e, weights: String(text).trim() } : e));
      check();
    },
    // Save combined as profile: the stack's per-block combined weights stored as a new profile of its layout.
    async saveProfile(name) {
      st.saved = null;
      try {
        const res = await api.saveCombinedProfile({ entries: st.entries.map(payload), name });
        st.saved = { state: "done", label: res.profile.label, id: res.profile.id, layout: res.layout_id };
        host.toast("success", "Profile saved", res.profile.label);
      } catch (err) {
        st.saved = { state: "error", error: err.message };
        host.toast("error", "Save combined as profile", err.message);
      }
      notify();
      const ed = session.editor;  // the editor lists that layout's profiles: show the new one (never over a draft)
      if (st.saved.state === "done" && ed.data.layoutId === st.saved.layout && !ed.dirty) {
        ed.useLayout(st.saved.layout, { force: true });
      }
    },
    clear() { st.entries = []; notify(); session.notify("list-marks"); check(); },
    // Merge to file: POST /lorawb/merge (a background job), then poll its status until done or failed.
    async merge(filename, rank) {
      st.merging = { state: "running", done: 0, total: 0 };
      notify();
      try {
        const body = { entries: st.entries.map(payload), filename, ...(rank ? { rank_mode: "rank", rank } : { rank_mode: "concat" }) };
        let job = await api.merge(body);
        while (job.state === "running") {
          await new Promise((r) => setTimeout(r, 300));
          job = await api.mergeStatus(job.job);
          st.merging = job;
          notify();
        }
        st.merging = job;
        if (job.state === "done") host.toast("success", "Merged", `${job.stable_id} · ${job.path}`);
        else host.toast("error", "Merge", job.error);
      } catch (err) {
        st.merging = { state: "error", error: err.message };
        host.toast("error", "Merge", err.message);
      }
      notify();
    },
  };
}

function combinedGraph(session, v) {
  const layout = session.layout(v.layout_id);
  if (!layout || !v.blocks?.length) return null;
  const byId = new Map(v.blocks.map((b) => [b.id, b]));
  const rows = layout.blocks.map((b) => {
    const c = byId.get(b.id);
    return c ? { share: c.norm, norm: c.norm, exact: c.exact, module_count: c.contributions.filter((x) => x).length }
      : { share: 0, norm: 0, exact: true, module_count: 0 };
  });
  return blockGraph(layout, rows, { state: "ready", mode: "combined" });
}

function mergeForm(comp, st) {
  const name = h("input", { class: "lwb-input lwb-merge-name", type: "text", placeholder: "merged/my-stack",
    "aria-label": "File name of the merged LoRA" });
  const rank = h("input", { class: "lwb-input lwb-merge-rank", type: "number", min: "0", step: "1",
    "aria-label": "Rank (0 = concat, lossless)", props: { value: "32" } });
  const busy = st.merging?.state === "running";
  const button = h("button", { class: "lwb-btn lwb-merge", type: "button", disabled: busy || undefined,
    on: { click: () => {
      const file = name.value.trim();
      if (!file) { name.focus(); return; }
      comp.merge(file, Math.max(0, Math.round(Number(rank.value) || 0)));
    } } }, busy ? `Merging… ${st.merging.done}/${st.merging.total}` : "Merge to file…");
  const out = h("div", { class: "lwb-merge-box" }, h("div", { class: "lwb-subtitle" }, "Merge to a new LoRA file"),
    h("div", { class: "lwb-actions" }, name, rank, button));
  const m = st.merging;
  if (m?.state === "done") out.append(h("pre", { class: "lwb-merge-result" }, m.text));
  if (m?.state === "error") out.append(h("div", { class: "lwb-alert lwb-merge-error" }, m.error));
  return out;
}

function profileForm(comp, st) {
  // the name survives the redraws a new verdict makes
  const name = h("input", { class: "lwb-input lwb-combined-name", type: "text", placeholder: "my-stack",
    "aria-label": "Name of the new profile", props: { value: st.profileName ?? "" },
    on: { input: (ev) => { st.profileName = ev.target.value; } } });
  const button = h("button", { class: "lwb-btn lwb-combined-save", type: "button", on: { click: () => {
    const value = name.value.trim();
    if (!value) { name.focus(); return; }
    comp.saveProfile(value);
  } } }, "Save combined as profile");
  const out = h("div", { class: "lwb-merge-box" }, h("div", { class: "lwb-subtitle", title: "Per block: the entries' "
    + "block weights averaged by |strength|·‖ΔW(block)‖ (a single LoRA: its weights)" },
  "Save the combined block weights as a profile"), h("div", { class: "lwb-actions" }, name, button));
  const s = st.saved;
  if (s?.state === "done") out.append(h("div", { class: "lwb-combined-result" }, `Saved profile ${s.label}`));
  if (s?.state === "error") out.append(h("div", { class: "lwb-alert lwb-combined-error" }, s.error));
  return out;
}

export function mountComposer(container, session) {
  const comp = session.composer;
  const root = h("section", { class: "lwb-composer" });
  container.append(root);

  function draw() {
    const st = comp.data;
    clear(root);
    root.append(h("h4", { class: "lwb-section-title" }, `Composer · ${st.entries.length} LoRA${st.entries.length === 1
      ? "" : "s"}`));
    if (!st.entries.length) {
      root.append(h("div", { class: "lwb-empty" }, "Ctrl/⌘-click LoRAs in the list (or use “Add to composer” in "
        + "their details) to check how they stack."));
      return;
    }
    const list = h("div", { class: "lwb-stack" });
    for (const e of st.entries) {
      const strength = h("input", { type: "number", class: "lwb-input lwb-strength", step: "0.05", min: "-10",
        max: "10", "aria-label": `${e.stable_id} strength`, props: { value: String(e.strength_model) },
        on: { input: (ev) => comp.setStrength(e.stable_id, "strength_model", ev.target.value) } });
      const weights = h("input", { type: "text", class: "lwb-input lwb-stack-weights", placeholder: "weights",
        title: "Block weights in any dialect (a profile name like OUTD, an LBW vector, BLOCK=value, …)",
        "aria-label": `${e.stable_id} block weights`, props: { value: e.weights ?? "" },
        on: { change: (ev) => comp.setWeights(e.stable_id, ev.target.value) } });
      list.append(h("div", { class: "lwb-stack-row", dataset: { id: e.stable_id } },
        familyBadge(e.family, e.variant),
        h("span", { class: "lwb-stack-name", title: e.name ?? "" }, e.name ?? e.stable_id),
        h("span", { class: "lwb-stack-id" }, e.stable_id), strength, weights,
        h("button", { class: "lwb-btn lwb-icon-btn", type: "button", title: "Remove from the stack",
          on: { click: () => comp.toggle(e) } }, "✕")));
    }
    const stack = () => st.entries.map((e) => `${e.stable_id}:${e.strength_model}`);
    root.append(list, h("div", { class: "lwb-actions" }, h("button", { class: "lwb-btn lwb-link", type: "button",
      on: { click: () => comp.clear() } }, "Clear the stack"),
    h("button", { class: "lwb-btn", type: "button", dataset: { act: "ab" },
      on: { click: () => openAbDialog(session, stack()) } }, "A/B…"),
    h("button", { class: "lwb-btn", type: "button", dataset: { act: "xy" },
      on: { click: () => openXyDialog(session, stack()) } }, "XY…")));
    if (st.checking && !st.verdict) root.append(h("div", { class: "lwb-empty" }, "Checking…"));
    if (st.error) root.append(h("div", { class: "lwb-alert" }, st.error.message));
    const v = st.verdict;
    if (!v) return;
    const verdict = h("div", { class: ["lwb-verdict", v.ok ? "is-ok" : "is-refused"], role: "status" },
      h("strong", {}, v.ok ? "OK" : "REFUSED"),
      v.family ? ` · ${v.family}${v.layout_id ? ` · ${v.layout_id}` : ""}` : "");
    root.append(verdict);
    if (v.reasons.length) {
      root.append(h("div", { class: "lwb-subtitle" }, "Reasons"),
        h("ul", { class: "lwb-list lwb-reasons" }, ...v.reasons.map((r) => h("li", {}, r))));
    }
    if (v.warnings.length) {
      root.append(h("div", { class: "lwb-subtitle" }, "Warnings"),
        h("ul", { class: "lwb-list lwb-warnings" }, ...v.warnings.map((w) => h("li", {}, w))));
    }
    if (v.ok) root.append(mergeForm(comp, st), profileForm(comp, st));
    const graph = combinedGraph(session, v);
    if (graph) {
      const peak = Math.max(...v.blocks.map((b) => b.strength_sum));
      root.append(h("div", { class: "lwb-subtitle" }, `Combined block graph (‖Σ cᵢΔWᵢ‖ per block; max Σ|strength·`
        + `weight| ${fmtNum(peak, 3)})`), graph);
    }
  }

  draw();
  const unsubscribe = session.subscribe((topic) => { if (topic === "composer") draw(); });
  return () => { unsubscribe(); root.remove(); };
}
