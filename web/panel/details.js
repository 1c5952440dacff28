// The details of the selected LoRA: identity, family with its evidence, format and algorithms, rank/alpha, trigger
// words (click to copy), hashes, training facts and the block graph; actions into the graph, reindex, CSV.

import { openAbDialog, openXyDialog } from "./batch_dialogs.js";
import { blockGraph } from "./blockgraph.js";
import { clear, copyText, download, familyBadge, fmtNum, fmtSize, h } from "./dom.js";
import { mountEditor } from "./editor.js";
import { DRAG_TYPE, dragPayload } from "./canvas.js";
import { ablationTable, openViewer } from "./viewer.js";

const TRAINING_LABELS = {
  steps: "Steps", epoch: "Epoch", epochs: "Epochs", max_steps: "Max steps", images: "Images",
  reg_images: "Regularisation images", batch_size: "Batch size", clip_skip: "CLIP skip", seed: "Seed",
  learning_rate: "Learning rate", unet_lr: "UNet LR", text_encoder_lr: "Text-encoder LR",
  noise_offset: "Noise offset", network_dim: "Network dim", network_alpha: "Network alpha",
  optimizer: "Optimizer", lr_scheduler: "LR scheduler", resolution: "Resolution",
  mixed_precision: "Precision", base_model_name: "Base model", base_model_version: "Base model version",
  base_model_hash: "Base model hash", network_module: "Network module", vae_name: "VAE",
  prediction_type: "Prediction", started_at: "Started", finished_at: "Finished",
};

function section(title, ...children) {
  return h("section", { class: "lwb-section" }, h("h4", { class: "lwb-section-title" }, title), ...children);
}

function kvTable(rows) {
  const table = h("dl", { class: "lwb-kv" });
  for (const [label, value, extra] of rows) {
    if (value === null || value === undefined || value === "") continue;
    table.append(h("dt", {}, label), h("dd", {}, value instanceof Node ? value : String(value), extra ?? null));
  }
  return table;
}

function copyable(session, text, label = text) {
  return h("button", { class: "lwb-copy", type: "button", title: `Copy ${label}`,
    on: { click: async () => {
      const ok = await copyText(text);
      session.host.toast(ok ? "success" : "warn", ok ? "Copied" : "Copy failed", ok ? label : "The browser refused.");
    } } }, text);
}

function fmtTraining(key, value) {
  if (value === null || value === undefined) return null;
  if ((key === "started_at" || key === "finished_at") && typeof value === "number") {
    return new Date(value * 1000).toISOString().replace("T", " ").slice(0, 19);
  }
  if (typeof value === "object") return JSON.stringify(value);
  return typeof value === "number" && !Number.isInteger(value) ? fmtNum(value, 4) : String(value);
}

function actions(session, d) {
  const bridge = session.host.graph;
  const bar = h("div", { class: "lwb-actions" });
  const fail = (err) => session.host.toast("error", "Into the graph", err?.message ?? String(err));
  if (bridge) {
    const load = h("button", { class: "lwb-btn lwb-primary", type: "button", draggable: "true",
      title: "Add a Load LoRA (by stable_id) node to the graph, or drag this button onto the canvas",
      on: { click: () => { try { bridge.addLoad(d); } catch (err) { fail(err); } } } }, "+ Load node");
    const pair = h("button", { class: "lwb-btn", type: "button", draggable: "true",
      title: "Add a Block Weight Apply + Profile Select pair, connected, or drag this button onto the canvas",
      on: { click: () => { try { bridge.addPair(d, session.profileFor?.(d) ?? null); } catch (err) { fail(err); } } } },
    "+ Block-weight pair");
    load.disabled = !bridge.available();
    pair.disabled = !bridge.pairAvailable();
    if (load.disabled) load.title = "The lorawb nodes are not installed in this ComfyUI";
    if (pair.disabled) pair.title = "The lorawb block-weight nodes are not installed in this ComfyUI";
    for (const [btn, kind] of [[load, "load"], [pair, "pair"]]) {
      btn.addEventListener("dragstart", (e) => {
        e.dataTransfer.setData(DRAG_TYPE, JSON.stringify(dragPayload(kind, d, kind === "pair"
          ? session.profileFor?.(d) ?? null : null)));
        e.dataTransfer.effectAllowed = "copy";
      });
    }
    bar.append(load, pair);
  }
  const csv = h("button", { class: "lwb-btn", type: "button", title: "Download the block strengths as CSV",
    on: { click: async () => {
      try { download(`${d.stable_id}-blocks.csv`, await session.api.blocksCsv(d.stable_id)); } catch (err) {
        session.host.toast("error", "CSV export", err.message);
      }
    } } }, "CSV");
  csv.disabled = d.blocks_state !== "ready";
  const inStack = session.composer.has(d.stable_id);
  bar.append(h("button", { class: ["lwb-btn", inStack && "is-on"], type: "button",
    title: "Add to (or remove from) the composer's stack; Ctrl/⌘-click rows does the same",
    on: { click: () => { session.composer.toggle(d); session.setTab("composer"); } } },
  inStack ? "− Composer" : "+ Composer"));
  const reindex = h("button", { class: "lwb-btn", type: "button", title: "Read this file again (header, blocks, "
    + "hashes)", on: { click: async () => { reindex.disabled = true; await session.reindex(d.stable_id);
    reindex.disabled = false; } } }, "Reindex");
  bar.append(csv, reindex);
  return bar;
}

