// The results viewer of a batch: the grid image (click to zoom), every cell with its label and state, and per cell
// "copy settings" and "weights → profile"; for a block ablation the per-block scores. openViewer(session, batchId).
// Cell labels, prompts and errors come from LoRA metadata: they are set as text, never as markup.

import { clear, copyText, fmtNum, h } from "./dom.js";

export function modal(title, ...children) {
  const close = () => { root.remove(); document.removeEventListener("keydown", onKey); };
  const onKey = (e) => { if (e.key === "Escape") close(); };
  const box = h("div", { class: "lwb-modal", role: "dialog", "aria-label": title },
    h("header", { class: "lwb-modal-head" }, h("strong", {}, title),
      h("button", { class: "lwb-btn lwb-icon-btn lwb-modal-close", type: "button", title: "Close",
        on: { click: () => close() } }, "✕")),
    h("div", { class: "lwb-modal-body" }, ...children));
  const root = h("div", { class: "lwb lwb-modal-backdrop", on: { click: (e) => { if (e.target === root) close(); } } },
    box);
  document.addEventListener("keydown", onKey);
  document.body.append(root);
  return { root, body: box.querySelector(".lwb-modal-body"), close };
}

// "default=1, IN04=0" / "default=0, REST=0, OUT03=1" -> a full {block: value} map over the layout's blocks, or null
export function weightsToMap(text, blockIds) {
  if (typeof text !== "string" || !blockIds?.length) return null;
  const out = {};
  let rest = null;
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const m = /^([A-Za-z][\w]*)\s*=\s*(-?\d+(?:\.\d+)?)$/.exec(part);
    if (!m) return null;
    const [, key, value] = m;
    if (key === "default" || key === "REST") rest = Number(value);
    else if (blockIds.includes(key)) out[key] = Number(value);
    else return null;
  }
  for (const id of blockIds) if (!(id in out)) out[id] = rest ?? 1;
  return out;
}

function cellActions(session, cell) {
  const { api, host } = session;
  const copy = h("button", { class: "lwb-btn", type: "button", title: "Copy this cell's settings as JSON",
    on: { click: async () => {
      const ok = await copyText(JSON.stringify(cell.params, null, 2));
      host.toast(ok ? "success" : "warn", ok ? "Copied" : "Copy failed", ok ? `settings of ${cell.label}` : "");
    } } }, "Copy settings");
  const lora = cell.params?.loras?.[0];
  const toProfile = h("button", { class: "lwb-btn", type: "button", title: "Save this cell's block weights as a profile",
    on: { click: async () => {
      try {
        const detail = await api.lora(lora.stable_id);
        const layout = session.layout(detail.layout_id);
        const weights = weightsToMap(lora.weights, layout?.blocks.map((b) => b.id));
        if (!weights) {
          host.toast("warn", "Weights → profile", lora.weights ? `${lora.weights} is already a profile or preset.`
            : "This cell uses the LoRA without block weights.");
          return;
        }
        const name = await host.prompt("Profile name:", `${lora.stable_id} ${cell.label}`.replace(/[^\w .-]+/g, "_"));
        if (!name) return;
        const created = await api.createProfile({ name, layout_id: detail.layout_id, weights,
          description: `from batch cell ${cell.key}` });
        host.toast("success", "Profile saved", created.name ?? name);
      } catch (err) { host.toast("error", "Weights → profile", err.message); }
    } } }, "Weights → profile");
  toProfile.disabled = !lora?.weights;
  return h("div", { class: "lwb-actions" }, copy, toProfile);
}

export function ablationTable(report, weightNorms = null) {
  const scores = report?.scores ?? [];
  const maxScore = Math.max(1e-9, ...scores.map((s) => s.score ?? 0));
  const maxNorm = weightNorms ? Math.max(1e-9, ...Object.values(weightNorms).map((v) => v ?? 0)) : 1;
  const table = h("table", { class: "lwb-ablation" },
    h("thead", {}, h("tr", {}, h("th", {}, "Block"), h("th", {}, "Image effect (0–255)"),
      weightNorms ? h("th", {}, "Weight strength") : null)));
  const body = h("tbody");
  for (const s of scores) {
    const bar = (v, max, cls) => h("span", { class: ["lwb-ab-bar", cls], style: { width: `${Math.round(100 * (v ?? 0)
      / max)}%` } });
    const norm = weightNorms?.[s.block];
    body.append(h("tr", { dataset: { block: s.block } }, h("td", {}, s.block),
      h("td", { title: s.error ?? "" }, s.score === null ? `failed: ${s.error ?? ""}`
        : h("span", { class: "lwb-ab-cell" }, bar(s.score, maxScore, "is-image"), fmtNum(s.score, 3))),
      weightNorms ? h("td", {}, norm === undefined || norm === null ? "–"
        : h("span", { class: "lwb-ab-cell" }, bar(norm, maxNorm, "is-weight"), fmtNum(norm, 3))) : null));
  }
  table.append(body);
  return table;
}

export async function openViewer(session, batchId) {
  const { api } = session;
  const m = modal(`Batch ${batchId}`, h("div", { class: "lwb-empty" }, "Loading…"));
  let data;
  try { data = await api.batch(batchId); } catch (err) {
    clear(m.body).append(h("div", { class: "lwb-empty is-error" }, err.message));
    return m;
  }
  const { batch, cells, finished } = data;
  m.root.querySelector(".lwb-modal-head strong").textContent = `${batch.title} · batch ${batch.id}`;
  clear(m.body);
  const grid = finished?.grid?.file;
  if (grid) {
    const img = h("img", { class: "lwb-viewer-grid", src: api.batchFileUrl(batch.id, grid), alt: batch.title,
      title: "Click to zoom" });
    img.addEventListener("click", () => img.classList.toggle("is-zoomed"));
    m.body.append(h("div", { class: "lwb-viewer-gridbox" }, img));
  }
  if (finished?.ablation) m.body.append(h("h4", { class: "lwb-section-title" }, "Block ablation"),
    ablationTable(finished.ablation));
  if (finished?.previews?.length) {
    m.body.append(h("ul", { class: "lwb-list" }, ...finished.previews.map((p) => h("li", {},
      `${p.stable_id}: ${p.path ?? `not written (${p.error})`}`))));
  }
  const byKey = new Map((finished?.grid?.cells ?? []).map((c) => [c.key, c]));
  const list = h("div", { class: "lwb-viewer-cells" });
  for (const cell of cells) {
    const file = byKey.get(cell.key)?.file ?? cell.image;
    const figure = h("figure", { class: ["lwb-cell", `is-${cell.state}`], dataset: { key: cell.key } },
      file ? h("img", { src: api.batchFileUrl(batch.id, file), alt: cell.label, loading: "lazy" })
        : h("div", { class: "lwb-cell-empty" }, cell.state),
      h("figcaption", {}, cell.label || cell.key));
    if (cell.error) figure.append(h("div", { class: "lwb-cell-error" }, cell.error));
    figure.addEventListener("click", () => {
      for (const f of list.querySelectorAll(".lwb-cell.is-open")) f.classList.remove("is-open");
      figure.classList.add("is-open");
      detail.replaceChildren(h("h4", { class: "lwb-section-title" }, cell.label || cell.key),
        h("pre", { class: "lwb-cell-params" }, JSON.stringify(cell.params, null, 2)), cellActions(session, cell));
    });
    list.append(figure);
  }
  const detail = h("div", { class: "lwb-viewer-detail" });
  m.body.append(list, detail);
  return m;
}
