// The panel: header (density toggle), library list and details side by side or stacked, whatever the width.
// mountPanel(el, session) -> unmount(); all state lives in the session (see session.js).

import { renderDetails } from "./details.js";
import { h } from "./dom.js";
import { mountLibrary } from "./library.js";
import { SETTING } from "./settings.js";

export function mountPanel(el, session) {
  session.start();
  const { state, host } = session;
  const compact = () => session.setting(SETTING.density) === "compact";
  const densityBtn = h("button", { class: "lwb-btn lwb-icon-btn", type: "button", title: "Compact / comfortable rows",
    on: { click: async () => {
      await host.settings.set(SETTING.density, compact() ? "comfortable" : "compact");
      session.settingChanged(SETTING.density);
    } } }, "☰");
  const status = h("span", { class: "lwb-header-status" });
  const header = h("header", { class: "lwb-header" },
    h("span", { class: "lwb-title" }, "LoRA Weights Builder"), status, densityBtn);
  const listPane = h("div", { class: "lwb-pane lwb-pane-list" });
  const detailPane = h("div", { class: "lwb-pane lwb-pane-detail", "aria-live": "polite" });
  const root = h("div", { class: "lwb" }, header, h("div", { class: "lwb-main" }, listPane, detailPane));

  function drawHeader() {
    root.classList.toggle("is-compact", compact());
    densityBtn.setAttribute("aria-pressed", String(compact()));
    const info = state.info;
    status.textContent = info ? `${info.counts.present.toLocaleString()} files · ${info.database}` : "";
    status.title = info ? `Library roots:\n${info.roots.join("\n") || "(none)"}` : "";
  }

  el.append(root);
  const library = mountLibrary(listPane, session);
  renderDetails(detailPane, session);
  drawHeader();
  const unsubscribe = session.subscribe((topic) => {
    if (topic === "selection" || topic === "detail" || topic === "info") renderDetails(detailPane, session);
    if (topic === "info" || topic === "settings") drawHeader();
  });
  return () => {
    unsubscribe();
    library.destroy();
    root.remove();
  };
}
