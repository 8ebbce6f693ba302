// ckad's page: the sessions with their counters, the CKA heatmap of the chosen session,
// refreshed live while batches arrive, and the chosen pairs' CKA over training.
import {
  ApiError,
  getJson,
  seriesParams,
  sessionPath,
  setToken,
  similarityParams,
  watch,
} from './api.js';
import { blocksShown, renderBlocks } from './blocks.js';
import { Heatmap, shownCsv, toNumber } from './heatmap.js';
import { defaultPairs, shortLabels, sourcesOf, streamsOf } from './names.js';
import { TrainingChart } from './training.js';

const kSessionsPollMs = 3000;
// A new matrix means new batches: the counters follow this soon after it.
const kSessionsAfterMatrixMs = 200;
const kMatrixPollMs = 2000;
const kWatchIntervalMs = 500;
// The source selectors' values: every stream, or one source's ("source:a").
const kAllSources = 'all';
const sourceValue = (source) => `source:${source}`;

const $ = (id) => document.getElementById(id);
const ui = {
  connection: $('connection'),
  sessions: document.querySelector('#sessions tbody'),
  noSessions: $('no-sessions'),
  sessionsError: $('sessions-error'),
  matrixSession: $('matrix-session'),
  form: $('query'),
  measure: $('measure'),
  rowSource: $('row-source'),
  colSource: $('col-source'),
  stepMin: $('step-min'),
  stepMax: $('step-max'),
  half: $('half'),
  live: $('live'),
  queryError: $('query-error'),
  caption: $('caption'),
  stepHint: $('step-hint'),
  figureEmpty: $('figure-empty'),
  heatmap: $('heatmap'),
  updated: $('updated'),
  exportCsv: $('export-csv'),
  exportPng: $('export-png'),
  training: $('training'),
  blockThreshold: $('block-threshold'),
  blocks: $('blocks'),
  trainingError: $('training-error'),
  tokenDialog: $('token-dialog'),
  tokenForm: $('token-form'),
  token: $('token'),
};

const heatmap = new Heatmap(ui.heatmap);
// For the browser test, which hovers a cell (tests/web/page_test.mjs).
window.__ckaCellCentre = (i, j) => heatmap.cellCentre(i, j);
const training = new TrainingChart(ui.training);
const state = {
  sessions: [],
  selected: null, // session id
  configuredFor: null, // session id whose measures/sources fill the form
  query: null, // AbortController of the running matrix query
  series: null, // AbortController of the running series query
  updates: 0, // matrices shown since the page loaded
  view: readView(), // the view the URL asked for, until its session is shown
};

// ---- sessions ----------------------------------------------------------------------------

let sessionsTimer = null;
let sessionsBusy = false;

function scheduleSessions(ms) {
  clearTimeout(sessionsTimer);
  sessionsTimer = setTimeout(refreshSessions, ms);
}

async function refreshSessions() {
  if (sessionsBusy) return; // its end schedules the next
  sessionsBusy = true;
  try {
    // Behind the router, `message` says which replicas did not answer (their
    // sessions are missing from the list).
    const { sessions = [], message } = await getJson('/api/v1/sessions');
    state.sessions = sessions;
    showError(ui.sessionsError, message ? { message } : null);
    if (state.selected !== null && currentSession() === null) {
      // Deleted: show the first session left, or nothing.
      state.selected = null;
      state.query?.abort();
      clearMatrix('No matrix yet: pick a session above.');
      configureForm(null);
    }
    renderSessions();
    if (state.selected === null && sessions.length > 0) {
      const asked = sessions.find((s) => s.session_id === state.view?.get('session'));
      selectSession((asked ?? sessions[0]).session_id);
    }
    else if (state.selected !== null) configureForm(currentSession());
  } catch (error) {
    if (!(await handleAuth(error))) showError(ui.sessionsError, error);
  } finally {
    sessionsBusy = false;
    scheduleSessions(kSessionsPollMs);
  }
}

function currentSession() {
  return state.sessions.find((s) => s.session_id === state.selected) ?? null;
}