// Preview (a new one replaces the old only after a confirm), A/B, XY and block ablation for this LoRA
function batchActions(session, d) {
  const { batches, host } = session;
  const queue = (what, fn) => async () => {
    try { await fn(); } catch (err) { host.toast("error", what, err.message); }
  };
  const preview = h("button", { class: "lwb-btn", type: "button", dataset: { act: "preview" },
    title: "Generate a preview image on ComfyUI (settings: Jobs → Preview settings)",
    on: { click: queue("Preview", async () => {
      const force = !!d.preview && await host.confirm(`${d.stable_id} has a preview. Replace it?`);
      if (d.preview && !force) return;
      await batches.preview([d.stable_id], { force });
    }) } }, d.preview ? "New preview" : "Preview");
  const ab = h("button", { class: "lwb-btn", type: "button", dataset: { act: "ab" },
    on: { click: () => openAbDialog(session, [d.stable_id]) } }, "A/B…");
  const xy = h("button", { class: "lwb-btn", type: "button", dataset: { act: "xy" },
    on: { click: () => openXyDialog(session, [d.stable_id]) } }, "XY…");
  const ablate = h("button", { class: "lwb-btn", type: "button", dataset: { act: "ablate" },
    title: "One image per block muted, scored against the all-blocks image (LBW's effective-block analysis)",
    on: { click: queue("Block ablation", () => batches.queue("xy", { stack: [d.stable_id], ablate: "mute" })) } },
  "Ablate blocks");
  ablate.disabled = !d.layout_id;
  preview.disabled = !!d.missing;
  return h("div", { class: "lwb-actions lwb-batch-actions" }, preview, ab, xy, ablate);
}

function ablationSection(session, d) {
  const report = session.batches.ablationFor(d.stable_id);
  if (!report) return null;
  const norms = Object.fromEntries((Array.isArray(d.blocks) ? d.blocks : []).map((b) => [b.id, b.norm]));
  return section(`Block ablation (batch ${report.batch}): image vs weights`, ablationTable(report, norms),
    h("button", { class: "lwb-btn lwb-link", type: "button", on: { click: () => openViewer(session, report.batch) } },
      "Open the grid"));
}

