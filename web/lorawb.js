// The ONE entry module ComfyUI runs for lorawb: registers the sidebar tab, the settings and the canvas drop target.
// Every other .js under web/ only exports (ComfyUI imports them all as ES modules).

import { api as comfyApi } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";
import { comfyTransport, createApi } from "./api.js";
import { legacyWidgetsExtension } from "./node_compat.js";
import { nodeReportsExtension } from "./node_text.js";
import { createGraphBridge } from "./panel/canvas.js";
import { mountPanel } from "./panel/panel.js";
import { createSession } from "./panel/session.js";
import { SETTINGS, comfySettings } from "./panel/settings.js";

let session = null;
let unmount = null;

function toast(severity, summary, detail) {
  const t = app.extensionManager?.toast;
  if (t?.add) t.add({ severity, summary, detail, life: severity === "error" ? 8000 : 3500 });
  else if (severity === "error") console.error(`lorawb: ${summary}: ${detail}`);
}

async function confirmDialog(message) {
  const dialog = app.extensionManager?.dialog;
  if (dialog?.confirm) return !!(await dialog.confirm({ title: "LoRA Weights Builder", message }));
  return window.confirm(message);
}

async function promptDialog(message, defaultValue) {
  const dialog = app.extensionManager?.dialog;
  if (dialog?.prompt) return dialog.prompt({ title: "LoRA Weights Builder", message, defaultValue });
  return window.prompt(message, defaultValue);
}

function addStyles() {
  const href = new URL("./panel/panel.css", import.meta.url).href;
  if (document.querySelector("link[data-lorawb-css]")) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = href;
  link.dataset.lorawbCss = "1";
  document.head.append(link);
}

app.registerExtension(nodeReportsExtension(app));
app.registerExtension(legacyWidgetsExtension());

app.registerExtension({
  name: "lorawb.sidebar",
  settings: SETTINGS.map((s) => ({ ...s, onChange: () => session?.settingChanged(s.id) })),
  async setup() {
    const manager = app.extensionManager;
    if (!manager?.registerSidebarTab) {
      console.warn("lorawb: this ComfyUI frontend has no sidebar tabs (frontend 1.2.4 or newer is needed); "
        + "the same panel is served standalone by `lorawb serve`.");
      return;
    }
    addStyles();
    const LiteGraph = window.LiteGraph;
    const graph = LiteGraph ? createGraphBridge(app, LiteGraph) : null;
    const askToken = (why) => promptDialog(`${why} Token (LORAWB_TOKEN of the server):`, "");
    session = createSession(createApi(comfyTransport(comfyApi), { askToken }), { kind: "comfyui", toast, graph,
      settings: comfySettings(app), confirm: confirmDialog, prompt: promptDialog });
    window.addEventListener("beforeunload", (e) => {
      if (session.editor.dirty) { e.preventDefault(); e.returnValue = ""; }
    });
    graph?.installDrop(app.canvasEl ?? app.canvas?.canvas, (err) => toast("error", "Into the graph", err.message),
      (payload) => session.profileFor?.(payload) ?? null);
    manager.registerSidebarTab({
      id: "lorawb",
      icon: "pi pi-sliders-h",
      title: "LoRA WB",
      tooltip: "LoRA Weights Builder: library, block graphs, profiles",
      type: "custom",
      render(el) {
        unmount?.();
        el.style.height = "100%"; // the tab's container is content-sized; the panel fills the sidebar's height
        unmount = mountPanel(el, session);
      },
      destroy() {
        unmount?.();
        unmount = null;
      },
    });
    window.lorawb = { session };
  },
});
