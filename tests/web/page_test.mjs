// The page ckad serves, in headless Chromium (puppeteer-core, Debian's chromium-headless-shell),
// against the real ckad fed by a real stream (ckactl send): the heatmap shows what GetSimilarity
// answers (read from the page's window.__ckaShown, not fetched again), a new batch shows up
// through the watch without a reload, the over-training chart has one point per step bucket
// with the JSON API's series values (window.__ckaSeries), the measure selector and the caption follow the
// session's config, the half matrix, both exports, a reload keeps the view but not the token,
// and a bad step range shows the server's message. Screenshots go to CKA_WEB_ARTIFACTS.
//
// Environment: CKAD_BINARY, CKACTL_BINARY, CKA_CHROMIUM, CKA_WEB_ARTIFACTS; CKA_WEB_SEED
// replays a run's activations (the seed is printed).
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import puppeteer from 'puppeteer-core';

const env = process.env;
for (const name of ['CKAD_BINARY', 'CKACTL_BINARY', 'CKA_CHROMIUM', 'CKA_WEB_ARTIFACTS']) {
  assert.ok(env[name], `${name} must be set (tests/web/CMakeLists.txt sets it)`);
}
// Only catches hangs: every wait below ends as soon as its event happens.
const kDeadlineMs = 60_000;
const kRows = 16; // examples per batch
const kWidths = { conv1: 8, fc: 4 };
const kAll = ['a/conv1', 'a/fc', 'b/conv1', 'b/fc'];
// ckad asks for tokens: the test streams as a writer, the page's user reads.
const kWriterToken = 'page-test-writer';
const kReaderToken = 'page-test-reader';
const run = promisify(execFile);

// ---- the ckad under test -----------------------------------------------------------------

