// The library view: search box, filters, live scan bar with rescan/cancel, and the virtualised LoRA list.

import { sparkline } from "./blockgraph.js";
import { clear, debounce, familyBadge, h } from "./dom.js";
import { DRAG_TYPE, dragPayload } from "./canvas.js";
import { SETTING } from "./settings.js";
import { VirtualList } from "./vlist.js";

const ROW_HEIGHT = { comfortable: 44, compact: 28 };
const FILTERS = [
  ["family", "Family", "all families"],
  ["layout", "Layout", "all layouts"],
  ["format", "Format", "all formats"],
  ["state", "Blocks", "any state", { ready: "ready (measured)", pending: "pending", error: "unreadable" }],
];
// "name" is the default order, also while typing (ranking every match by relevance costs 20–35 ms at 100k rows
// for a short prefix; name order stays under ~10 ms); "Best match" ranks by relevance on request.
const SORTS = [["name", "Name"], ["relevance", "Best match"], ["added", "Added"], ["size", "Size"],
  ["strength", "Strength"]];
const NO_STRENGTH = new Set(["pending", "error"]); // such LoRAs have no measured strength to sort by

function select(name, label, options, value, onChange) {
  const el = h("select", { class: "lwb-select", name, title: label, "aria-label": label,
    on: { change: () => onChange(el.value) } });
  for (const [v, text] of options) el.append(h("option", { value: v }, text));
  el.value = value ?? "";
  return el;
}

function scanText(scan) {
  if (!scan) return "";
  const phase = { walk: "listing folders", structure: "reading headers", tensors: "measuring blocks" }[scan.phase]
    ?? scan.phase ?? "starting";
  if (scan.state === "running") return `Scanning: ${phase} ${scan.done ?? 0} / ${scan.total ?? 0}`;
  if (scan.state === "cancelling") return "Stopping the scan…";
  if (scan.state === "error") return `Scan failed: ${scan.error ?? "unknown error"}`;
  if (scan.state === "done" && scan.summary) {
    const s = scan.summary;
    return `Last scan: ${s.files} files, ${s.new} new, ${s.pending} pending${s.cancelled ? " (stopped)" : ""}`;
  }
  return "";
}

