// A stand-in for ckad's HTTP side, for page_test.mjs while ckad has no --http-listen: it serves
// the built page (CKA_WEB_DIST) and canned answers in the JSON API's shape (protobuf's JSON
// mapping with proto field names: int64 as strings, NaN as "NaN") for one session, "demo",
// whose matrix changes with every batch added. With `upstream` (host:port) it forwards the API
// to that ckad instead, for a ckad whose HTTP server does not serve the page yet.
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';

const kStepBucket = 100;
const kDemoStreams = ['a/conv1', 'a/fc', 'b/conv1', 'b/fc'];
const kMeasures = [
  { name: 'lin', kernel: 'LINEAR', rbf_threshold: 0, estimator: 'UNBIASED' },
  { name: 'rbf', kernel: 'RBF', rbf_threshold: 0.5, estimator: 'BIASED' },
];
const kTypes = {
  '.html': 'text/html',
  '.js': 'text/javascript',
  '.css': 'text/css',
  '.svg': 'image/svg+xml',
};
// server/web/web_assets.h's kWebAssetSecurityPolicy, which ckad sends with the page (the test
// cka_web_assets_test checks that the two are the same).
export const kContentSecurityPolicy =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/** Starts the mock on 127.0.0.1:0; with `token`, the API answers 401 without
 *  "Authorization: Bearer <token>"; `streams` are the session's. Returns
 *  { port, addBatch(), similarity(query), close() }. */
export async function startMockCkad({
  dist,
  token = null,
  batches = 4,
  upstream = null,
  streams: kStreams = kDemoStreams,
}) {
  let applied = batches;
  const watchers = new Set();

  const session = () => ({
    session_id: 'demo',
    config: { measures: kMeasures, streams: kStreams, step_bucket: String(kStepBucket) },
    streams: kStreams,
    batches_applied: String(applied * 2),
    batches_pending: '0',
    batches_evicted: '0',
    state_bytes: String(4096 + 512 * applied),
    pending_bytes: '0',
    pairs_missed: '0',
    held_bytes: String(8192 + 512 * applied),
  });

  // Throws { status, code, message } as ckad would answer a bad query.
  function similarity({ measure = '', rows = [], cols = [], stepMin = null, stepMax = null }) {
    const m = measure === '' ? kMeasures[0] : kMeasures.find((x) => x.name === measure);
    if (!m) throw bad(`measure '${measure}': session 'demo' has no such measure`);
    for (const s of [...rows, ...cols]) {
      if (!kStreams.includes(s)) throw bad(`stream '${s}': not in session 'demo'`);
    }
    if (stepMin !== null && stepMin % kStepBucket !== 0) {
      throw bad(`step_min ${stepMin} does not start a step bucket (step_bucket ${kStepBucket})`);
    }
    if (stepMax !== null && (stepMax + 1) % kStepBucket !== 0) {
      throw bad(`step_max ${stepMax} does not end a step bucket (step_bucket ${kStepBucket})`);
    }
    const r = rows.length ? rows : kStreams;
    const c = cols.length ? cols : kStreams;
    const values = [];
    const counts = [];
    for (const row of r) {
      for (const col of c) {
        const i = kStreams.indexOf(row);
        const j = kStreams.indexOf(col);
        // One pair of the second measure has no value (as a pair without common batches).
        const none = m === kMeasures[1] && Math.min(i, j) === 0 && Math.max(i, j) === 3;
        values.push(none ? NaN : i === j ? 1 : 0.3 + 0.6 / (1 + Math.abs(i - j)) - 0.1 / applied);
        counts.push(String(none ? 0 : applied));
      }
    }
    return { session_id: 'demo', measure: m.name, rows: r, cols: c, values, batches: counts };
  }

  const server = http.createServer(async (request, response) => {
    const url = new URL(request.url, 'http://mock');
    const api = url.pathname.match(/^\/api\/v1\/sessions(?:\/([^/]+)(?:\/(similarity|watch))?)?$/);
    if (upstream !== null && url.pathname.startsWith('/api/')) return forward(request, response, upstream);
    try {
      if (api && token !== null && request.headers.authorization !== `Bearer ${token}`) {
        return json(response, 401, { code: 'UNAUTHENTICATED', message: 'missing or unknown bearer token' });
      }
      if (api && !api[1]) return json(response, 200, { sessions: [session()] });
      if (api && api[1] !== 'demo') {
        return json(response, 404, { code: 'NOT_FOUND', message: `session '${api[1]}'` });
      }
      if (api && !api[2]) return json(response, 200, session());
      if (api) {
        const p = url.searchParams;
        const query = {
          measure: p.get('measure') ?? '',
          rows: p.getAll('rows'),
          cols: p.getAll('cols'),
          stepMin: p.has('step_min') ? Number(p.get('step_min')) : null,
          stepMax: p.has('step_max') ? Number(p.get('step_max')) : null,
        };
        const matrix = similarity(query);
        if (api[2] === 'similarity') return json(response, 200, matrix);
        response.writeHead(200, { 'Content-Type': 'text/event-stream' });
        const send = () => response.write(`event: matrix\ndata: ${toJson(similarity(query))}\n\n`);
        send();
        watchers.add(send);
        request.on('close', () => watchers.delete(send));
        return undefined;
      }
      const name = url.pathname === '/' ? 'index.html' : url.pathname.slice(1);
      if (!/^[\w.-]+$/.test(name)) return json(response, 404, { code: 'NOT_FOUND', message: name });
      const body = await readFile(path.join(dist, name));
      response.writeHead(200, {
        'Content-Type': kTypes[path.extname(name)] ?? 'application/octet-stream',
        'Content-Security-Policy': kContentSecurityPolicy,
      });
      return response.end(body);
    } catch (error) {
      if (error.status) return json(response, error.status, { code: error.code, message: error.message });
      return json(response, 404, { code: 'NOT_FOUND', message: String(error.message) });
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    addBatch() {
      applied += 1;
      for (const send of watchers) send();
    },
    similarity,
    close() {
      server.closeAllConnections();
      server.close();
    },
  };
}

function forward(request, response, upstream) {
  const [host, port] = upstream.split(':');
  const { method, headers } = request;
  const call = http.request({ host, port, method, headers, path: request.url }, (answer) => {
    response.writeHead(answer.statusCode, answer.headers);
    answer.pipe(response);
  });
  call.on('error', (error) => json(response, 502, { code: 'UNAVAILABLE', message: error.message }));
  response.on('close', () => call.destroy());
  request.pipe(call);
}

function bad(message) {
  return Object.assign(new Error(message), { status: 400, code: 'INVALID_ARGUMENT' });
}

// Protobuf's JSON mapping writes NaN as the string "NaN".
function toJson(body) {
  return JSON.stringify(body, (_, v) => (typeof v === 'number' && Number.isNaN(v) ? 'NaN' : v));
}

function json(response, status, body) {
  response.writeHead(status, { 'Content-Type': 'application/json' });
  response.end(toJson(body));
}
