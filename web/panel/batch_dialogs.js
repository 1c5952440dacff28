// The A/B and XY dialogs (from a LoRA's details or the composer's stack). "Check" asks the server for a dry run (how
// many images, which LoRAs are left out and why); "Queue" queues it (a plan over the size limit asks first).
// stack: ["SD1-ABC-001", "SD1-DEF-002:0.6", …] (ID[:STRENGTH][@WEIGHTS]).

import { h } from "./dom.js";
import { modal } from "./viewer.js";

const AXES = ["strength", "profile", "seed", "lora", "checkpoint"];

function field(label, input) {
  return h("label", { class: "lwb-field" }, h("span", {}, label), input);
}

function planText(plan) {
  const skipped = plan.skipped.map((s) => `left out ${s.item}: ${s.reason}`);
  return [`${plan.title}: ${plan.count} image${plan.count === 1 ? "" : "s"}`, ...skipped].join("\n");
}

function dialog(session, title, kind, build, inputs) {
  const out = h("pre", { class: "lwb-plan-out", "aria-live": "polite" });
  const run = async (dry) => {
    let body;
    try { body = build(); } catch (err) { out.textContent = err.message; return; }
    try {
      if (dry) {
        out.textContent = planText((await session.api[{ ab: "planAb", xy: "planXy" }[kind]]({ ...body, dry_run: true }))
          .plan);
        return;
      }
      const result = await session.batches.queue(kind, body);
      if (result.batch) { m.close(); session.setTab("jobs"); } else out.textContent = planText(result.plan);
    } catch (err) { out.textContent = err.message; }
  };
  const m = modal(title, h("form", { class: "lwb-form", on: { submit: (e) => { e.preventDefault(); run(false); } } },
    ...inputs, h("div", { class: "lwb-actions" },
      h("button", { class: "lwb-btn", type: "button", dataset: { act: "check" }, on: { click: () => run(true) } },
        "Check"),
      h("button", { class: "lwb-btn lwb-primary", type: "submit", dataset: { act: "queue" } }, "Queue")), out));
  m.root.classList.add(`lwb-dialog-${kind}`);
  return m;
}

export function openAbDialog(session, stack) {
  const stackIn = h("input", { class: "lwb-input", name: "stack", props: { value: stack.join(" ") } });
  const mode = h("select", { class: "lwb-select", name: "mode" },
    h("option", { value: "strengths" }, "strengths"), h("option", { value: "profiles" }, "profiles"));
  const values = h("input", { class: "lwb-input", name: "values", props: { value: "0.4,0.8,1.2" },
    placeholder: "0.4,0.8,1.2  or  ALL,INS,OUTD" });
  const build = () => ({ stack: stackIn.value.split(/\s+/).filter(Boolean), [mode.value]: values.value });
  return dialog(session, "A/B test", "ab", build, [field("LoRA (stack)", stackIn), field("Vary", mode),
    field("Values", values)]);
}

export function openXyDialog(session, stack) {
  const stackIn = h("input", { class: "lwb-input", name: "stack", props: { value: stack.join(" ") } });
  const axis = (name, value) => h("select", { class: "lwb-select", name },
    ...[["", "(none)"], ...AXES.map((a) => [a, a])].map(([v, t]) => h("option", { value: v, selected: v === value },
      t)));
  const xName = axis("x_axis", "strength");
  const yName = axis("y_axis", "");
  const xVals = h("input", { class: "lwb-input", name: "x_values", props: { value: "0,0.5,1" } });
  const yVals = h("input", { class: "lwb-input", name: "y_values", placeholder: "ALL,INS,OUTD" });
  const ablate = h("select", { class: "lwb-select", name: "ablate" }, h("option", { value: "" }, "no"),
    h("option", { value: "mute" }, "each block muted"), h("option", { value: "solo" }, "each block alone"));
  const build = () => {
    const body = { stack: stackIn.value.split(/\s+/).filter(Boolean) };
    if (ablate.value) return { ...body, ablate: ablate.value };
    if (!xName.value || !xVals.value.trim()) throw new Error("Choose an X axis and its values (or a block ablation).");
    body.x = `${xName.value}=${xVals.value.trim()}`;
    if (yName.value && yVals.value.trim()) body.y = `${yName.value}=${yVals.value.trim()}`;
    return body;
  };
  return dialog(session, "XY grid", "xy", build, [field("LoRA (stack)", stackIn),
    field("X axis", h("span", { class: "lwb-axis" }, xName, xVals)),
    field("Y axis", h("span", { class: "lwb-axis" }, yName, yVals)), field("Block ablation", ablate)]);
}
