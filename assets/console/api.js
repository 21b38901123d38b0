// The server's API as the console uses it: every request carries the API_TOKEN the person
// signed in with, kept in this tab's session storage only (gone when the tab closes).

const TOKEN_KEY = 'gemini-phone.api-token';

/** The token this tab signed in with, if any. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Keeps `value` as this tab's token. */
export function keepToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

/** Forgets the token. */
export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** A refused request, with the server's own message. */
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** Calls the API: JSON in, JSON out; a refusal throws an ApiError carrying the server's message. */
export async function api(path, { method = 'GET', body, bearer = token() } = {}) {
  const headers = { Authorization: `Bearer ${bearer ?? ''}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: text };
  }
  if (!response.ok) {
    const message = data?.error ?? `the server answered HTTP ${response.status}`;
    // Only the stored token being refused signs the tab out (not a sign-in attempt).
    if (response.status === 401 && bearer && bearer === token()) window.dispatchEvent(new CustomEvent('console:signed-out'));
    throw new ApiError(response.status, message, data);
  }
  return data;
}

/** The bytes at `path` (the recording), fetched with the token. */
export async function download(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token() ?? ''}` } });
  if (!response.ok) throw new ApiError(response.status, `the recording could not be fetched (HTTP ${response.status})`);
  return response.blob();
}

/** Checks `candidate` against the server; resolves when it is the API_TOKEN. */
export async function checkToken(candidate) {
  await api('/calls?limit=1', { bearer: candidate });
}
