// Workflows saved before a node gained an input keep their meaning when loaded. ComfyUI fills widget values by
// position: a Block Weight Apply saved with one `strength` ([lora, weights_text, strength]) puts it into
// strength_model and would leave strength_clip at its default, so the text encoder gets that same strength here, as
// it did then. Side-effect free: the entry module (lorawb.js) registers legacyWidgetsExtension().

const LEGACY = {
  // node id → [widget count when saved the old way, widget to fill, index of the saved value it takes]
  LoraWB_BlockWeightApply: [3, "strength_clip", 2],
};

export function legacyWidgetsExtension() {
  return {
    name: "lorawb.legacy-widgets",
    async beforeRegisterNodeDef(nodeType, nodeData) {
      const rule = LEGACY[nodeData?.name];
      if (!rule) return;
      const [count, widgetName, from] = rule;
      const onConfigure = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function (info) {
        const result = onConfigure?.apply(this, arguments);
        const values = info?.widgets_values;
        const widget = this.widgets?.find((w) => w.name === widgetName);
        if (Array.isArray(values) && values.length === count && widget && typeof values[from] === "number") {
          widget.value = values[from];
        }
        return result;
      };
    },
  };
}
