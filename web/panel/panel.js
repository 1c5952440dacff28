// The panel: header (density toggle), the library list, and a details / composer pane beside or below it,
// whatever the width. mountPanel(el, session) -> unmount(); all state lives in the session (see session.js).

import { mountComposer } from "./composer.js";
import { mountDetails } from "./details.js";
import { h } from "./dom.js";
import { mountJobs } from "./jobs.js";
import { mountLibrary } from "./library.js";
import { mountOrganize } from "./organize.js";
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
  const tabDetails = h("button", { class: "lwb-tab", type: "button", role: "tab",
    on: { click: () => session.setTab("details") } }, "Details");
  const tabComposer = h("button", { class: "lwb-tab", type: "button", role: "tab",
    on: { click: () => session.setTab("composer") } }, "Composer");
  const tabOrganize = h("button", { class: "lwb-tab", type: "button", role: "tab",
    on: { click: () => session.setTab("organize") } }, "Organize");
  const tabJobs = h("button", { class: "lwb-tab", type: "button", role: "tab",
    on: { click: () => session.setTab("jobs") } }, "Jobs");
  const tabs = h("div", { class: "lwb-tabs", role: "tablist" }, tabDetails, tabComposer, tabJobs, tabOrganize);
  const detailBody = h("div", { class: "lwb-pane-body", "aria-live": "polite" });
  const detailPane = h("div", { class: "lwb-pane lwb-pane-detail" }, tabs, detailBody);
  const root = h("div", { class: "lwb" }, header, h("div", { class: "lwb-main" }, listPane, detailPane));
  let view = null;
  let shown = null;
  let selected = state.selected;

  function drawHeader() {
    root.classList.toggle("is-compact", compact());
    densityBtn.setAttribute("aria-pressed", String(compact()));
    const info = state.info;
    status.textContent = info ? `${info.counts.present.toLocaleString()} files · ${info.database}` : "";
    status.title = info ? `Library roots:\n${info.roots.join("\n") || "(none)"}` : "";
  }

  function drawTabs() {
    const n = session.composer.data.entries.length;
    tabComposer.textContent = n ? `Composer (${n})` : "Composer";
    const tab = ["composer", "jobs", "organize"].includes(state.tab) ? state.tab : "details";
    tabDetails.setAttribute("aria-selected", String(tab === "details"));
    tabComposer.setAttribute("aria-selected", String(tab === "composer"));
    tabJobs.setAttribute("aria-selected", String(tab === "jobs"));
    tabOrganize.setAttribute("aria-selected", String(tab === "organize"));
    const live = session.batches.st.batches.filter((b) => !b.finished).length;
    tabJobs.textContent = live ? `Jobs (${live})` : "Jobs";
    if (tab !== shown) {
      view?.();
      shown = tab;
      const mount = { composer: mountComposer, jobs: mountJobs, organize: mountOrganize, details: mountDetails }[tab];
      view = mount(detailBody, session);
      detailBody.scrollTop = 0;
    }
  }

  el.append(root);
  session.batches.load();
  const library = mountLibrary(listPane, session);
  drawHeader();
  drawTabs();
  const unsubscribe = session.subscribe((topic) => {
    if (topic === "info" || topic === "settings") drawHeader();
    if (topic === "tab" || topic === "composer" || topic === "batches") drawTabs();
    if (topic === "selection" && state.selected !== selected) { // another LoRA (not a refresh): its details
      selected = state.selected;
      if (state.tab !== "details") session.setTab("details");
    }
  });
  return () => {
    unsubscribe();
    view?.();
    library.destroy();
    root.remove();
  };
}
