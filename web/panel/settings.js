// Settings of the panel. Inside ComfyUI they live in ComfyUI's settings dialog (persisted per user); in the
// standalone page in localStorage, with the same ids and defaults.

export const SETTING = Object.freeze({
  pageSize: "LoraWB.Library.PageSize",
  sparklines: "LoraWB.Library.Sparklines",
  density: "LoraWB.Panel.Density",
  dialect: "LoraWB.Profiles.DefaultDialect",
});

const CATEGORY = "LoRA Weights Builder";

export const SETTINGS = [
  { id: SETTING.pageSize, name: "Rows fetched per request", type: "number", defaultValue: 50,
    attrs: { min: 20, max: 500, step: 10 }, category: [CATEGORY, "Library", "Page size"],
    tooltip: "How many LoRAs the library list asks the server for at a time (the list only draws what is visible)." },
  { id: SETTING.sparklines, name: "Block sparkline in each row", type: "boolean", defaultValue: true,
    category: [CATEGORY, "Library", "Sparklines"] },
  { id: SETTING.density, name: "Panel density", type: "combo", options: ["comfortable", "compact"],
    defaultValue: "comfortable", category: [CATEGORY, "Panel", "Density"] },
  { id: SETTING.dialect, name: "Default dialect when copying a weight vector", type: "combo",
    options: ["ours", "lbw", "inspire"], defaultValue: "ours", category: [CATEGORY, "Profiles", "Dialect"],
    tooltip: "ours = block=value pairs; lbw = sd-webui-lora-block-weight; inspire = Inspire Pack" },
];

const DEFAULTS = Object.fromEntries(SETTINGS.map((s) => [s.id, s.defaultValue]));

export function comfySettings(app) {
  const get = (id) => {
    try {
      const v = app.extensionManager?.setting?.get?.(id) ?? app.ui?.settings?.getSettingValue?.(id);
      return v === undefined || v === null ? DEFAULTS[id] : v;
    } catch { return DEFAULTS[id]; }
  };
  return {
    get,
    async set(id, value) {
      if (app.extensionManager?.setting?.set) await app.extensionManager.setting.set(id, value);
      else app.ui?.settings?.setSettingValue?.(id, value);
    },
  };
}

export function localSettings(onChange = () => {}) {
  const key = (id) => `lorawb.setting.${id}`;
  return {
    get(id) {
      try {
        const raw = window.localStorage.getItem(key(id));
        return raw === null ? DEFAULTS[id] : JSON.parse(raw);
      } catch { return DEFAULTS[id]; }
    },
    async set(id, value) {
      try { window.localStorage.setItem(key(id), JSON.stringify(value)); } catch { /* private mode */ }
      onChange(id, value);
    },
  };
}