async function startCkad() {
  const seed = Number(env.CKA_WEB_SEED ?? Math.floor(Math.random() * 2 ** 31));
  console.log(`page_test: CKA_WEB_SEED=${seed}`);
  const random = mulberry32(seed);
  const work = mkdtempSync(path.join(tmpdir(), 'cka-page-test-'));
  const tokens = path.join(work, 'tokens');
  writeFileSync(tokens, `${kWriterToken} writer\n${kReaderToken} reader\n`);
  const ckad = spawn(
    env.CKAD_BINARY,
    ['--listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', '--threads', '2',
      '--auth-tokens', tokens],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const log = watchLog(ckad);
  const grpc = await log.waitFor(/ckad listening on ([\d.]+:\d+)/);
  const httpAddress = await log.waitFor(/http listening on ([\d.]+:\d+)/);
  const ckactl = (...args) =>
    run(env.CKACTL_BINARY, ['--server', grpc, '--token', kWriterToken, ...args]);

  await ckactl('create', 'demo', '--measure', 'lin:linear:unbiased', '--measure',
    'rbf:rbf:biased:0.5', '--stream', 'a/conv1', '--stream', 'a/fc', '--stream', 'b/conv1',
    '--stream', 'b/fc', '--step-bucket', '100');
  let batches = 0;
  // One batch of both models: model b sees model a's input through a different random map.
  async function addBatch() {
    const x = matrix(kRows, 6, random);
    for (const source of ['a', 'b']) {
      const dir = path.join(work, source, String(batches));
      mkdirSync(dir, { recursive: true });
      const conv1 = relu(multiply(x, matrix(6, kWidths.conv1, random)));
      const fc = multiply(conv1, matrix(kWidths.conv1, kWidths.fc, random));
      writeNpy(path.join(dir, 'conv1.npy'), conv1);
      writeNpy(path.join(dir, 'fc.npy'), fc);
      await ckactl('send', '--session', 'demo', '--source', source, '--batch-id',
        String(batches), '--step', String(batches * 50), dir);
    }
    batches += 1;
  }
  for (let i = 0; i < 4; i++) await addBatch();

  return {
    url: `http://${httpAddress}/`,
    // GetSimilarity over gRPC, through ckactl, with the standard errors.
    async expected({ measure, rows, cols }) {
      const { stdout } = await ckactl('matrix', 'demo', '--measure', measure, '--rows',
        rows.join(','), '--cols', cols.join(','), '--format', 'json', '--se');
      const m = JSON.parse(stdout);
      return { ...m, values: m.values.flat(), batches: m.batches.flat(),
        standard_errors: m.standard_errors.flat() };
    },
    addBatch,
    // Session "deep": one source whose layers l1..l3 are noisy copies of one signal and l0
    // independent, over 3 batches: a block of 3 of its 4 layers by construction.
    async addDeepSession() {
      await ckactl('create', 'deep', '--measure', 'lin:linear:unbiased');
      for (let b = 0; b < 3; b++) {
        const dir = path.join(work, 'deep', String(b));
        mkdirSync(dir, { recursive: true });
        const signal = matrix(kRows, 6, random);
        writeNpy(path.join(dir, 'l0.npy'), matrix(kRows, 6, random));
        for (const layer of ['l1', 'l2', 'l3']) {
          const noise = matrix(kRows, 6, random);
          writeNpy(path.join(dir, `${layer}.npy`),
            { ...signal, data: signal.data.map((v, k) => v + 0.02 * noise.data[k]) });
        }
        await ckactl('send', '--session', 'deep', '--source', 'deep', '--batch-id', String(b),
          dir);
      }
    },
    // GetSimilarity's blocks at `threshold`, through ckactl.
    async blocks(session, threshold) {
      const { stdout } = await ckactl('matrix', session, '--blocks', String(threshold),
        '--format', 'json');
      return JSON.parse(stdout).blocks ?? [];
    },
    // The JSON API's series of `pairs` (pair i: the i-th row with the i-th col), as a reader.
    async series({ measure, pairs }) {
      const params = new URLSearchParams({ measure });
      for (const { row, col } of pairs) {
        params.append('row', row);
        params.append('col', col);
      }
      const answer = await fetch(`http://${httpAddress}/api/v1/sessions/demo/series?${params}`, {
        headers: { Authorization: `Bearer ${kReaderToken}` },
      });
      assert.equal(answer.status, 200, await answer.clone().text());
      return answer.json();
    },
    // GetSession's batches_applied, through ckactl.
    async batchesApplied() {
      const { stdout } = await ckactl('get', 'demo', '--format', 'json');
      return Number(JSON.parse(stdout).batches_applied);
    },
    async errorText({ stepMin, stepMax }) {
      const answer = await ckactl('matrix', 'demo', '--step-min', String(stepMin),
        '--step-max', String(stepMax)).then(
        () => assert.fail(`ckad accepted steps ${stepMin} to ${stepMax}`),
        (error) => error.stderr,
      );
      const parsed = answer.match(/^error: (.*)$/m);
      assert.ok(parsed, `ckactl's answer: ${answer}`);
      return parsed[1];
    },
    close() {
      ckad.kill('SIGTERM');
      rmSync(work, { recursive: true, force: true });
    },
  };
}

// Keeps ckad's log; waitFor(pattern) resolves with the first capture of `pattern` in it, seen
// before or after the call, and rejects if ckad exits first.
function watchLog(child) {
  let seen = '';
  let exited = null;
  const waiters = new Set();
  const check = () => {
    for (const waiter of waiters) waiter();
  };
  child.stdout.on('data', (chunk) => {
    seen += chunk;
    check();
  });
  child.stderr.on('data', (chunk) => {
    seen += chunk;
    check();
  });
  child.on('exit', (code) => {
    exited = code;
    check();
  });
  return {
    text: () => seen,
    waitFor: (pattern) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`no ${pattern} in ckad's log: ${seen}`));
        }, kDeadlineMs);
        const waiter = () => {
          const match = seen.match(pattern);
          if (!match && exited === null) return;
          waiters.delete(waiter);
          clearTimeout(timer);
          if (match) resolve(match[1]);
          else reject(new Error(`ckad exited (${exited}): ${seen}`));
        };
        waiters.add(waiter);
        waiter();
      }),
  };
}

// ---- activations ---------------------------------------------------------------------------

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
  };
}

// rows × cols, row-major: { rows, cols, data }.
function matrix(rows, cols, random) {
  return { rows, cols, data: Float64Array.from({ length: rows * cols }, random) };
}