export function mountLibrary(container, session) {
  const { state } = session;
  const cleanups = [];
  let stamp = 0; // bumped when a setting changes how rows look
  const density = () => (session.setting(SETTING.density) === "compact" ? "compact" : "comfortable");

  // ---- search and filters ----
  const search = h("input", { class: "lwb-search", type: "search", placeholder: "Search name, trigger, tag…",
    "aria-label": "Search LoRAs", props: { value: state.query.q }, autocomplete: "off", spellcheck: "false" });
  const onType = debounce(() => session.setQuery({ q: search.value }), 180);
  search.addEventListener("input", onType);
  search.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { onType.cancel(); session.setQuery({ q: search.value }); }
    if (e.key === "ArrowDown") { e.preventDefault(); list.element.focus(); move(1); }
  });
  cleanups.push(() => onType.cancel());

  const filterBox = h("div", { class: "lwb-filters" });
  const count = h("span", { class: "lwb-count", "aria-live": "polite" });
  function drawFilters() {
    clear(filterBox);
    const facets = state.facets ?? {};
    for (const [name, label, any, names] of FILTERS) {
      const counts = facets[name] ?? {};
      const opts = [["", any]];
      for (const [value, n] of Object.entries(counts)) opts.push([value, `${names?.[value] ?? value} (${n})`]);
      const current = state.query[name];
      if (current && !(current in counts)) opts.push([current, `${current} (0)`]);
      filterBox.append(select(name, label, opts, current, (v) => session.setQuery(
        name === "state" && NO_STRENGTH.has(v) && state.query.sort === "strength" ? { state: v, sort: "name" }
          : { [name]: v })));
    }
    const missing = facets.missing ?? 0;
    filterBox.append(select("show", "Files", [["present", "present files"],
      ["missing", `missing (${missing})`], ["all", "present + missing"]], state.query.show,
    (v) => session.setQuery({ show: v })));
    const sort = select("sort", "Sort", SORTS, state.query.sort, (v) => session.setQuery({ sort: v }));
    const strength = sort.querySelector("option[value=strength]");
    strength.disabled = NO_STRENGTH.has(state.query.state);
    if (strength.disabled) strength.title = "Pending and unreadable LoRAs have no measured strength";
    filterBox.append(sort);
    const desc = h("button", { class: ["lwb-btn", "lwb-icon-btn", state.query.desc && "is-on"], type: "button",
      title: state.query.desc ? "Descending" : "Ascending", "aria-pressed": String(state.query.desc),
      on: { click: () => session.setQuery({ desc: !state.query.desc }) } }, state.query.desc ? "↓" : "↑");
    const reset = h("button", { class: "lwb-btn lwb-link", type: "button", title: "Clear search and filters",
      on: { click: () => { search.value = ""; session.resetQuery(); } } }, "Reset");
    filterBox.append(desc, reset, count);
  }

  // ---- scan bar ----
  const bar = h("div", { class: "lwb-progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" },
    h("div", { class: "lwb-progress-fill" }));
  const scanLabel = h("span", { class: "lwb-scan-text" });
  const rescan = h("button", { class: "lwb-btn", type: "button", title: "Scan the library folders for new and "
    + "changed files", on: { click: () => session.startScan() } }, "Rescan");
  const cancel = h("button", { class: "lwb-btn", type: "button", on: { click: () => session.cancelScan() } },
    "Cancel");
  const scanBox = h("div", { class: "lwb-scan" }, bar, h("div", { class: "lwb-scan-row" }, scanLabel, rescan, cancel));
  function drawScan() {
    const scan = state.scan;
    const running = scan && (scan.state === "running" || scan.state === "cancelling");
    const pct = running && scan.total ? Math.round((100 * (scan.done ?? 0)) / scan.total) : (running ? 0 : 100);
    bar.firstChild.style.width = `${pct}%`;
    bar.setAttribute("aria-valuenow", String(pct));
    bar.classList.toggle("is-active", !!running);
    scanBox.classList.toggle("is-running", !!running);
    scanBox.classList.toggle("is-error", scan?.state === "error");
    scanLabel.textContent = scanText(scan);
    rescan.disabled = !!running;
    cancel.hidden = !running;
    cancel.disabled = scan?.state === "cancelling";
  }

  // ---- the list ----
  function createRow() {
    const row = h("div", { class: "lwb-row", role: "option", draggable: "true" },
      h("span", { class: "lwb-row-thumb is-empty" }),
      h("span", { class: "lwb-row-badge" }),
      h("span", { class: "lwb-row-main" }, h("span", { class: "lwb-row-name" }), h("span", { class: "lwb-row-sub" })),
      h("span", { class: "lwb-row-spark" }),
      h("span", { class: "lwb-row-state" }));
    row.addEventListener("click", (e) => {
      const item = session.getItem(Number(row.dataset.index));
      if (!item?.stable_id) return;
      if (e.ctrlKey || e.metaKey) {
        session.composer.toggle(item);
        session.setTab("composer");
      } else session.select(item.stable_id, { layoutId: item.layout_id });
    });
    row.addEventListener("dragstart", (e) => {
      const item = session.getItem(Number(row.dataset.index));
      if (!item?.stable_id) { e.preventDefault(); return; }
      e.dataTransfer.setData(DRAG_TYPE, JSON.stringify(dragPayload("load", item)));
      e.dataTransfer.setData("text/plain", item.stable_id);
      e.dataTransfer.effectAllowed = "copy";
    });
    return row;
  }

  // a lazy 64 px thumbnail of the LoRA's preview (the route makes and caches it); an empty box when it has none
  function drawThumb(thumb, item) {
    const src = item.has_preview && item.stable_id ? session.api.previewUrl(item.stable_id, 64) : null;
    const img = thumb.firstChild;
    if (src && img?.getAttribute("src") === src) return;
    clear(thumb).classList.toggle("is-empty", !src);
    if (src) {
      const el = h("img", { src, alt: "", loading: "lazy", decoding: "async" });
      el.addEventListener("error", () => { el.remove(); thumb.classList.add("is-empty"); });
      thumb.append(el);
    }
  }

  function renderRow(row, item) {
    const [thumb, badge, main, spark, mark] = row.children;
    const [name, sub] = main.children;
    row.classList.toggle("is-loading", !item);
    if (!item) {
      clear(thumb).classList.add("is-empty");
      clear(badge);
      name.textContent = "…";
      sub.textContent = "";
      clear(spark);
      mark.textContent = "";
      row.removeAttribute("title");
      row.dataset.id = "";
      return;
    }
    if (!state.firstRowsMarked && typeof performance !== "undefined") {
      state.firstRowsMarked = true; // bench/bench_ui.py reads this mark: when the first real rows were drawn
      performance.mark("lorawb:first-rows");
    }
    const version = `${state.generation}:${stamp}`;
    if (row.dataset.id === item.key && row.dataset.version === version) return; // unchanged
    row.dataset.id = item.key;
    row.dataset.version = version;
    clear(badge).append(familyBadge(item.family, item.variant));
    drawThumb(thumb, item);
    name.textContent = item.name ?? item.file_name ?? "(unnamed)";
    sub.textContent = [item.stable_id ?? "no ID", item.layout_id ?? "no layout",
      item.rank ? `r${item.rank}` : null, item.variant].filter(Boolean).join(" · ");
    row.title = [item.name ?? "", item.rel_path ?? item.file_name ?? "",
      item.blocks_state === "error" && item.error ? `Unreadable: ${item.error}` : null].filter((t) => t !== null).join("\n");
    clear(spark);
    if (session.setting(SETTING.sparklines) !== false) spark.append(sparkline(item.spark));
    const stateText = item.missing ? "missing" : item.blocks_state;
    mark.textContent = stateText === "ready" ? "" : stateText;
    mark.className = `lwb-row-state is-${stateText}`;
    row.classList.toggle("is-stacked", session.composer.has(item.stable_id));
    row.classList.toggle("is-missing", !!item.missing);
    row.classList.toggle("is-pending", item.blocks_state === "pending");
    row.classList.toggle("is-error", item.blocks_state === "error");
  }

  const list = new VirtualList({
    rowHeight: ROW_HEIGHT[density()],
    getItem: (i) => session.getItem(i),
    createRow,
    renderRow,
    label: "LoRA library",
    onScroll: (top) => { state.scrollTop = top; },
  });
  const empty = h("div", { class: "lwb-empty", hidden: true });

  function move(delta) {
    const total = state.total ?? 0;
    if (!total) return;
    let index = -1;
    for (const [page, items] of state.pages) {
      const at = items.findIndex((it) => it.stable_id === state.selected);
      if (at >= 0) { index = page * (state.pageSize ?? 100) + at; break; }
    }
    const next = Math.max(0, Math.min(total - 1, index + delta));
    const item = session.getItem(next);
    list.scrollToIndex(next);
    if (item?.stable_id) session.select(item.stable_id, { layoutId: item.layout_id });
  }
  list.element.addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown") { e.preventDefault(); move(1); }
    if (e.key === "ArrowUp") { e.preventDefault(); move(-1); }
  });

  function drawList() {
    list.setRowHeight(ROW_HEIGHT[density()]);
    list.setTotal(state.total ?? 0);
    list.setSelected(state.selected);
    const total = state.total;
    count.textContent = total === null ? "" : `${total.toLocaleString()} LoRA${total === 1 ? "" : "s"}`;
    const noRows = total === 0;
    empty.hidden = !noRows;
    if (noRows) {
      const q = state.query;
      const filtered = !!(q.q.trim() || q.family || q.layout || q.format || q.state) || q.show !== "present";
      empty.textContent = filtered ? "No LoRA matches the search and filters."
        : "The library is empty: add LoRA files to the library folders and press Rescan.";
    }
  }

  const root = h("section", { class: "lwb-library" },
    h("div", { class: "lwb-toolbar" }, search, filterBox), scanBox,
    h("div", { class: "lwb-list-wrap" }, list.element, empty));
  container.append(root);
  drawFilters();
  drawScan();
  drawList();
  list.scrollTo(state.scrollTop);

  cleanups.push(session.subscribe((topic) => {
    if (topic === "list" || topic === "selection" || topic === "detail") drawList();
    else if (topic === "query") { drawFilters(); list.scrollTo(0); drawList(); }
    else if (topic === "facets") drawFilters();
    else if (topic === "scan") drawScan();
    else if (topic === "settings" || topic === "list-marks") { stamp += 1; drawList(); }
  }));

  return {
    focus: () => search.focus(),
    destroy() {
      for (const fn of cleanups) fn();
      list.destroy();
      root.remove();
    },
  };
}
