// The batch queue as the panel sees it: the recent batches with live progress (lorawb.job events), queueing
// previews / A-B / XY through the planning routes, cancel and retry, toasts when a batch is done, and the ablation
// reports per LoRA (shown beside the block graph). createBatchState(session) -> the object session.batches.

import { EVENTS } from "../api.js";

export function createBatchState(session) {
  const { api, host } = session;
  const st = { batches: [], runner: null, progress: new Map(), ablations: new Map(), loaded: false, error: null };
  const listeners = new Set();
  let timer = null;
  const notify = () => { for (const fn of listeners) fn(); session.notify("batches"); };

  async function load() {
    try {
      const data = await api.jobs({ limit: 30 });
      st.batches = data.batches;
      st.runner = data.runner;
      st.error = null;
    } catch (err) { st.error = err; }
    st.loaded = true;
    notify();
  }
  const reload = () => { clearTimeout(timer); timer = setTimeout(load, 150); };

  api.on(EVENTS.job, (e) => {
    if (!e) return;
    if (e.state === "running" && e.value !== undefined && e.max) st.progress.set(e.job, { value: e.value, max: e.max });
    else st.progress.delete(e.job);
    const batch = st.batches.find((b) => b.id === e.batch);
    if (batch && e.state !== "running") reload();
    else if (!batch) reload();
    else notify();
  });
  api.on(EVENTS.jobsIdle, () => reload());
  api.on(EVENTS.jobsError, (e) => {
    host.toast("error", "Batch queue", e?.message ?? "the job runner failed");
    reload();
  });
  api.on(EVENTS.batchDone, (e) => {
    if (!e) return;
    reload();
    if (e.error) { host.toast("error", `Batch ${e.batch}`, e.error); return; }
    const failed = e.failed ? `, ${e.failed} failed` : "";
    host.toast(e.failed ? "warn" : "success", "Batch done", `${e.title ?? `batch ${e.batch}`}${failed}`);
    if (e.kind === "preview" && (e.previews ?? []).some((p) => p.path)) {
      session.refresh(); // rows and details show the new thumbnails
      if (session.state.selected) session.select(session.state.selected, { force: true });
    }
    if (e.kind === "ablation" && e.ablation) rememberAblation(e.batch, e.ablation);
  });

  async function rememberAblation(batchId, report) {
    try {
      const data = await api.batch(batchId);
      const first = data.cells.find((c) => c.params?.loras?.length)?.params.loras[0]?.stable_id;
      if (first) {
        st.ablations.set(first, { batch: batchId, ...report });
        if (session.state.selected === first) session.notify("detail");
      }
    } catch { /* the viewer shows it anyway */ }
  }

  // queue(kind, body) -> the route's answer; a plan over the size limit asks before it is queued with confirm
  async function queue(kind, body) {
    const call = { previews: api.planPreviews, ab: api.planAb, xy: api.planXy }[kind];
    let result;
    try {
      result = await call(body);
    } catch (err) {
      if (err.status === 400 && /over the limit/.test(err.message) && !body.confirm
        && await host.confirm(`${err.message}\n\nQueue it anyway?`)) {
        return queue(kind, { ...body, confirm: true });
      }
      throw err;
    }
    const skipped = result.plan?.skipped ?? [];
    if (!result.batch) {
      host.toast("warn", "Nothing queued", skipped.length ? skipped[0].reason : "the plan has no images to make");
    } else {
      host.toast("info", "Queued", `${result.plan.title}: ${result.batch.total} image${result.batch.total === 1
        ? "" : "s"}${skipped.length ? ` (${skipped.length} left out)` : ""}`);
      reload();
    }
    return result;
  }

  async function act(what, fn) {
    try { await fn(); } catch (err) { host.toast("error", what, err?.message ?? String(err)); }
    reload();
  }

  return {
    st,
    load,
    subscribe(fn) { listeners.add(fn); return () => listeners.delete(fn); },
    queue,
    preview: (ids, opts = {}) => queue("previews", { ids, ...opts }),
    missingPreviews: (filter = "") => queue("previews", { missing: true, filter }),
    cancelBatch: (id) => act("Cancel", () => api.cancelBatch(id)),
    retryBatch: (id) => act("Retry", () => api.retryBatch(id)),
    cancelJob: (id) => act("Cancel", () => api.cancelJob(id)),
    retryJob: (id) => act("Retry", () => api.retryJob(id)),
    ablationFor: (stableId) => st.ablations.get(stableId) ?? null,
    rememberAblation,
  };
}
