// ckad's JSON API (/api/v1): sessions, similarity matrices and their server-sent events.
// The bearer token the user entered lives in this module's memory only: never stored, never in
// a URL. EventSource cannot send an Authorization header, so the watch is read with fetch().
import { SseParser } from './sse.js';

let token = null;

/** Sets the bearer token sent with every request (null: none). */
export function setToken(value) {
  token = value || null;
}

/** An answer of ckad that is not a success: the HTTP status, the status code name and the
 *  server's message (status 0: the stream's "error" event). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: a proxy's page or a path this ckad does not serve.
  }
  if (body && typeof body.code === 'string') {
    return new ApiError(response.status, body.code, body.message ?? '');
  }
  return new ApiError(response.status, null, `HTTP ${response.status} ${response.statusText}`);
}

/** GETs a JSON answer; throws ApiError on any non-2xx answer. */
export async function getJson(path, signal) {
  const response = await fetch(path, { headers: headers(), signal });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/** The query string of a similarity query or watch. */
export function similarityParams({
  measure, rows, cols, stepMin, stepMax, minIntervalMs, blockThreshold,
}) {
  const params = new URLSearchParams();
  if (measure) params.set('measure', measure);
  for (const row of rows ?? []) params.append('rows', row);
  for (const col of cols ?? []) params.append('cols', col);
  if (stepMin !== '' && stepMin != null) params.set('step_min', stepMin);
  if (stepMax !== '' && stepMax != null) params.set('step_max', stepMax);
  if (minIntervalMs != null) params.set('min_interval_ms', String(minIntervalMs));
  if (blockThreshold) params.set('block_threshold', blockThreshold);
  return params;
}

/** The query string of a series query: pair i is the i-th row with the i-th col. */
export function seriesParams({ measure, pairs }) {
  const params = new URLSearchParams();
  if (measure) params.set('measure', measure);
  for (const { row, col } of pairs) {
    params.append('row', row);
    params.append('col', col);
  }
  return params;
}

export function sessionPath(sessionId) {
  return `/api/v1/sessions/${encodeURIComponent(sessionId)}`;
}

/** Reads the text/event-stream at `path`, calling onMatrix(matrix) for every "matrix" event.
 *  Resolves when the server ends the stream; rejects with ApiError on an error answer or an
 *  "error" event, and with an AbortError when `signal` aborts. */
export async function watch(path, { signal, onMatrix }) {
  const response = await fetch(path, {
    headers: headers({ Accept: 'text/event-stream' }),
    signal,
  });
  if (!response.ok) throw await errorOf(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    for (const event of parser.push(value)) {
      if (event.type === 'error') {
        const body = JSON.parse(event.data);
        throw new ApiError(0, body.code ?? 'UNKNOWN', body.message ?? '');
      }
      if (event.type === 'matrix') onMatrix(JSON.parse(event.data));
    }
  }
}
