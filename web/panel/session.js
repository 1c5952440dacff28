// Panel state that lives outside the DOM: the query, loaded pages, the selection, scan status, layouts.
// ComfyUI calls the sidebar's render() at every open; views are rebuilt from this state each time. Event
// listeners are registered here once (ComfyUI only dispatches an event type that has a listener already).

import { EVENTS } from "../api.js";
import { createBatchState } from "./batch_state.js";
import { createComposerState } from "./composer.js";
import { createEditorState } from "./editor_state.js";
import { SETTING } from "./settings.js";

const DEFAULT_QUERY = Object.freeze({ q: "", family: "", layout: "", format: "", state: "", show: "present",
  sort: "name", desc: false });
const DETAIL_CACHE = 50;

export function createSession(api, host) {
  const subscribers = new Set();
  const detailCache = new Map();
  let pollTimer = null;

  const state = {
    query: { ...DEFAULT_QUERY },
    total: null,
    pages: new Map(),
    loading: new Set(),
    generation: 0,
    selected: null,
    detail: null,
    detailError: null,
    scrollTop: 0,
    scan: null,
    facets: null,
    layouts: new Map(),
    info: null,
    ready: false,
    firstRowsMarked: false,
  };

  function notify(topic) {
    for (const fn of subscribers) {
      try { fn(topic, state); } catch (err) { console.error("lorawb:", err); }
    }
  }

  function fail(err, what) {
    host.toast("error", what, err?.message ?? String(err));
  }

  const setting = (id) => host.settings.get(id);
  const pageSize = () => Math.max(20, Math.min(500, Number(setting(SETTING.pageSize)) || 50));

  function queryParams(offset, limit) {
    const q = state.query;
    return { q: q.q.trim(), family: q.family, layout: q.layout, format: q.format, state: q.state, show: q.show,
      sort: q.sort, desc: q.desc, offset, limit, spark: setting(SETTING.sparklines) !== false };
  }

  async function loadPage(page) {
    if (state.loading.has(page) || state.pages.has(page)) return;
    const generation = state.generation;
    const size = pageSize();
    state.loading.add(page);
    try {
      const result = await api.search(queryParams(page * size, size));
      if (generation !== state.generation) return; // the query changed meanwhile
      for (const item of result.items) item.key = item.stable_id ?? `row-${page}-${item.file_name}`;
      state.pages.set(page, result.items);
      state.total = result.total;
      state.pageSize = size;
      notify("list");
    } catch (err) {
      if (generation === state.generation) {
        state.total = state.total ?? 0;
        fail(err, "LoRA list");
        notify("list");
      }
    } finally {
      state.loading.delete(page);
    }
  }

  function getItem(index) {
    const size = state.pageSize ?? pageSize();
    const page = Math.floor(index / size);
    const items = state.pages.get(page);
    if (!items) { loadPage(page); return undefined; }
    return items[index - page * size];
  }

  function resetList() {
    state.generation += 1;
    state.pages = new Map();
    state.loading = new Set();
    state.pageSize = pageSize();
    loadPage(0);
  }

  async function loadFacets() {
    try { state.facets = await api.facets(); notify("facets"); } catch (err) { fail(err, "Filters"); }
  }

  async function select(stableId, { force = false, layoutId = undefined } = {}) {
    if (!stableId) return;
    // another layout means another set of profiles in the editor: ask before unsaved edits are dropped
    const editorLayout = session.editor.data.layoutId;
    if (!force && stableId !== state.selected && session.editor.dirty && layoutId !== editorLayout
        && !(await session.editor.confirmLeave("open another LoRA"))) return;
    state.selected = stableId;
    state.detailError = null;
    if (!force && detailCache.has(stableId)) {
      state.detail = detailCache.get(stableId);
      notify("selection");
      if (state.detail.layout_id) session.editor.useLayout(state.detail.layout_id);
      return;
    }
    state.detail = null;
    notify("selection");
    try {
      const detail = await api.lora(stableId);
      detailCache.delete(stableId);
      detailCache.set(stableId, detail);
      while (detailCache.size > DETAIL_CACHE) detailCache.delete(detailCache.keys().next().value);
      if (state.selected === stableId) {
        state.detail = detail;
        notify("detail");
        if (detail.layout_id) session.editor.useLayout(detail.layout_id);
      }
    } catch (err) {
      if (state.selected === stableId) { state.detailError = err; notify("detail"); }
    }
  }

  function setScan(status) {
    state.scan = status;
    notify("scan");
    const running = status && (status.state === "running" || status.state === "cancelling");
    if (running && !pollTimer) {
      pollTimer = setInterval(async () => {
        try {
          const s = await api.scanStatus();
          if (s.state !== "running" && s.state !== "cancelling") {
            clearInterval(pollTimer);
            pollTimer = null;
            if (state.scan?.state === "running" || state.scan?.state === "cancelling") finished(s);
          } else if (!state.scan || state.scan.state !== s.state || s.done !== state.scan.done) {
            state.scan = s;
            notify("scan");
          }
        } catch { /* keep the last known status */ }
      }, 1500);
    } else if (!running && pollTimer) {
      clearInterval(pollTimer);
      pollTimer = null;
    }
  }

  function finished(status) {
    setScan(status);
    detailCache.clear();
    resetList();
    loadFacets();
    if (state.selected) select(state.selected, { force: true });
  }

  api.on(EVENTS.progress, (p) => {
    setScan({ ...(state.scan ?? {}), state: state.scan?.state === "cancelling" ? "cancelling" : "running", ...p });
  });
  let userScan = false; // a scan started from this panel reports its end; background rescans only if they found news
  api.on(EVENTS.done, (summary) => {
    finished({ ...(state.scan ?? {}), state: "done", summary });
    const s = summary ?? {};
    const news = (s.new ?? 0) + (s.changed ?? 0) + (s.moved ?? 0) + (s.vanished ?? 0) + (s.errors_count ?? 0);
    if (userScan || news) {
      host.toast("info", "Library scan finished", `${s.files ?? 0} files: ${s.new ?? 0} new, ${s.changed ?? 0} `
        + `changed, ${s.measured ?? 0} measured, ${s.pending ?? 0} pending${s.cancelled ? " (stopped early)" : ""}`);
    }
    userScan = false;
  });
  api.on(EVENTS.error, (e) => {
    setScan({ ...(state.scan ?? {}), state: "error", error: e?.message });
    host.toast("error", "Library scan failed", e?.message ?? "unknown error");
  });

  const session = {
    api,
    host,
    state,
    subscribe(fn) { subscribers.add(fn); return () => subscribers.delete(fn); },
    notify,
    getItem,
    select,
    async start() {
      if (state.ready) return;
      state.ready = true;
      resetList();
      try {
        const [info, layouts] = await Promise.all([api.info(), api.layouts()]);
        state.info = info;
        for (const layout of layouts.layouts) state.layouts.set(layout.id, layout);
        notify("info");
        setScan(info.scan);
      } catch (err) { fail(err, "lorawb server"); }
      loadFacets();
    },
    setQuery(patch) {
      state.query = { ...state.query, ...patch };
      state.scrollTop = 0;
      notify("query");
      resetList();
    },
    resetQuery() { session.setQuery({ ...DEFAULT_QUERY }); },
    refresh() { detailCache.clear(); resetList(); loadFacets(); },
    async startScan(opts = {}) {
      try {
        userScan = true;
        setScan(await api.startScan(opts));
      } catch (err) { userScan = false; fail(err, "Rescan"); }
    },
    async cancelScan() {
      try { setScan(await api.cancelScan()); } catch (err) { fail(err, "Cancel scan"); }
    },
    async reindex(stableId) {
      try {
        const result = await api.reindex(stableId);
        detailCache.set(stableId, result.lora);
        if (state.selected === stableId) { state.detail = result.lora; notify("detail"); }
        resetList();
        host.toast("success", "Reindexed", `${stableId}: ${result.lora.blocks_state}`);
      } catch (err) { fail(err, "Reindex"); }
    },
    layout: (id) => state.layouts.get(id) ?? null,
    settingChanged() { notify("settings"); },
    setting,
    setTab(tab) { state.tab = tab; notify("tab"); },
    profileFor: (lora) => session.editor.profileFor(lora),
  };
  session.editor = createEditorState(session);
  session.composer = createComposerState(session);
  session.batches = createBatchState(session);
  state.tab = "details";
  return session;
}