// Renders the selected LoRA into `container`; returns a cleanup (the editor's subscription).
function renderDetails(container, session) {
  const { state } = session;
  clear(container);
  if (!state.selected) {
    container.append(h("div", { class: "lwb-empty" }, "Select a LoRA to see its details and block graph."));
    return;
  }
  if (state.detailError) {
    container.append(h("div", { class: "lwb-empty is-error" }, state.detailError.message));
    return;
  }
  const d = state.detail;
  if (!d) {
    container.append(h("div", { class: "lwb-empty" }, `Loading ${state.selected}…`));
    return;
  }
  const layout = session.layout(d.layout_id);
  const names = [d.title && d.title !== d.name ? ["Title", d.title] : null, ["File", d.file_name],
    ["Folder", d.rel_path], ["Author", d.author], ["Category", d.category], ["Size", fmtSize(d.size)],
    ["Added", d.first_seen], ["State", d.missing ? "missing (file gone; ID kept)" : d.scan_state],
    ["Default weight", d.default_weight ?? null], ["Notes", d.notes ?? null]].filter(Boolean);
  const evidence = d.family_evidence ?? {};
  const algos = Object.entries(d.algorithms ?? {}).map(([a, n]) => `${a} ×${n}`).join(", ");
  const header = h("header", { class: "lwb-detail-head" },
    d.preview ? h("img", { class: "lwb-detail-thumb", src: session.api.previewUrl(d.stable_id, 256), alt: "",
      title: d.preview, loading: "lazy" }) : null,
    familyBadge(d.family, d.variant),
    h("div", { class: "lwb-detail-title" },
      h("div", { class: "lwb-detail-name", title: d.name ?? "" }, d.name ?? d.file_name ?? "(unnamed)"),
      h("div", { class: "lwb-detail-id" }, copyable(session, d.stable_id, `stable_id ${d.stable_id}`))));
  const editor = session.editor;
  const overlay = () => (editor.data.layoutId === d.layout_id && editor.data.saved
    ? { values: editor.data.draft, ranges: editor.data.ranges } : null);
  const drawGraph = () => (layout ? blockGraph(layout, d.blocks, { state: d.blocks_state, overlay: overlay() })
    : h("div", { class: "lwb-empty" }, d.layout_id ? `Unknown layout ${d.layout_id}` : "No block layout."));
  let graph = drawGraph();
  const triggers = h("div", { class: "lwb-chips" });
  for (const word of d.trigger_words ?? []) triggers.append(copyable(session, word, `trigger word “${word}”`));
  const training = d.metadata?.training ?? {};
  const trainingRows = Object.entries(TRAINING_LABELS).map(([k, label]) => [label, fmtTraining(k, training[k])]);
  const hashes = [["SHA256", d.sha256], ["AutoV2", d.autov2], ["AutoV3", d.autov3], ["addnet", d.addnet]]
    .filter(([, v]) => v).map(([k, v]) => [k, copyable(session, v, `${k} ${v}`)]);

  container.append(...[
    header,
    actions(session, d),
    batchActions(session, d),
    d.error ? h("div", { class: "lwb-alert" }, d.error) : null,
    h("div", { class: "lwb-graph-row" }, section("Block graph", graph), ablationSection(session, d)),
    layout ? h("div", { class: "lwb-editor-slot" }) : null,
    section("Identity", kvTable(names)),
    section("Family", kvTable([
      ["Family", `${d.family ?? "unknown"}${d.variant ? ` (${d.variant})` : ""}`],
      ["Confidence", d.confidence],
      ["Evidence", (evidence.evidence ?? []).length ? h("ul", { class: "lwb-list" },
        ...(evidence.evidence ?? []).map((e) => h("li", {}, e))) : null],
      ["Conflicts", (evidence.conflicts ?? []).length ? h("ul", { class: "lwb-list" },
        ...(evidence.conflicts ?? []).map((e) => h("li", {}, e))) : null],
      ["Reason", evidence.reason],
    ])),
    section("Format", kvTable([["Format", d.format], ["Algorithms", algos], ["Rank", d.rank],
      ["Alpha", d.alpha === null ? null : fmtNum(d.alpha, 4)], ["Modules", d.module_count],
      ["Layout", d.layout_id], ["Full layout", d.full_layout_id !== d.layout_id ? d.full_layout_id : null]])),
    (d.trigger_words ?? []).length ? section("Trigger words", triggers) : null,
    hashes.length ? section("Hashes", kvTable(hashes)) : null,
    trainingRows.some(([, v]) => v !== null) ? section("Training", kvTable(trainingRows)) : null,
    (d.duplicates ?? []).length ? section("Same content as", h("ul", { class: "lwb-list" },
      ...d.duplicates.map((p) => h("li", {}, p)))) : null,
    (d.problems ?? []).length ? section("Problems", h("ul", { class: "lwb-list" },
      ...d.problems.map((p) => h("li", {}, p)))) : null,
  ].filter(Boolean));
  const slot = container.querySelector(".lwb-editor-slot");
  if (!slot) return () => {};
  return mountEditor(slot, session, () => {
    const next = drawGraph();
    graph.replaceWith(next);
    graph = next;
  });
}

export function mountDetails(container, session) {
  let cleanup = renderDetails(container, session) ?? (() => {});
  const redraw = () => { cleanup(); cleanup = renderDetails(container, session) ?? (() => {}); };
  const unsubscribe = session.subscribe((topic) => {
    if (topic === "selection" || topic === "detail" || topic === "info") redraw();
    else if (topic === "composer" && session.state.detail) {
      const btn = [...container.querySelectorAll(".lwb-actions button")].find((b) => b.textContent.includes("Composer"));
      if (btn) {
        const inStack = session.composer.has(session.state.detail.stable_id);
        btn.textContent = inStack ? "− Composer" : "+ Composer";
        btn.classList.toggle("is-on", inStack);
      }
    }
  });
  return () => { unsubscribe(); cleanup(); clear(container); };
}
