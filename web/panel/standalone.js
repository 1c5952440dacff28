// The standalone page of `lorawb serve` (/lorawb/ui): the same panel modules, without ComfyUI. Exports only;
// ui.html calls mountStandalone().

import { browserTransport, createApi } from "../api.js";
import { h } from "./dom.js";
import { mountPanel } from "./panel.js";
import { createSession } from "./session.js";
import { localSettings } from "./settings.js";

function toaster(container) {
  return (severity, summary, detail) => {
    const toast = h("div", { class: ["lwb-toast", `is-${severity}`], role: severity === "error" ? "alert" : "status" },
      h("strong", {}, summary), detail ? h("span", {}, detail) : null);
    container.append(toast);
    setTimeout(() => toast.remove(), severity === "error" ? 8000 : 3500);
  };
}

export function mountStandalone(el) {
  const toasts = h("div", { class: "lwb-toasts" });
  document.body.append(toasts);
  let session = null;
  const settings = localSettings(() => session?.settingChanged());
  const api = createApi(browserTransport(), {
    askToken: async (why) => window.prompt(`${why}\n\nToken (LORAWB_TOKEN of the server):`) });
  const host = { kind: "standalone", toast: toaster(toasts), settings, graph: null,
    confirm: async (message) => window.confirm(message),
    prompt: async (message, value) => window.prompt(message, value) };
  session = createSession(api, host);
  const unmount = mountPanel(el, session);
  window.addEventListener("beforeunload", (e) => {
    if (session.editor.dirty) { e.preventDefault(); e.returnValue = ""; }
  });
  window.lorawb = { session, api }; // for the browser tests and the curious
  return unmount;
}