function renderSessions() {
  ui.noSessions.hidden = state.sessions.length > 0;
  const rows = state.sessions.map((s) => {
    const tr = document.createElement('tr');
    if (s.session_id === state.selected) tr.setAttribute('aria-current', 'true');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'link';
    button.textContent = s.session_id;
    button.addEventListener('click', () => selectSession(s.session_id));
    const first = document.createElement('th');
    first.scope = 'row';
    first.append(button);
    tr.append(first);
    for (const value of [
      count(s.streams?.length ?? 0),
      count(s.batches_applied),
      count(s.batches_pending),
      count(s.batches_evicted),
      count(s.pairs_missed),
      bytes(s.state_bytes),
      bytes(s.held_bytes),
    ]) {
      const td = document.createElement('td');
      td.className = 'num';
      td.textContent = value;
      tr.append(td);
    }
    tr.dataset.session = s.session_id;
    tr.dataset.batchesApplied = String(toNumber(s.batches_applied ?? 0));
    return tr;
  });
  ui.sessions.replaceChildren(...rows);
}

function selectSession(sessionId) {
  state.selected = sessionId;
  state.configuredFor = null;
  ui.stepMin.value = '';
  ui.stepMax.value = '';
  renderSessions();
  configureForm(currentSession());
  if (state.view?.get('session') === sessionId) applyView(state.view);
  state.view = null;
  startQuery();
}

// ---- the form ----------------------------------------------------------------------------

// The session's measures, as its config says (an empty list is one "linear" measure).
function measuresOf(session) {
  const measures = session?.config?.measures ?? [];
  return measures.length > 0 ? measures : [{ name: 'linear' }];
}

// Fills the measure and source selectors for `session`; keeps the user's choices when the
// session only gained streams (and then queries again: the rows and columns changed).
function configureForm(session) {
  ui.matrixSession.textContent = session ? `· ${session.session_id}` : '';
  if (!session) return;
  const sources = sourcesOf(session.streams ?? []);
  const key = [session.session_id, ...(session.streams ?? [])].join('\u0000');
  if (state.configuredFor === key) return;
  const firstTime = state.configuredFor === null;
  state.configuredFor = key;
  fillSelect(ui.measure, measuresOf(session).map((m) => [m.name, m.name]));
  ui.stepHint.textContent = stepHint(toNumber(session.config?.step_bucket ?? 0));
  const sourceOptions = [
    [kAllSources, 'all sources'],
    ...sources.map((s) => [sourceValue(s), s || '(none)']),
  ];
  const rowsBefore = ui.rowSource.value;
  const colsBefore = ui.colSource.value;
  fillSelect(ui.rowSource, sourceOptions);
  fillSelect(ui.colSource, sourceOptions);
  const known = (value) => value === kAllSources || sources.map(sourceValue).includes(value);
  if (firstTime || !known(rowsBefore) || !known(colsBefore)) {
    // Model A × model B when there are two sources or more, else every stream.
    ui.rowSource.value = sources.length >= 2 ? sourceValue(sources[0]) : kAllSources;
    ui.colSource.value = sources.length >= 2 ? sourceValue(sources[1]) : kAllSources;
  } else {
    ui.rowSource.value = rowsBefore;
    ui.colSource.value = colsBefore;
  }
  updateHalfToggle();
  if (!firstTime) startQuery();
}

function fillSelect(select, options) {
  const before = select.value;
  select.replaceChildren(
    ...options.map(([value, label]) => {
      const option = document.createElement('option');
      option.value = value;
      option.textContent = label;
      return option;
    }),
  );
  if (options.some(([value]) => value === before)) select.value = before;
}

// What the step range takes: whole step buckets.
function stepHint(bucket) {
  if (!(bucket > 0)) return 'One step bucket for all time: leave the step range empty.';
  return `Step buckets of ${bucket} steps: step min starts one (0, ${bucket}, ${2 * bucket}, …), ` +
    `step max ends one (${bucket - 1}, ${2 * bucket - 1}, …).`;
}

// The half matrix is for symmetric views: the same streams on both axes.
function updateHalfToggle() {
  const symmetric = ui.rowSource.value === ui.colSource.value;
  ui.half.disabled = !symmetric;
  if (!symmetric) ui.half.checked = false;
}

