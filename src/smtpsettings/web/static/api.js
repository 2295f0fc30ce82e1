// The HTTP client: one JSON request to the same-origin API, and the error envelope's message said plainly.

export const API = "/api/2.0";
export const SMTP = `${API}/smtpsettings/smtp`;
export const SESSION_KEY = "smtpsettings.signedInAs";


/** One JSON request. Resolves to {status, body, headers}; status 0 when the server could not be reached. */
export async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    return { status: 0, body: null, headers: new Headers() };
  }
  let parsed = null;
  try {
    parsed = await response.json();
  } catch {
    parsed = null;
  }
  return { status: response.status, body: parsed, headers: response.headers };
}

export const errorMessage = (res, fallback) =>
  (res.body && res.body.error && typeof res.body.error.message === "string" && res.body.error.message) || fallback;

export function describeWait(seconds) {
  if (!Number.isFinite(seconds) || seconds <= 0) return "a moment";
  if (seconds < 90) return `${Math.ceil(seconds)} second${Math.ceil(seconds) === 1 ? "" : "s"}`;
  const minutes = Math.ceil(seconds / 60);
  return `${minutes} minute${minutes === 1 ? "" : "s"}`;
}

export const retryAfter = (res) => Number.parseInt(res.headers.get("Retry-After") || "", 10);

export const unreachable = "The server could not be reached. Check your connection and try again.";
