// The lorawb HTTP API for the panel: the ONLY module that knows URLs. Views get plain data or an ApiError.
//
// A transport moves requests and events: inside ComfyUI `comfyTransport(api)` (api.fetchApi, which adds the /api
// prefix and ComfyUI's headers; events arrive on ComfyUI's websocket), standalone `browserTransport()` (fetch, and
// server-sent events from /lorawb/events). Side-effect free: ComfyUI imports every .js file of the pack.

export const EVENTS = Object.freeze({
  hello: "lorawb.hello",
  progress: "lorawb.scan_progress",
  done: "lorawb.scan_done",
  error: "lorawb.scan_error",
  job: "lorawb.job",
  jobsIdle: "lorawb.jobs_idle",
  jobsError: "lorawb.jobs_error",
  batchDone: "lorawb.batch_done",
});

// Every route the panel calls: name -> [method, path template]. tests/test_ui_static.py checks this table against
// the server's (lorawb_core/server/routes.py) both ways.
export const ROUTES = Object.freeze({
  info: ["GET", "/lorawb/info"],
  search: ["GET", "/lorawb/loras"],
  facets: ["GET", "/lorawb/facets"],
  duplicates: ["GET", "/lorawb/duplicates"],
  lora: ["GET", "/lorawb/loras/{stable_id}"],
  blocks: ["GET", "/lorawb/loras/{stable_id}/blocks"],
  blocksCsv: ["GET", "/lorawb/loras/{stable_id}/blocks.csv"],
  metadata: ["GET", "/lorawb/loras/{stable_id}/metadata"],
  preview: ["GET", "/lorawb/loras/{stable_id}/preview"],
  reindex: ["POST", "/lorawb/loras/{stable_id}/reindex"],
  scanStatus: ["GET", "/lorawb/scan"],
  startScan: ["POST", "/lorawb/scan"],
  cancelScan: ["POST", "/lorawb/scan/cancel"],
  layouts: ["GET", "/lorawb/layouts"],
  layout: ["GET", "/lorawb/layouts/{layout_id}"],
  cacheStats: ["GET", "/lorawb/cache"],
  clearCache: ["DELETE", "/lorawb/cache"],
  profiles: ["GET", "/lorawb/profiles"],
  createProfile: ["POST", "/lorawb/profiles"],
  importProfiles: ["POST", "/lorawb/profiles/import"],
  exportProfiles: ["POST", "/lorawb/profiles/export"],
  profile: ["GET", "/lorawb/profiles/{profile_id}"],
  updateProfile: ["PUT", "/lorawb/profiles/{profile_id}"],
  deleteProfile: ["DELETE", "/lorawb/profiles/{profile_id}"],
  composeCheck: ["POST", "/lorawb/compose/check"],
  saveCombinedProfile: ["POST", "/lorawb/compose/profile"],
  merge: ["POST", "/lorawb/merge"],
  mergeStatus: ["GET", "/lorawb/merge/{job_id}"],
  organizePlan: ["POST", "/lorawb/organize/plan"],
  organize: ["POST", "/lorawb/organize"],
  organizeRuns: ["GET", "/lorawb/organize/runs"],
  organizeUndo: ["POST", "/lorawb/organize/undo"],
  reconcile: ["GET", "/lorawb/organize/reconcile"],
  reconcileFix: ["POST", "/lorawb/organize/reconcile"],
  organizeStatus: ["GET", "/lorawb/organize/{job_id}"],
  jobs: ["GET", "/lorawb/jobs"],
  runJobs: ["POST", "/lorawb/jobs/run"],
  job: ["GET", "/lorawb/jobs/{job_id}"],
  cancelJob: ["POST", "/lorawb/jobs/{job_id}/cancel"],
  retryJob: ["POST", "/lorawb/jobs/{job_id}/retry"],
  batch: ["GET", "/lorawb/batches/{batch_id}"],
  batchFile: ["GET", "/lorawb/batches/{batch_id}/file"],
  cancelBatch: ["POST", "/lorawb/batches/{batch_id}/cancel"],
  retryBatch: ["POST", "/lorawb/batches/{batch_id}/retry"],
  finishBatch: ["POST", "/lorawb/batches/{batch_id}/finish"],
  planPreviews: ["POST", "/lorawb/plans/previews"],
  planAb: ["POST", "/lorawb/plans/ab"],
  planXy: ["POST", "/lorawb/plans/xy"],
  batchSettings: ["GET", "/lorawb/batch-settings"],
  saveBatchSettings: ["PUT", "/lorawb/batch-settings"],
});
// Standalone only (lorawb serve): server-sent events.
export const EVENTS_PATH = "/lorawb/events";