function currentQuery() {
  const session = currentSession();
  const streams = session?.streams ?? [];
  const pick = (value) => (value === kAllSources ? null : value.slice(sourceValue('').length));
  const rowStreams = streamsOf(streams, pick(ui.rowSource.value));
  const colStreams = streamsOf(streams, pick(ui.colSource.value));
  return {
    sessionId: state.selected,
    measure: ui.measure.value,
    // All sources: no list, so that the URL stays short (empty = every stream).
    rows: pick(ui.rowSource.value) === null ? [] : rowStreams,
    cols: pick(ui.colSource.value) === null ? [] : colStreams,
    rowStreams,
    colStreams,
    stepMin: ui.stepMin.value.trim(),
    stepMax: ui.stepMax.value.trim(),
    blockThreshold: ui.blockThreshold.value.trim(),
    half: ui.half.checked,
    live: ui.live.checked,
  };
}

// ---- the matrix --------------------------------------------------------------------------

function startQuery() {
  state.query?.abort();
  if (state.selected === null) return;
  const controller = new AbortController();
  state.query = controller;
  const query = currentQuery();
  writeView();
  runQuery(query, controller.signal).catch(async (error) => {
    if (controller.signal.aborted) return;
    if (await handleAuth(error)) return;
    showError(ui.queryError, error);
    clearMatrix('No matrix: the query failed (the message above says why).');
    setConnection(query.live ? 'stopped: the query failed' : 'stopped');
  });
}

async function runQuery(query, signal) {
  const base = sessionPath(query.sessionId);
  const params = similarityParams(query);
  // One plain query first: its answer is drawn at once, and a bad input is an HTTP error.
  showMatrix(await getJson(`${base}/similarity?${params}`, signal), query);
  showError(ui.queryError, null);
  if (!query.live) {
    setConnection('not live (tick "live" to follow the batches)');
    return;
  }
  const watchParams = similarityParams({ ...query, minIntervalMs: kWatchIntervalMs });
  try {
    setConnection('live');
    await watch(`${base}/watch?${watchParams}`, {
      signal,
      onMatrix: (matrix) => showMatrix(matrix, query),
    });
  } catch (error) {
    if (signal.aborted || (error instanceof ApiError && error.status === 401)) throw error;
    // The same query was just answered, so this is the watch's own trouble (a proxy that
    // buffers events, a ckad without the watch, a dropped stream): poll. A query that has gone
    // bad since (a deleted session) fails the next poll, which shows the server's message.
  }
  setConnection(`live (polling every ${kMatrixPollMs / 1000} s)`);
  while (!signal.aborted) {
    await delay(kMatrixPollMs, signal);
    showMatrix(await getJson(`${base}/similarity?${params}`, signal), query);
  }
}

// No figure after a failed query: the last one would pass for its answer.
function clearMatrix(why) {
  heatmap.clear();
  ui.figureEmpty.textContent = why;
  ui.figureEmpty.hidden = false;
  ui.updated.textContent = '';
  window.__ckaShown = undefined;
  window.__ckaBlocks = undefined;
  ui.blocks.replaceChildren();
  state.series?.abort();
  training.clear();
  window.__ckaSeries = undefined;
  ui.caption.textContent = '';
  ui.exportCsv.disabled = true;
  ui.exportPng.disabled = true;
}

