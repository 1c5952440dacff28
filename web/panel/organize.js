// The Organize view: the drop folder's files with their verdict and reason (a dry run), the plan's moves, Apply
// (a background run polled to the end, with progress), Undo of the last runs and the reconcile report.

import { clear, h } from "./dom.js";

function planTable(plan) {
  if (!plan.items.length && !plan.left.length) return h("div", { class: "lwb-empty lwb-organize-empty" },
    "The drop folder has no LoRA files to organize.");
  const rows = plan.items.map((item) => {
    const v = item.verdict;
    const name = v.path.split(/[\\/]/).pop();
    return h("tr", { class: ["lwb-organize-item", `is-${v.verdict}`], dataset: { verdict: v.verdict } },
      h("td", { class: "lwb-organize-file", title: v.path }, name),
      h("td", { class: "lwb-organize-verdict" }, v.verdict),
      h("td", { class: "lwb-organize-target", title: item.moves.map((m) => `${m.src} → ${m.dst}`).join("\n") },
        v.reason || item.folder.slice(plan.root.length + 1) + "/"));
  });
  const left = plan.left.map((l) => h("tr", { class: "lwb-organize-item is-left", dataset: { verdict: "left" } },
    h("td", { class: "lwb-organize-file", title: l.path }, l.path.split(/[\\/]/).pop()),
    h("td", { class: "lwb-organize-verdict" }, "left"), h("td", {}, l.reason)));
  return h("table", { class: "lwb-organize-plan" },
    h("thead", {}, h("tr", {}, h("th", {}, "File"), h("th", {}, "Verdict"), h("th", {}, "Folder / reason"))),
    h("tbody", {}, ...rows, ...left));
}

function reconcileBox(report) {
  const lines = [...report.errors.map((f) => ["error", f]), ...report.warnings.map((f) => ["warning", f])];
  return h("div", { class: ["lwb-organize-reconcile", report.ok ? "is-ok" : "is-refused"], role: "status" },
    h("strong", {}, report.ok ? `OK · ${report.folders} folders` : `${report.errors.length} error(s)`),
    lines.length ? h("ul", { class: "lwb-list" }, ...lines.map(([kind, f]) =>
      h("li", { dataset: { kind: f.kind } }, `${kind}${f.fixed ? " (fixed)" : ""}: ${f.message}`))) : null);
}

export function mountOrganize(container, session) {
  const { api, host } = session;
  const st = { plan: null, runs: [], report: null, job: null, error: null, busy: false };
  const root = h("section", { class: "lwb-organize" });
  container.append(root);
  let alive = true;

  async function act(fn) {
    st.busy = true;
    st.error = null;
    draw();
    try { await fn(); } catch (err) { st.error = err.message; } finally { st.busy = false; if (alive) draw(); }
  }
  const refreshRuns = async () => { st.runs = (await api.organizeRuns()).runs; };
  const loadPlan = () => act(async () => { st.plan = (await api.organizePlan({})).plan; await refreshRuns(); });
  const apply = () => act(async () => {
    let job = await api.organize({ no_preview: true });
    st.job = job;
    while (job.state === "running") {
      await new Promise((r) => setTimeout(r, 300));
      job = await api.organizeStatus(job.job);
      st.job = job;
      if (alive) draw();
    }
    if (job.state === "done") host.toast("success", "Organized", `${job.result.organized} organized, `
      + `${job.result.rejected} set aside`);
    else st.error = job.error;
    st.plan = (await api.organizePlan({})).plan;
    await refreshRuns();
  });
  const undo = (run) => act(async () => {
    const r = await api.organizeUndo(run);
    host.toast("success", "Undone", `run ${r.undone_run}: ${r.restored} files put back`);
    st.plan = (await api.organizePlan({})).plan;
    await refreshRuns();
  });
  const reconcile = (fix) => act(async () => { st.report = fix ? await api.reconcileFix() : await api.reconcile(); });

  function draw() {
    clear(root);
    const btn = (label, cls, fn, disabled = false) => h("button", { class: ["lwb-btn", cls], type: "button",
      disabled: st.busy || disabled || undefined, on: { click: fn } }, label);
    const job = st.job?.state === "running" ? `Organizing… ${st.job.done}/${st.job.total}` : null;
    root.append(h("h4", { class: "lwb-section-title" }, "Organize the drop folder"),
      h("div", { class: "lwb-actions" }, btn("Plan", "lwb-organize-plan-btn", loadPlan),
        btn(job ?? "Apply", "lwb-organize-apply", apply, !st.plan?.items.length),
        btn("Reconcile", "lwb-organize-reconcile-btn", () => reconcile(false)),
        st.report && !st.report.ok ? btn("Fix", "lwb-organize-fix", () => reconcile(true)) : null));
    if (st.error) root.append(h("div", { class: "lwb-alert lwb-organize-error" }, st.error));
    if (st.plan) root.append(planTable(st.plan));
    if (st.report) root.append(reconcileBox(st.report));
    const undoable = st.runs.filter((r) => r.kind === "organize" && r.state !== "undone").slice(0, 5);
    if (undoable.length) {
      root.append(h("div", { class: "lwb-subtitle" }, "Last runs"), h("ul", { class: "lwb-list lwb-organize-runs" },
        ...undoable.map((r) => h("li", { dataset: { run: String(r.id) } }, `run ${r.id} · ${r.state} · ${r.started} `,
          btn("Undo", "lwb-organize-undo", () => undo(r.id))))));
    }
  }

  draw();
  loadPlan();
  return () => { alive = false; root.remove(); };
}
