// The profile editor's state (outside the DOM): the profiles of the selected LoRA's layout, the one loaded, its
// saved weights and the draft being edited. Values are validated per block; a draft with changes is "dirty" and
// the panel asks before anything would throw it away. The rows are the layout's blocks, then REST: the weight of
// the keys outside every block (time_embed, conv_in/conv_out …), stored with the profile, 1 unless set.

export const WEIGHT_MIN = -10;
export const WEIGHT_MAX = 10;
export const REST = "REST";

const keyOf = (p) => (p.id === null || p.id === undefined ? `builtin:${p.name}` : `id:${p.id}`);

export function parseWeight(raw) {
  const text = String(raw).trim();
  if (!/^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/.test(text)) return { ok: false, why: "not a number" };
  const v = Number(text);
  if (!Number.isFinite(v)) return { ok: false, why: "not a finite number" };
  if (v < WEIGHT_MIN || v > WEIGHT_MAX) return { ok: false, why: `outside ${WEIGHT_MIN} … ${WEIGHT_MAX}` };
  return { ok: true, value: v };
}

export function createEditorState(session) {
  const { api, host } = session;
  const chosenPerLayout = new Map();
  const ed = {
    layoutId: null,
    blockIds: [],
    profiles: [],
    key: null,
    saved: null, // the profile as stored (to_dict of the route)
    draft: [], // numbers, or the raw text of an invalid entry
    invalid: new Map(), // index -> why
    loading: false,
    error: null,
  };

  const notify = () => session.notify("editor");
  const savedVector = () => (ed.saved ? ed.blockIds.map((b) => ed.saved.weights[b] ?? (b === REST ? 1 : undefined)) : []);

  function load(profile) {
    ed.saved = profile;
    ed.key = profile ? keyOf(profile) : null;
    ed.draft = savedVector();
    ed.invalid = new Map();
    if (profile) chosenPerLayout.set(ed.layoutId, ed.key);
  }

  const state = {
    get data() { return ed; },
    get dirty() {
      if (!ed.saved) return false;
      if (ed.invalid.size) return true;
      const saved = savedVector();
      return ed.draft.some((v, i) => v !== saved[i]);
    },
    get valid() { return ed.invalid.size === 0; },
    stats() {
      const vals = ed.draft.filter((v, i) => typeof v === "number" && ed.blockIds[i] !== REST); // blocks only
      if (!vals.length) return null;
      const mean = vals.reduce((a, b) => a + b, 0) / vals.length;
      const variance = vals.reduce((a, b) => a + (b - mean) ** 2, 0) / vals.length;
      return { mean, variance, min: Math.min(...vals), max: Math.max(...vals) };
    },
    // Ask before dropping unsaved changes; true when it is fine to go on.
    async confirmLeave(what = "switch") {
      if (!state.dirty) return true;
      return host.confirm(`The profile "${ed.saved?.name}" has unsaved changes. Discard them and ${what}?`);
    },
    // The selected LoRA's layout: load its profiles (keeps the draft when the layout does not change).
    async useLayout(layoutId, { force = false } = {}) {
      if (!layoutId || (layoutId === ed.layoutId && !force && ed.profiles.length)) return;
      ed.layoutId = layoutId;
      ed.loading = true;
      ed.error = null;
      notify();
      try {
        const layout = session.layout(layoutId);
        ed.blockIds = layout ? [...layout.blocks.map((b) => b.id), REST] : [];
        const result = await api.profiles({ layout: layoutId });
        if (ed.layoutId !== layoutId) return;
        ed.profiles = result.profiles;
        ed.dialects = result.dialects;
        const want = chosenPerLayout.get(layoutId) ?? (force ? ed.key : null);
        load(ed.profiles.find((p) => keyOf(p) === want) ?? ed.profiles[0] ?? null);
      } catch (err) {
        ed.error = err;
        ed.profiles = [];
        load(null);
      } finally {
        ed.loading = false;
        notify();
      }
    },
    async choose(key) {
      if (key === ed.key) return true;
      if (!(await state.confirmLeave("load another profile"))) { notify(); return false; }
      load(ed.profiles.find((p) => keyOf(p) === key) ?? null);
      notify();
      return true;
    },
    // One block's value from a text box or a slider; returns the validation result.
    setValue(index, raw) {
      const r = parseWeight(raw);
      if (r.ok) { ed.draft[index] = r.value; ed.invalid.delete(index); } else {
        ed.draft[index] = String(raw);
        ed.invalid.set(index, r.why);
      }
      session.notify("editor-value");
      return r;
    },
    reset() {
      load(ed.saved);
      notify();
    },
    draftWeights() {
      return Object.fromEntries(ed.blockIds.map((b, i) => [b, ed.draft[i]]));
    },
    async save() {
      if (!state.valid || !ed.saved) return false;
      if (ed.saved.builtin) return state.saveAs();
      try {
        const updated = await api.updateProfile(ed.saved.id, { weights: state.draftWeights() });
        ed.profiles = ed.profiles.map((p) => (keyOf(p) === keyOf(updated) ? updated : p));
        load(updated);
        host.toast("success", "Profile saved", updated.label);
        notify();
        return true;
      } catch (err) { host.toast("error", "Save profile", err.message); return false; }
    },
    async saveAs() {
      if (!state.valid || !ed.saved) return false;
      const suggestion = ed.saved.builtin ? `${ed.saved.name}-custom` : `${ed.saved.name}-copy`;
      const name = await host.prompt("Save the profile as", suggestion);
      if (!name) return false;
      try {
        const created = await api.createProfile({ name, layout_id: ed.layoutId, weights: state.draftWeights(),
          description: ed.saved.description ?? "" });
        ed.profiles = [...ed.profiles, created];
        load(created);
        host.toast("success", "Profile created", created.label);
        notify();
        return true;
      } catch (err) { host.toast("error", "Save profile as", err.message); return false; }
    },
    async remove() {
      if (!ed.saved || ed.saved.builtin) return false;
      if (!(await host.confirm(`Delete the profile "${ed.saved.label}"? This cannot be undone.`))) return false;
      try {
        await api.deleteProfile(ed.saved.id);
        ed.profiles = ed.profiles.filter((p) => keyOf(p) !== ed.key);
        host.toast("success", "Profile deleted", ed.saved.label);
        chosenPerLayout.delete(ed.layoutId);
        load(ed.profiles[0] ?? null);
        notify();
        return true;
      } catch (err) { host.toast("error", "Delete profile", err.message); return false; }
    },
    async exportDraft(dialect) {
      const result = await api.exportProfiles({ dialect, profiles: [{ name: ed.saved?.name ?? "profile",
        layout_id: ed.layoutId, weights: state.draftWeights() }] });
      return result.text;
    },
    // The stored profile to pre-fill a Profile Select node with (only when it is saved as shown).
    profileFor(lora) {
      if (!ed.saved || state.dirty || lora?.layout_id !== ed.layoutId) return null;
      return { name: ed.saved.name, layout_id: ed.saved.layout_id };
    },
    keyOf,
  };
  return state;
}