const TOKEN_HEADER = "X-Lorawb-Token";
const TOKEN_KEY = "lorawb.token";

export class ApiError extends Error {
  constructor(status, type, message, field) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = type;
    this.field = field ?? null;
  }
}

// The server prefix of a standalone page: api.js is served at <prefix>/lorawb/static/api.js.
function standalonePrefix() {
  const path = new URL(import.meta.url).pathname;
  const at = path.lastIndexOf("/lorawb/static/");
  return at > 0 ? path.slice(0, at) : "";
}

export function browserTransport(prefix = standalonePrefix()) {
  let source = null;
  const handlers = new Map();
  function ensureSource() {
    if (source || typeof EventSource === "undefined") return;
    source = new EventSource(prefix + EVENTS_PATH);
    for (const [name, set] of handlers) {
      for (const fn of set) source.addEventListener(name, fn);
    }
  }
  return {
    kind: "standalone",
    request: (path, init) => fetch(prefix + path, init),
    url: (path) => prefix + path,
    listen(name, callback) {
      const fn = (e) => {
        let data = null;
        try { data = JSON.parse(e.data); } catch { return; }
        callback(data);
      };
      if (!handlers.has(name)) handlers.set(name, new Set());
      handlers.get(name).add(fn);
      ensureSource();
      source?.addEventListener(name, fn);
      return () => { handlers.get(name)?.delete(fn); source?.removeEventListener(name, fn); };
    },
    close() { source?.close(); source = null; },
  };
}

export function comfyTransport(comfyApi) {
  return {
    kind: "comfyui",
    request: (path, init) => comfyApi.fetchApi(path, init),
    url: (path) => comfyApi.apiURL(path),
    listen(name, callback) {
      const fn = (e) => callback(e.detail);
      comfyApi.addEventListener(name, fn);
      return () => comfyApi.removeEventListener(name, fn);
    },
    close() {},
  };
}

function storage() {
  try { return window.sessionStorage; } catch { return null; }
}

