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
});

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

const enc = encodeURIComponent;

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
    source = new EventSource(`${prefix}/lorawb/events`);
    for (const [name, set] of handlers) {
      for (const fn of set) source.addEventListener(name, fn);
    }
  }
  return {
    kind: "standalone",
    request: (path, init) => fetch(prefix + path, init),
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

export function createApi(transport) {
  let token = storage()?.getItem(TOKEN_KEY) || null;

  async function call(method, path, { query, body, text = false } = {}) {
    let url = path;
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
        info?.message ?? `${method} ${path} failed with HTTP ${resp.status}.`, info?.field);
    }
    return text ? resp.text() : resp.json();
  }

  const lora = (id) => `/lorawb/loras/${enc(id)}`;
  const profile = (id) => `/lorawb/profiles/${enc(id)}`;
  return {
    transport,
    get hasToken() { return !!token; },
    setToken(value) {
      token = value || null;
      const s = storage();
      if (s) { if (token) s.setItem(TOKEN_KEY, token); else s.removeItem(TOKEN_KEY); }
    },
    on: (event, callback) => transport.listen(event, callback),

    info: () => call("GET", "/lorawb/info"),
    search: (params) => call("GET", "/lorawb/loras", { query: params }),
    facets: () => call("GET", "/lorawb/facets"),
    duplicates: () => call("GET", "/lorawb/duplicates"),
    lora: (id) => call("GET", lora(id)),
    blocks: (id) => call("GET", `${lora(id)}/blocks`),
    blocksCsv: (id) => call("GET", `${lora(id)}/blocks.csv`, { text: true }),
    metadata: (id) => call("GET", `${lora(id)}/metadata`),
    reindex: (id, opts = {}) => call("POST", `${lora(id)}/reindex`, { body: opts }),

    scanStatus: () => call("GET", "/lorawb/scan"),
    startScan: (opts = {}) => call("POST", "/lorawb/scan", { body: opts }),
    cancelScan: () => call("POST", "/lorawb/scan/cancel"),

    layouts: () => call("GET", "/lorawb/layouts"),
    layout: (id) => call("GET", `/lorawb/layouts/${enc(id)}`),

    cacheStats: () => call("GET", "/lorawb/cache"),
    clearCache: () => call("DELETE", "/lorawb/cache"),

    profiles: (params) => call("GET", "/lorawb/profiles", { query: params }),
    profile: (id) => call("GET", profile(id)),
    createProfile: (data) => call("POST", "/lorawb/profiles", { body: data }),
    updateProfile: (id, data) => call("PUT", profile(id), { body: data }),
    deleteProfile: (id) => call("DELETE", profile(id)),
    exportProfiles: (data) => call("POST", "/lorawb/profiles/export", { body: data }),
    importProfiles: (data) => call("POST", "/lorawb/profiles/import", { body: data }),

    composeCheck: (data) => call("POST", "/lorawb/compose/check", { body: data }),
  };
}
