// Into the graph: create a "Load LoRA by stable_id" node, or a "Block Weight Apply" + "Profile Select" pair already
// filled in and connected, from a button or by dropping a row onto ComfyUI's canvas. Node type ids and widget
// names are the node pack's contract (README "Web UI and HTTP API").

export const NODE_TYPES = Object.freeze({
  load: "LoraWB_LoadLoraById",
  apply: "LoraWB_BlockWeightApply",
  profile: "LoraWB_ProfileSelect",
});
export const DRAG_TYPE = "application/x-lorawb";

export const loraWidgetValue = (lora) => (lora.name ? `${lora.stable_id} · ${lora.name}` : lora.stable_id);
export const profileWidgetValue = (profile) => `${profile.name} · ${profile.layout_id}`;

export function dragPayload(kind, lora, profile = null) {
  return { kind, stable_id: lora.stable_id, name: lora.name ?? null, layout_id: lora.layout_id ?? null,
    default_weight: lora.default_weight ?? null,
    profile: profile ? { name: profile.name, layout_id: profile.layout_id } : null };
}

function setWidget(node, name, value) {
  const widget = node.widgets?.find((w) => w.name === name);
  if (!widget) return false;
  widget.value = value;
  try { widget.callback?.(value, null, node); } catch { /* a widget callback must not stop the creation */ }
  return true;
}

// app: ComfyUI's app; LiteGraph: window.LiteGraph
export function createGraphBridge(app, LiteGraph) {
  const graph = () => app.canvas?.graph ?? app.graph;
  const known = (type) => !!LiteGraph?.registered_node_types?.[type];

  function centre() {
    const el = app.canvas?.canvas ?? app.canvasEl;
    if (el && typeof app.clientPosToCanvasPos === "function") {
      const r = el.getBoundingClientRect();
      return app.clientPosToCanvasPos([r.left + r.width / 2, r.top + r.height / 3]);
    }
    const ds = app.canvas?.ds;
    if (ds && el) return [-ds.offset[0] + el.width / (2 * ds.scale), -ds.offset[1] + el.height / (3 * ds.scale)];
    return [100, 100];
  }

  function make(type, pos) {
    if (!known(type)) throw new Error(`The node type ${type} is not installed; update the lorawb node pack.`);
    const node = LiteGraph.createNode(type);
    if (!node) throw new Error(`ComfyUI could not create a ${type} node.`);
    node.pos = [pos[0], pos[1]];
    graph().add(node);
    return node;
  }

  function done(node) {
    app.canvas?.selectNode?.(node);
    app.canvas?.setDirty?.(true, true);
    app.graph?.setDirtyCanvas?.(true, true);
    return node;
  }

  const bridge = {
    available: () => known(NODE_TYPES.load),
    pairAvailable: () => known(NODE_TYPES.apply) && known(NODE_TYPES.profile),
    addLoad(lora, pos = centre()) {
      const node = make(NODE_TYPES.load, pos);
      setWidget(node, "lora", loraWidgetValue(lora));
      const weight = lora.default_weight;  // config.yaml's default_weight (organized folders, hand edits kept)
      if (typeof weight === "number" && Number.isFinite(weight)) {
        setWidget(node, "strength_model", weight);
        setWidget(node, "strength_clip", weight);
      }
      return done(node);
    },
    addPair(lora, profile = null, pos = centre()) {
      const apply = make(NODE_TYPES.apply, [pos[0] + 340, pos[1]]);
      const select = make(NODE_TYPES.profile, pos);
      setWidget(apply, "lora", loraWidgetValue(lora));
      if (profile) setWidget(select, "profile", profileWidgetValue(profile));
      const slot = apply.findInputSlot ? apply.findInputSlot("weights")
        : (apply.inputs ?? []).findIndex((i) => i.name === "weights");
      if (slot >= 0) select.connect(0, apply, slot);
      done(select);
      return { apply, select };
    },
    // Drop rows (or the details' drag handles) onto the canvas. resolve(payload) -> profile or null for pairs.
    installDrop(canvasEl, onError, resolveProfile = () => null) {
      if (!canvasEl) return () => {};
      const accepts = (e) => Array.from(e.dataTransfer?.types ?? []).includes(DRAG_TYPE);
      const over = (e) => {
        if (!accepts(e)) return;
        e.preventDefault();
        e.dataTransfer.dropEffect = "copy";
      };
      const drop = (e) => {
        if (!accepts(e)) return;
        e.preventDefault();
        e.stopPropagation();
        let payload;
        try { payload = JSON.parse(e.dataTransfer.getData(DRAG_TYPE)); } catch { return; }
        const pos = typeof app.clientPosToCanvasPos === "function"
          ? app.clientPosToCanvasPos([e.clientX, e.clientY]) : centre();
        try {
          if (payload.kind === "pair") bridge.addPair(payload, payload.profile ?? resolveProfile(payload), pos);
          else bridge.addLoad(payload, pos);
        } catch (err) { onError(err); }
      };
      canvasEl.addEventListener("dragover", over);
      canvasEl.addEventListener("drop", drop, true);
      return () => {
        canvasEl.removeEventListener("dragover", over);
        canvasEl.removeEventListener("drop", drop, true);
      };
    },
  };
  return bridge;
}