// askToken(): called when a change is refused for want of the server's token (a server listening beyond
// localhost); resolves to the token (kept for this browser session, the request is retried once) or null.
export function createApi(transport, { askToken = null } = {}) {
  let token = storage()?.getItem(TOKEN_KEY) || null;

  async function call(name, options = {}) {
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await send(name, options);
      } catch (err) {
        const tokenRefused = err instanceof ApiError && (err.status === 401
          || (err.status === 403 && err.field === TOKEN_HEADER)); // missing, or wrong (kept from earlier)
        if (!tokenRefused || ROUTES[name][0] === "GET" || !askToken || attempt >= 3) throw err;
        const given = await askToken(err.message);
        if (!given) throw err;
        api.setToken(given);
      }
    }
  }

  async function send(name, { params = {}, query, body, text = false } = {}) {
    const [method, template] = ROUTES[name];
    let url = template.replace(/\{(\w+)\}/g, (_, key) => {
      if (params[key] === undefined || params[key] === null) throw new Error(`lorawb api: ${name} needs ${key}`);
      return encodeURIComponent(String(params[key]));
    });
    if (query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) {
        if (v === undefined || v === null || v === "" || v === false) continue;
        q.set(k, v === true ? "1" : String(v));
      }
      const qs = q.toString();
      if (qs) url += `?${qs}`;
    }
    const headers = { Accept: text ? "text/csv" : "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token && method !== "GET") headers[TOKEN_HEADER] = token;
    let resp;
    try {
      resp = await transport.request(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new ApiError(0, "NetworkError", `The lorawb server cannot be reached (${err?.message ?? err}).`);
    }
    if (!resp.ok) {
      let info = null;
      try { info = (await resp.json())?.error; } catch { /* not JSON */ }
      throw new ApiError(resp.status, info?.type ?? "HTTPError",
        info?.message ?? `${method} ${template} failed with HTTP ${resp.status}.`, info?.field);
    }
    return text ? resp.text() : resp.json();
  }

  const sid = (id) => ({ params: { stable_id: id } });
  const pid = (id) => ({ params: { profile_id: id } });
  const api = {
    transport,
    get hasToken() { return !!token; },
    setToken(value) {
      token = value || null;
      const s = storage();
      if (s) { if (token) s.setItem(TOKEN_KEY, token); else s.removeItem(TOKEN_KEY); }
    },
    on: (event, callback) => transport.listen(event, callback),

    info: () => call("info"),
    search: (query) => call("search", { query }),
    facets: () => call("facets"),
    duplicates: () => call("duplicates"),
    lora: (id) => call("lora", sid(id)),
    blocks: (id) => call("blocks", sid(id)),
    blocksCsv: (id) => call("blocksCsv", { ...sid(id), text: true }),
    metadata: (id) => call("metadata", sid(id)),
    // an <img> src for a LoRA's preview (list rows / details check `has_preview` / `preview` first); size: thumbnail
    previewUrl: (id, size = 0) => transport.url(ROUTES.preview[1].replace("{stable_id}", encodeURIComponent(id))
      + (size ? `?size=${size}` : "")),
    reindex: (id, opts = {}) => call("reindex", { ...sid(id), body: opts }),

    scanStatus: () => call("scanStatus"),
    startScan: (opts = {}) => call("startScan", { body: opts }),
    cancelScan: () => call("cancelScan"),

    layouts: () => call("layouts"),
    layout: (id) => call("layout", { params: { layout_id: id } }),

    cacheStats: () => call("cacheStats"),
    clearCache: () => call("clearCache"),

    profiles: (query) => call("profiles", { query }),
    profile: (id) => call("profile", pid(id)),
    createProfile: (data) => call("createProfile", { body: data }),
    updateProfile: (id, data) => call("updateProfile", { ...pid(id), body: data }),
    deleteProfile: (id) => call("deleteProfile", pid(id)),
    exportProfiles: (data) => call("exportProfiles", { body: data }),
    importProfiles: (data) => call("importProfiles", { body: data }),

    composeCheck: (data) => call("composeCheck", { body: data }),
    saveCombinedProfile: (data) => call("saveCombinedProfile", { body: data }),
    merge: (data) => call("merge", { body: data }),
    mergeStatus: (job) => call("mergeStatus", { params: { job_id: job } }),

    organizePlan: (opts = {}) => call("organizePlan", { body: opts }),
    organize: (opts = {}) => call("organize", { body: { ...opts, confirm: true } }),
    organizeStatus: (job) => call("organizeStatus", { params: { job_id: job } }),
    organizeRuns: () => call("organizeRuns"),
    organizeUndo: (run) => call("organizeUndo", { body: run === undefined ? { confirm: true } : { run, confirm: true } }),
    reconcile: () => call("reconcile"),
    reconcileFix: () => call("reconcileFix", { body: { fix: true } }),
    // the job queue: batches (or one batch's jobs with query.batch), cancel / retry, start the runner
    jobs: (query) => call("jobs", { query }),
    runJobs: (data = {}) => call("runJobs", { body: data }),
    cancelJob: (job) => call("cancelJob", { params: { job_id: job } }),
    retryJob: (job) => call("retryJob", { params: { job_id: job } }),
    cancelBatch: (batch) => call("cancelBatch", { params: { batch_id: batch } }),
    retryBatch: (batch) => call("retryBatch", { params: { batch_id: batch } }),
    // a batch with its cells and (once finished) its grid / previews / ablation report; an <img> src of its files
    batch: (batch) => call("batch", { params: { batch_id: batch } }),
    batchFileUrl: (batch, path) => transport.url(ROUTES.batchFile[1].replace("{batch_id}",
      encodeURIComponent(String(batch))) + `?path=${encodeURIComponent(path)}`),

    // batches: plan (and queue unless data.dry_run) previews, A/B and XY; finish a run batch; preview settings
    planPreviews: (data) => call("planPreviews", { body: data }),
    planAb: (data) => call("planAb", { body: data }),
    planXy: (data) => call("planXy", { body: data }),
    finishBatch: (batch, opts = {}) => call("finishBatch", { params: { batch_id: batch }, body: opts }),
    batchSettings: () => call("batchSettings"),
    saveBatchSettings: (data) => call("saveBatchSettings", { body: data }),
  };
  return api;
}
