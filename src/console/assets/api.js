// The JSON API with the session's bearer token (kept in sessionStorage: this tab only, gone
// when the browser session ends). Every call that answers 401 signs the console out.
const KEY = "hookledger.token";

export const session = {
  token: () => sessionStorage.getItem(KEY),
  save: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, body) {
    const e = body && body.error;
    super(e ? `${e.message}${e.field ? ` (${e.field})` : ""}` : `HTTP ${status}`);
    this.status = status;
    this.code = e ? e.code : null;
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(f) { onUnauthorized = f; }

export async function api(method, path, body, token) {
  const headers = { Authorization: `Bearer ${token ?? session.token() ?? ""}` };
  const init = { method, headers };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!r.ok) {
    if (r.status === 401 && token === undefined) onUnauthorized();
    throw new ApiError(r.status, data);
  }
  return data;
}

export const get = (path) => api("GET", path);

// `?a=1&b=2` from the non-empty entries of `params`.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

export const enc = encodeURIComponent;
