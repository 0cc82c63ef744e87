// The REST API from the browser: the session cookie (HttpOnly, never visible here) stands for the
// API key when the request carries the session's CSRF token.

let csrf = '';
let onUnauthorized = () => {};

export function setCsrf(token) { csrf = token || ''; }
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export class ApiError extends Error {
  constructor(status, type, message) {
    super(`${type}: ${message}`);
    this.status = status;
    this.type = type;
  }
}

async function failure(response) {
  let type = `HTTP ${response.status}`;
  let message = response.statusText;
  try {
    const err = (await response.json()).error || {};
    type = err.type || type;
    message = err.message || message;
  } catch (e) { /* not JSON */ }
  if (response.status === 401) onUnauthorized();
  return new ApiError(response.status, type, message);
}

// fetch() with the CSRF header; `json` is sent as a JSON body. `raw`: the Response itself.
export async function api(method, path, { json, body, headers, raw } = {}) {
  const h = { 'X-Boxlite-CSRF': csrf, ...(headers || {}) };
  let payload = body;
  if (json !== undefined) {
    h['Content-Type'] = 'application/json';
    payload = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers: h, body: payload, credentials: 'same-origin', cache: 'no-store' });
  if (!response.ok) throw await failure(response);
  if (raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get('content-type') || '';
  return type.includes('json') ? response.json() : response.text();
}

export const boxPath = (id, rest = '') => `/v1/boxes/${encodeURIComponent(id)}${rest}`;

export function query(params) {
  return new URLSearchParams(params).toString();
}