function multiply(a, b) {
  const out = { rows: a.rows, cols: b.cols, data: new Float64Array(a.rows * b.cols) };
  for (let i = 0; i < a.rows; i++) {
    for (let k = 0; k < a.cols; k++) {
      for (let j = 0; j < b.cols; j++) {
        out.data[i * b.cols + j] += a.data[i * a.cols + k] * b.data[k * b.cols + j];
      }
    }
  }
  return out;
}

function relu(m) {
  return { ...m, data: m.data.map((v) => Math.max(0, v)) };
}

// NumPy's .npy format, version 1.0, little-endian float32, C order.
function writeNpy(file, m) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${m.rows}, ${m.cols}), }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const prefix = Buffer.alloc(10);
  prefix.write('\x93NUMPY', 0, 'latin1');
  prefix[6] = 1;
  prefix[7] = 0;
  prefix.writeUInt16LE(header.length, 8);
  const data = Buffer.from(Float32Array.from(m.data).buffer);
  writeFileSync(file, Buffer.concat([prefix, Buffer.from(header, 'latin1'), data]));
}

// ---- comparisons ---------------------------------------------------------------------------

// A matrix (the JSON mapping's "NaN" strings, or ckactl's nulls) as the page records it:
// numbers, null for no value.
function normalized(m) {
  const number = (v) => (v === null || Number.isNaN(Number(v)) ? null : Number(v));
  return {
    ...m,
    values: m.values.map(number),
    batches: m.batches.map(Number),
    standard_errors: m.standard_errors.map(number),
  };
}

function pick(m) {
  return { measure: m.measure, rows: m.rows, cols: m.cols, values: m.values, batches: m.batches,
    standard_errors: m.standard_errors };
}

const shownOf = (page) => page.evaluate(() => window.__ckaShown);

// What the over-training chart must hold for `series` (a SimilaritySeries of the JSON API):
// one line per pair, one point [bucket's first step, value] per bucket, '-' for no value.
function linesOf(series) {
  return series.pairs.map((pair, p) => ({
    name: `${pair.row} vs ${pair.col}`,
    data: series.buckets.map((b) => {
      const v = Number(b.values[p]);
      return [Number(b.step_first), Number.isNaN(v) ? '-' : v];
    }),
  }));
}

// Waits until the page shows `expected` (values, batches, standard errors, rows, cols, measure);
// fails with the last shown matrix at the deadline.
async function waitUntilShown(page, expected, what) {
  const want = JSON.stringify(pick(expected));
  try {
    await page.waitForFunction(
      (w) => {
        const s = window.__ckaShown;
        return s !== undefined && JSON.stringify({ measure: s.measure, rows: s.rows, cols: s.cols,
          values: s.values, batches: s.batches, standard_errors: s.standard_errors }) === w;
      },
      { timeout: kDeadlineMs, polling: 100 },
      want,
    );
  } catch (error) {
    assert.deepEqual(pick((await shownOf(page)) ?? {}), pick(expected), `${what}: ${error.message}`);
  }
}

// ---- the test ------------------------------------------------------------------------------

