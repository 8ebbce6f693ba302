// Stream names ("source/layer"), the short labels the heatmap's axes show, and the pairs the
// over-training chart draws by default.

/** Splits a stream name at its first '/': { source, layer } (source '' when there is none). */
export function splitStream(stream) {
  const slash = stream.indexOf('/');
  return slash < 0
    ? { source: '', layer: stream }
    : { source: stream.slice(0, slash), layer: stream.slice(slash + 1) };
}

/** The distinct sources of `streams`, in their first-seen order. */
export function sourcesOf(streams) {
  return [...new Set(streams.map((s) => splitStream(s).source))];
}

/** The streams of `source` (all of them when source is null), in the session's order. */
export function streamsOf(streams, source) {
  return source === null ? streams : streams.filter((s) => splitStream(s).source === source);
}

/** Short labels for an axis of `streams`, one each, at most `maxLength` characters: the source
 *  is kept only when the axis shows several; of the layer names, the dotted segments every one
 *  starts with ("model.encoder.") and ends with (".attention.output.dense") are dropped —
 *  keeping the segment before a number ("layers.3") — then the middle of what is still too
 *  long. */
export function shortLabels(streams, maxLength = 24) {
  const parts = streams.map(splitStream);
  const layers = shortLayers(parts.map((p) => p.layer));
  const withSource = sourcesOf(streams).length > 1;
  return parts.map((p, i) => ellipsize(withSource ? `${p.source}/${layers[i]}` : layers[i], maxLength));
}

function shortLayers(names) {
  if (names.length < 2) return names;
  // Segments keep their delimiter: "a.b/c" is ["a.", "b/", "c"].
  const segments = names.map((n) => n.match(/[^./]+[./]?|[./]/g) ?? ['']);
  const shortest = Math.min(...segments.map((s) => s.length));
  const same = (index) => segments.every((s) => s[index(s)] === segments[0][index(segments[0])]);
  let head = 0;
  while (head < shortest - 1 && same(() => head)) head++;
  let tail = 0;
  while (head + tail < shortest - 1 && same((s) => s.length - 1 - tail)) tail++;
  if (head > 0 && segments.some((s) => /^\d/.test(s[head]))) head--;
  return segments.map((s) => s.slice(head, s.length - tail).join('').replace(/[./]$/, ''));
}

function ellipsize(name, maxLength) {
  if (name.length <= maxLength) return name;
  const tail = Math.ceil((maxLength - 1) * 0.6);
  const head = maxLength - 1 - tail;
  return `${name.slice(0, head)}…${name.slice(name.length - tail)}`;
}

// The server refuses more than 1024 pairs; a chart of more lines than this is unreadable.
export const kMaxLines = 12;

/** The default pairs of the over-training chart for `rows` × `cols` (stream names): each row
 *  against the column stream of the same layer name (model a's "fc" against model b's "fc"),
 *  else the diagonal (the i-th row against the i-th column); at most kMaxLines. */
export function defaultPairs(rows, cols) {
  const byLayer = new Map();
  for (const col of cols) {
    const layer = splitStream(col).layer;
    if (!byLayer.has(layer)) byLayer.set(layer, col);
  }
  const sameNamed = [];
  for (const row of rows) {
    const col = byLayer.get(splitStream(row).layer);
    if (col !== undefined && col !== row) sameNamed.push({ row, col });
  }
  const pairs =
    sameNamed.length > 0
      ? sameNamed
      : rows.slice(0, Math.min(rows.length, cols.length)).map((row, i) => ({ row, col: cols[i] }));
  return pairs.slice(0, kMaxLines);
}
