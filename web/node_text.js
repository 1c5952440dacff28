// Shows what lorawb nodes report (the `text` of their UI output: what was applied, warnings, a missing LoRA passed
// through) in a read-only box on the node itself, so a warning is never silent. Text only: set as a value, never HTML.
// Side-effect free: the entry module (lorawb.js) registers nodeReportsExtension(app).

const WIDGET = "lorawb_report";

function textWidget(node, app) {
  let widget = node.widgets?.find((w) => w.name === WIDGET);
  if (widget) return widget;
  const make = window.comfyAPI?.widgets?.ComfyWidgets?.STRING;
  if (make) {
    widget = make(node, WIDGET, ["STRING", { multiline: true }], app).widget;
    const el = widget.inputEl ?? widget.element;
    if (el) {
      el.readOnly = true;
      el.style.opacity = "0.85";
    }
  } else {
    widget = node.addWidget("text", WIDGET, "", () => {}, { multiline: true });
  }
  widget.serialize = false; // a report, not an input: never saved into the workflow's widget values
  return widget;
}

export function nodeReportsExtension(app) {
  return {
    name: "lorawb.nodes",
    async beforeRegisterNodeDef(nodeType, nodeData) {
      if (!nodeData?.name?.startsWith("LoraWB_")) return;
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        const result = onExecuted?.apply(this, arguments);
        const text = message?.text;
        if (Array.isArray(text) && text.length) {
          textWidget(this, app).value = text.join("\n");
          this.setDirtyCanvas?.(true, true);
        }
        return result;
      };
    },
  };
}