function showMatrix(matrix, query) {
  const session = currentSession();
  const measure = measuresOf(session).find((m) => m.name === matrix.measure) ?? {};
  const shown = heatmap.show(matrix, {
    rowLabels: shortLabels(matrix.rows),
    colLabels: shortLabels(matrix.cols),
    rowName: axisName(matrix.rows),
    colName: axisName(matrix.cols),
    half: query.half,
    title: `${matrix.session_id} · ${matrix.measure}`,
    subtitle: citation(measure, query, matrix),
    blocks: query.blockThreshold === '' ? [] : matrix.blocks,
  });
  state.updates += 1;
  shown.step_min = query.stepMin === '' ? null : Number(query.stepMin);
  shown.step_max = query.stepMax === '' ? null : Number(query.stepMax);
  shown.updates = state.updates;
  window.__ckaShown = shown;
  ui.figureEmpty.hidden = true;
  ui.caption.textContent = citation(measure, query, matrix);
  ui.heatmap.setAttribute(
    'aria-label',
    `CKA heatmap of session ${matrix.session_id}, measure ${matrix.measure}: ` +
      `${matrix.rows.length} rows × ${matrix.cols.length} columns`,
  );
  ui.updated.textContent = `updated ${new Date().toLocaleTimeString('en-GB')}`;
  $('figure').dataset.updates = String(state.updates);
  ui.exportCsv.disabled = false;
  ui.exportPng.disabled = false;
  scheduleSessions(kSessionsAfterMatrixMs);
  refreshTraining(query);
  // The blocks come with the matrix: each source's own layers, whatever the axes show.
  const blocks =
    query.blockThreshold === '' ? null : blocksShown(matrix.blocks, Number(query.blockThreshold));
  window.__ckaBlocks = blocks ?? undefined;
  renderBlocks(ui.blocks, blocks);
}

// ---- over training -----------------------------------------------------------------------

// Queries the series of the query's default pairs and draws it; each new matrix (new batches)
// asks again, and a newer request replaces one still running.
function refreshTraining(query) {
  state.series?.abort();
  const pairs = defaultPairs(query.rowStreams, query.colStreams);
  if (pairs.length === 0) {
    training.clear();
    window.__ckaSeries = undefined;
    return;
  }
  const controller = new AbortController();
  state.series = controller;
  const path = `${sessionPath(query.sessionId)}/series?${seriesParams({ measure: query.measure, pairs })}`;
  getJson(path, controller.signal)
    .then((series) => {
      if (controller.signal.aborted) return;
      const labels = pairs.map(({ row, col }) => `${row} vs ${col}`);
      const shown = training.show(series, labels);
      window.__ckaSeries = shown;
      showError(ui.trainingError, null);
      ui.training.setAttribute(
        'aria-label',
        `CKA over training of session ${series.session_id}, measure ${series.measure}: ` +
          `${pairs.length} pairs × ${shown.buckets.length} step buckets`,
      );
    })
    .catch(async (error) => {
      if (controller.signal.aborted) return;
      if (await handleAuth(error)) return;
      // An exact measure keeps no per-bucket sums: the server's message says so.
      training.clear();
      window.__ckaSeries = undefined;
      showError(ui.trainingError, error);
    });
}

// The source an axis shows, when it shows one.
function axisName(streams) {
  const sources = sourcesOf(streams);
  return sources.length === 1 ? sources[0] : '';
}

// What a figure needs to be cited: the measure's kernel and estimator (or its kind), the steps,
// and n, the common batches behind each entry.
function citation(measure, query, matrix) {
  const kernel = enumName(measure.kernel, 'LINEAR');
  const estimator = enumName(measure.estimator, 'UNBIASED');
  const kernelText =
    kernel === 'RBF' ? `RBF kernel (threshold ${measure.rbf_threshold})` : `${kernel} kernel`;
  const steps =
    query.stepMin === '' && query.stepMax === ''
      ? 'all steps'
      : `steps ${query.stepMin || '…'} to ${query.stepMax || '…'}`;
  const counts = matrix.batches.map(toNumber);
  const low = counts.length ? Math.min(...counts) : 0;
  const high = counts.length ? Math.max(...counts) : 0;
  const n = low === high ? `n = ${low}` : `n = ${low} to ${high}`;
  // The comparison family (Measure.kind): from the second moments over every row, all steps;
  // the server's note says why entries are empty.
  const kind = enumName(measure.kind, 'CKA');
  if (kind !== 'CKA') {
    const asymmetric = kind === 'REGRESSION_R2' || kind === 'PWCCA' ? ', row → column' : '';
    const note = matrix.note ? ` · ${matrix.note}` : '';
    return `${kind} from the second moments${asymmetric} · all steps · ${n} batches${note}`;
  }
  return `${kernelText}, ${estimator} estimator · ${steps} · ${n} common batches per entry`;
}

// Proto enums in JSON: the name, or the default when unspecified.
function enumName(value, unspecified) {
  return !value || String(value).endsWith('_UNSPECIFIED') ? unspecified : String(value);
}