mkdirSync(env.CKA_WEB_ARTIFACTS, { recursive: true });
const target = await startCkad();
const browser = await puppeteer.launch({
  executablePath: env.CKA_CHROMIUM,
  // chromium-headless-shell is headless only; the full chromium runs its new headless mode.
  headless: path.basename(env.CKA_CHROMIUM).includes('headless-shell') ? 'shell' : true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const page = await browser.newPage();
await page.setViewport({ width: 1280, height: 1100 });
const pageErrors = [];
page.on('pageerror', (error) => pageErrors.push(error.message));
// Console errors other than failed requests (the test causes a 401 and a 400; ckad may lack a
// path): a policy violation, a failed script.
page.on('console', (message) => {
  if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
    pageErrors.push(message.text());
  }
});
const screenshot = (name) =>
  page.screenshot({ path: path.join(env.CKA_WEB_ARTIFACTS, name), fullPage: true });

try {
  // ckad serves the page with its Content-Security-Policy, which the page must run under (any
  // violation is a console error, failing the test at its end).
  const index = await fetch(target.url);
  assert.equal(index.status, 200);
  assert.match(index.headers.get('content-type'), /^text\/html/);
  assert.match(index.headers.get('content-security-policy') ?? '', /script-src 'self'/);

  // 0. ckad answers 401: the page asks for a token, keeps it in memory only, and goes on.
  await page.goto(target.url);
  await page.waitForSelector('#token-dialog[open]', { timeout: kDeadlineMs });
  await screenshot('token.png');
  await page.type('#token', kReaderToken);
  await page.click('#token-form button[type=submit]');
  await page.waitForFunction(() => window.__ckaShown?.session_id === 'demo', {
    timeout: kDeadlineMs,
  });

  assert.deepEqual(
    await page.evaluate(() => [localStorage.length, sessionStorage.length, document.cookie,
      location.href.includes('page-test')]),
    [0, 0, '', false],
    'the token is stored nowhere',
  );

  // 1. The heatmap shows GetSimilarity's answer for model a × model b, the first measure.
  const shown = await shownOf(page);
  assert.deepEqual(shown.rows, ['a/conv1', 'a/fc'], 'rows: the streams of source a');
  assert.deepEqual(shown.cols, ['b/conv1', 'b/fc'], 'cols: the streams of source b');
  assert.equal(shown.measure, 'lin');
  const expected = await target.expected({ measure: 'lin', rows: shown.rows, cols: shown.cols });
  assert.deepEqual(pick(shown), pick(normalized(expected)), 'the heatmap shows GetSimilarity');
  // Every entry has 2 or more batches: each has its standard error, and hovering a cell says
  // "value ± SE (n batches)".
  assert.ok(shown.standard_errors.every((se) => se > 0), `SEs: ${shown.standard_errors}`);
  const centre = await page.evaluate(() => window.__ckaCellCentre(0, 1));
  const box = await (await page.$('#heatmap')).boundingBox();
  await page.mouse.move(box.x + centre[0], box.y + centre[1]);
  const hover = `${shown.values[1].toFixed(4)} ± ${shown.standard_errors[1].toFixed(4)} ` +
    `(${shown.batches[1]} batches)`;
  await page.waitForFunction(
    (text) => document.getElementById('heatmap').innerText.includes(text),
    { timeout: kDeadlineMs, polling: 100 },
    hover,
  ).catch(async (error) => {
    const text = await page.$eval('#heatmap', (e) => e.innerText);
    assert.fail(`hovering a cell shows '${text}', not '${hover}': ${error.message}`);
  });
  await screenshot('heatmap-hover.png');
  await page.mouse.move(0, 0);
  const caption = await page.$eval('#caption', (e) => e.textContent);
  const n = Math.min(...shown.batches);
  assert.match(caption, /LINEAR kernel, UNBIASED estimator/);
  assert.match(caption, new RegExp(`n = ${n}\\b`), `caption: ${caption}`);
  await screenshot('heatmap.png');

  // 2. A new batch shows up without a reload.
  await page.evaluate(() => {
    window.__sameDocument = true;
  });
  await target.addBatch();
  const after = normalized(await target.expected({ measure: 'lin', rows: shown.rows, cols: shown.cols }));
  assert.ok(Math.min(...after.batches) > n, 'the new batch adds a common batch to every pair');
  await waitUntilShown(page, after, 'after a new batch');
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page reloaded');
  // The session's counters follow: batches applied as GetSession says.
  const applied = await target.batchesApplied();
  await page.waitForFunction(
    (n) => document.querySelector('#sessions tr[data-session="demo"]')?.dataset.batchesApplied === n,
    { timeout: kDeadlineMs, polling: 100 },
    String(applied),
  );
  // It came through the watch (server-sent events), not the page's polling fallback.
  assert.equal(await page.$eval('#connection', (e) => e.textContent), 'live');
  await screenshot('after-new-batch.png');

  // 2b. Over training: one line per pair (each layer of a against the same-named layer of b),
  // one point per step bucket, the values the JSON API's series answers. Five batches at steps
  // 0, 50, ..., 200 in buckets of 100: three buckets.
  const pairs = [
    { row: 'a/conv1', col: 'b/conv1' },
    { row: 'a/fc', col: 'b/fc' },
  ];
  const series = await target.series({ measure: 'lin', pairs });
  assert.equal(series.buckets.length, 3, 'three step buckets with data');
  const wantLines = linesOf(series);
  try {
    await page.waitForFunction(
      (w) => JSON.stringify(window.__ckaSeries?.lines) === w,
      { timeout: kDeadlineMs, polling: 100 },
      JSON.stringify(wantLines),
    );
  } catch (error) {
    const got = await page.evaluate(() => window.__ckaSeries);
    assert.deepEqual(got?.lines, wantLines, `the over-training chart: ${error.message}`);
  }
  const shownSeries = await page.evaluate(() => window.__ckaSeries);
  assert.deepEqual(shownSeries.pairs, pairs, 'the default pairs: same-named layers of a and b');
  for (const line of shownSeries.lines) {
    assert.equal(line.data.length, series.buckets.length, `${line.name}: one point per bucket`);
  }
  assert.deepEqual(shownSeries.buckets.map((b) => b.step_first), [0, 100, 200]);
  await page.$eval('#training', (e) => e.scrollIntoView());
  await screenshot('over-training.png');

  // 3. The measure selector: the second measure of the session's config.
  await page.select('#measure', 'rbf');
  await waitUntilShown(
    page,
    normalized(await target.expected({ measure: 'rbf', rows: shown.rows, cols: shown.cols })),
    'measure rbf',
  );
  assert.match(await page.$eval('#caption', (e) => e.textContent), /RBF kernel \(threshold 0\.5\), BIASED estimator/);
  await screenshot('measure-rbf.png');

  // 4. Every stream on both axes, as a half matrix: the cells above the diagonal are hidden,
  // the others are GetSimilarity's.
  await page.select('#row-source', 'all');
  await page.select('#col-source', 'all');
  await page.click('#half');
  const halfOf = (m) => {
    const above = (k) => k % m.cols.length > Math.floor(k / m.cols.length);
    return {
      ...m,
      values: m.values.map((v, k) => (above(k) ? null : v)),
      batches: m.batches.map((b, k) => (above(k) ? null : b)),
      standard_errors: m.standard_errors.map((e, k) => (above(k) ? null : e)),
    };
  };
  const all = normalized(await target.expected({ measure: 'rbf', rows: kAll, cols: kAll }));
  await waitUntilShown(page, halfOf(all), 'all streams, half matrix');
  await screenshot('half-matrix.png');

  // The URL keeps the view, not the token: a reload asks for the token again and then shows
  // the same half matrix.
  assert.doesNotMatch(page.url(), /page-test/);
  await page.reload();
  await page.waitForSelector('#token-dialog[open]', { timeout: kDeadlineMs });
  await page.type('#token', kReaderToken);
  await page.click('#token-form button[type=submit]');
  await waitUntilShown(page, halfOf(all), 'the same view after a reload');
  assert.equal((await shownOf(page)).half, true);

  // 5. The exports: the CSV holds the values and standard errors shown (empty where hidden),
  // the PNG the figure.
  // The page's policy lets it fetch nothing but its own origin, so the test keeps the CSV's
  // Blob and decodes the PNG's data URL instead of fetching them.
  await page.evaluate(() => {
    window.__downloads = [];
    window.__blobs = new Map();
    const createObjectURL = URL.createObjectURL;
    URL.createObjectURL = (blob) => {
      const url = createObjectURL(blob);
      window.__blobs.set(url, blob);
      return url;
    };
    HTMLAnchorElement.prototype.click = function click() {
      window.__downloads.push({ name: this.download, href: this.href });
    };
  });
  await page.click('#export-csv');
  await page.click('#export-png');
  const [csvFile, pngFile] = await page.evaluate(() =>
    Promise.all(
      window.__downloads.map(async ({ name, href }) => ({
        name,
        body: href.startsWith('data:image/png;base64,')
          ? atob(href.slice('data:image/png;base64,'.length))
          : await window.__blobs.get(href).text(),
      })),
    ),
  );
  assert.deepEqual([csvFile.name, pngFile.name], ['demo-rbf.csv', 'demo-rbf.png']);
  const halfShown = await shownOf(page);
  const csv = csvFile.body.trimEnd().split('\n').map((line) => line.split(','));
  assert.deepEqual(csv[0], ['', ...halfShown.cols.flatMap((c) => [c, `${c} SE`])]);
  assert.deepEqual(csv.slice(1).map((cells) => cells[0]), halfShown.rows);
  const csvColumn = (offset) =>
    csv.slice(1).flatMap((cells) => cells.slice(1).filter((_, c) => c % 2 === offset)
      .map((c) => (c === '' ? null : Number(c))));
  assert.deepEqual(csvColumn(0), halfShown.values, 'the CSV holds the values shown');
  assert.deepEqual(csvColumn(1), halfShown.standard_errors, 'and their standard errors');
  const png = Buffer.from(pngFile.body, 'latin1');
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  writeFileSync(path.join(env.CKA_WEB_ARTIFACTS, 'export.png'), png);

  // 6. A step range that does not start a bucket: the server's message, in the page.
  const bad = { stepMin: 1, stepMax: 99 };
  const message = await target.errorText(bad);
  await page.type('#step-min', String(bad.stepMin));
  await page.type('#step-max', String(bad.stepMax));
  await page.click('#query button[type=submit]');
  await page.waitForFunction(
    (m) => document.getElementById('query-error').textContent === m,
    { timeout: kDeadlineMs, polling: 100 },
    message,
  ).catch(async (error) => {
    const text = await page.$eval('#query-error', (e) => e.textContent);
    assert.equal(text, message, `the server's message: ${error.message}`);
  });
  assert.equal(await page.$eval('#query-error', (e) => e.hidden), false);
  await screenshot('bad-step-range.png');

  // 7. The Blocks panel: session "deep" has a block of 3 of its 4 layers by construction; at
  // the default threshold (0.95) the panel lists the blocks GetSimilarity answers, with the
  // warning, as the page recorded them (window.__ckaBlocks) and in its text.
  await target.addDeepSession();
  const wantBlocks = await target.blocks('deep', 0.95);
  assert.deepEqual(wantBlocks.map((b) => [b.first_stream, b.last_stream, b.warning]),
    [['deep/l1', 'deep/l3', true]], 'the constructed block, through ckactl');
  assert.equal(await page.$eval('#block-threshold', (e) => e.value), '0.95');
  const deepButton = await page.waitForSelector('#sessions tr[data-session="deep"] button',
    { timeout: kDeadlineMs });
  await deepButton.click();
  await page.waitForFunction(
    () => window.__ckaShown?.session_id === 'deep' && window.__ckaBlocks?.blocks.length > 0,
    { timeout: kDeadlineMs, polling: 100 },
  );
  assert.deepEqual((await page.evaluate(() => window.__ckaBlocks)).blocks, wantBlocks,
    "the Blocks panel lists GetSimilarity's blocks");
  const blocksText = await page.$eval('#blocks', (e) => e.textContent);
  assert.match(blocksText, /deep: deep\/l1 … deep\/l3, 3 of 4 layers/);
  assert.match(blocksText, /Warning: more than half/);
  // Every stream on both axes: the block's cells are outlined, rows and columns 1 to 3.
  assert.deepEqual((await shownOf(page)).outlines, [[1, 1, 3, 3]], 'the outline on the heatmap');
  // A threshold above every value: no blocks.
  await page.$eval('#block-threshold', (e) => { e.value = '1'; });
  await page.click('#query button[type=submit]');
  await page.waitForFunction(
    () => window.__ckaBlocks?.threshold === 1 && window.__ckaBlocks.blocks.length === 0,
    { timeout: kDeadlineMs, polling: 100 },
  );
  assert.match(await page.$eval('#blocks', (e) => e.textContent), /^No blocks/);
  await page.$eval('#block-threshold', (e) => { e.value = '0.95'; });
  await page.click('#query button[type=submit]');
  await page.waitForFunction(() => window.__ckaBlocks?.blocks.length === 1,
    { timeout: kDeadlineMs, polling: 100 });
  await page.$eval('#blocks', (e) => e.scrollIntoView());
  await screenshot('blocks.png');

  assert.deepEqual(pageErrors, [], 'errors thrown in the page');
  console.log('page_test: passed');
} catch (error) {
  await screenshot('failure.png').catch(() => {});
  throw error;
} finally {
  await browser.close();
  target.close();
}
