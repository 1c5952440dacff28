// The jobs view: recent batches with live progress (lorawb.job events), cancel / retry per batch and per job,
// "Results" opens the viewer; below, the preview settings (preview_config.json, validated by the server).

import { clear, h } from "./dom.js";
import { openViewer } from "./viewer.js";

const LIVE = ["queued", "submitted", "running"];

function counts(b) {
  const c = b.counts ?? {};
  return Object.entries(c).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`).join(" · ");
}

function batchRow(session, b, open, toggle) {
  const jobs = session.batches;
  const c = b.counts ?? {};
  const live = LIVE.reduce((n, s) => n + (c[s] ?? 0), 0);
  const ended = (c.done ?? 0) + (c.failed ?? 0) + (c.cancelled ?? 0);
  const pct = b.total ? Math.round((100 * ended) / b.total) : 100;
  const bar = h("div", { class: ["lwb-progress", live && "is-active"], role: "progressbar", "aria-valuemin": "0",
    "aria-valuemax": "100", "aria-valuenow": String(pct) }, h("div", { class: "lwb-progress-fill",
    style: { width: `${pct}%` } }));
  const buttons = h("div", { class: "lwb-actions" });
  if (live) buttons.append(h("button", { class: "lwb-btn", type: "button", dataset: { act: "cancel" },
    on: { click: () => jobs.cancelBatch(b.id) } }, "Cancel"));
  if ((c.failed ?? 0) + (c.cancelled ?? 0)) buttons.append(h("button", { class: "lwb-btn", type: "button",
    dataset: { act: "retry" }, on: { click: () => jobs.retryBatch(b.id) } }, "Retry"));
  if (b.finished && c.done) buttons.append(h("button", { class: "lwb-btn lwb-primary", type: "button",
    dataset: { act: "results" }, on: { click: () => openViewer(session, b.id) } }, "Results"));
  buttons.append(h("button", { class: "lwb-btn lwb-link", type: "button", dataset: { act: "jobs" },
    on: { click: toggle } }, open ? "Hide jobs" : "Jobs"));
  return h("div", { class: ["lwb-batch", b.finished ? "is-finished" : "is-live"], dataset: { batch: String(b.id),
    kind: b.kind } },
  h("div", { class: "lwb-batch-head" }, h("strong", { class: "lwb-batch-title" }, b.title || `batch ${b.id}`),
    h("span", { class: "lwb-batch-counts" }, `${b.kind} · ${counts(b)}`)), bar, buttons);
}

async function jobList(session, batchId) {
  const jobs = session.batches;
  const box = h("div", { class: "lwb-joblist" });
  let data;
  try { data = await session.api.jobs({ batch: batchId }); } catch (err) {
    box.append(h("div", { class: "lwb-empty is-error" }, err.message));
    return box;
  }
  for (const j of data.jobs) {
    const p = jobs.st.progress.get(j.id);
    box.append(h("div", { class: ["lwb-job", `is-${j.state}`], dataset: { job: String(j.id) } },
      h("span", { class: "lwb-job-label" }, j.label || j.key),
      h("span", { class: "lwb-job-state", title: j.error ?? "" }, p ? `${j.state} ${p.value}/${p.max}` : j.state),
      LIVE.includes(j.state) ? h("button", { class: "lwb-btn lwb-link", type: "button",
        on: { click: () => jobs.cancelJob(j.id) } }, "Cancel") : null,
      ["failed", "cancelled"].includes(j.state) ? h("button", { class: "lwb-btn lwb-link", type: "button",
        on: { click: () => jobs.retryJob(j.id) } }, "Retry") : null,
      j.error ? h("div", { class: "lwb-job-error" }, j.error) : null));
  }
  return box;
}

function settingsEditor(session) {
  const { api, host } = session;
  const area = h("textarea", { class: "lwb-input lwb-settings-json", rows: "10", spellcheck: "false",
    "aria-label": "Preview settings (JSON)" });
  const where = h("div", { class: "lwb-muted" });
  const error = h("div", { class: "lwb-alert", hidden: true });
  async function load() {
    try {
      const data = await api.batchSettings();
      area.value = JSON.stringify(data.config, null, 2);
      where.textContent = `${data.path ?? "(defaults)"} · placeholders ${data.placeholders.join(" ")}`;
    } catch (err) { error.hidden = false; error.textContent = err.message; }
  }
  const save = h("button", { class: "lwb-btn lwb-primary", type: "button", on: { click: async () => {
    let body;
    try { body = JSON.parse(area.value); } catch (err) {
      error.hidden = false; error.textContent = `Not JSON: ${err.message}`; return;
    }
    try {
      const data = await api.saveBatchSettings(body);
      area.value = JSON.stringify(data.config, null, 2);
      error.hidden = true;
      host.toast("success", "Preview settings saved", data.path ?? "");
    } catch (err) { error.hidden = false; error.textContent = err.message; }
  } } }, "Save settings");
  load();
  return h("details", { class: "lwb-section lwb-preview-settings" },
    h("summary", { class: "lwb-section-title" }, "Preview settings"),
    h("p", { class: "lwb-muted" }, "Checkpoint, prompt, negative, width/height, steps, cfg, sampler, scheduler, seed "
      + "and LoRA weight: under \"defaults\" and per family under \"families\"."),
    area, error, h("div", { class: "lwb-actions" }, save), where);
}

export function mountJobs(container, session) {
  const jobs = session.batches;
  const open = new Set();
  const list = h("div", { class: "lwb-batches", "aria-live": "polite" });
  const missing = h("button", { class: "lwb-btn", type: "button", title: "Queue a preview for every LoRA without one "
    + "(in the current search, if any)", on: { click: async () => {
    try { await jobs.missingPreviews(session.state.query.q ?? ""); } catch (err) {
      session.host.toast("error", "Missing previews", err.message);
    }
  } } }, "Missing previews");
  const root = h("div", { class: "lwb-jobs" },
    h("div", { class: "lwb-actions" }, missing, h("button", { class: "lwb-btn", type: "button",
      on: { click: () => jobs.load() } }, "Refresh")), list, settingsEditor(session));
  container.append(root);

  let generation = 0;
  async function draw() {
    const gen = ++generation;
    const { batches, error, loaded } = jobs.st;
    const rows = [];
    if (error) rows.push(h("div", { class: "lwb-empty is-error" }, error.message));
    else if (loaded && !batches.length) rows.push(h("div", { class: "lwb-empty" }, "No batches yet: use Preview, "
      + "A/B or XY in a LoRA's details, or Missing previews."));
    for (const b of batches) {
      const toggle = () => { if (open.has(b.id)) open.delete(b.id); else open.add(b.id); draw(); };
      const row = batchRow(session, b, open.has(b.id), toggle);
      rows.push(row);
      if (open.has(b.id)) row.append(await jobList(session, b.id));
      if (gen !== generation) return; // a newer draw took over
    }
    clear(list).append(...rows);
  }
  const unsubscribe = jobs.subscribe(draw);
  jobs.load();
  return () => { unsubscribe(); root.remove(); };
}