// ---- exports -----------------------------------------------------------------------------

function download(name, href) {
  const a = document.createElement('a');
  a.href = href;
  a.download = name;
  a.click();
}

function exportName(extension) {
  const shown = heatmap.shown;
  return `${shown.session_id}-${shown.measure}.${extension}`.replace(/[^\w.-]+/g, '_');
}

ui.exportCsv.addEventListener('click', () => {
  if (!heatmap.shown) return;
  const url = URL.createObjectURL(new Blob([shownCsv(heatmap.shown)], { type: 'text/csv' }));
  download(exportName('csv'), url);
  setTimeout(() => URL.revokeObjectURL(url), 0);
});
ui.exportPng.addEventListener('click', () => {
  if (heatmap.shown) download(exportName('png'), heatmap.pngDataUrl());
});

// ---- the view in the URL --------------------------------------------------------------------
// The fragment (#session=…&measure=…&rows=source:a…) holds the view, so that a link or a reload
// shows the same figure. The token is never part of it.

function readView() {
  const view = new URLSearchParams(location.hash.slice(1));
  return view.has('session') ? view : null;
}

function writeView() {
  const view = new URLSearchParams({
    session: state.selected,
    measure: ui.measure.value,
    rows: ui.rowSource.value,
    cols: ui.colSource.value,
  });
  if (ui.stepMin.value.trim() !== '') view.set('step_min', ui.stepMin.value.trim());
  if (ui.stepMax.value.trim() !== '') view.set('step_max', ui.stepMax.value.trim());
  if (ui.half.checked) view.set('half', '1');
  if (!ui.live.checked) view.set('live', '0');
  history.replaceState(null, '', `#${view}`);
}

// Sets the form as `view` says, where the session has what it names.
function applyView(view) {
  const pick = (select, value) => {
    if ([...select.options].some((o) => o.value === value)) select.value = value;
  };
  pick(ui.measure, view.get('measure'));
  pick(ui.rowSource, view.get('rows'));
  pick(ui.colSource, view.get('cols'));
  ui.stepMin.value = view.get('step_min') ?? '';
  ui.stepMax.value = view.get('step_max') ?? '';
  updateHalfToggle();
  ui.half.checked = !ui.half.disabled && view.get('half') === '1';
  ui.live.checked = view.get('live') !== '0';
}

// ---- errors, the token, the connection line ----------------------------------------------

function showError(element, error) {
  element.hidden = error === null;
  element.textContent =
    error === null ? '' : error.code ? `${error.code}: ${error.message}` : String(error.message);
}

let tokenWaiters = null;

// On a 401, asks the user for a token once and retries everything; true when it did.
async function handleAuth(error) {
  if (!(error instanceof ApiError) || error.status !== 401) return false;
  setConnection('waiting for a token');
  if (tokenWaiters === null) {
    tokenWaiters = [];
    ui.token.value = '';
    ui.tokenDialog.showModal();
  }
  await new Promise((resolve) => tokenWaiters.push(resolve));
  startQuery();
  return true;
}

ui.tokenForm.addEventListener('submit', () => {
  setToken(ui.token.value.trim());
  ui.token.value = '';
});
// Submitted or dismissed (Escape): what waited tries again, and asks again on the next 401.
ui.tokenDialog.addEventListener('close', () => {
  const waiters = tokenWaiters ?? [];
  tokenWaiters = null;
  waiters.forEach((resolve) => resolve());
});

function setConnection(text) {
  ui.connection.textContent = text;
}

function delay(ms, signal) {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

function count(value) {
  return toNumber(value ?? 0).toLocaleString('en');
}

function bytes(value) {
  const n = toNumber(value ?? 0);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

// ---- wiring ------------------------------------------------------------------------------

ui.form.addEventListener('submit', (event) => {
  event.preventDefault();
  startQuery();
});
for (const input of [ui.measure, ui.half, ui.live, ui.blockThreshold]) {
  input.addEventListener('change', startQuery);
}
for (const select of [ui.rowSource, ui.colSource]) {
  select.addEventListener('change', () => {
    updateHalfToggle();
    startQuery();
  });
}

refreshSessions();
