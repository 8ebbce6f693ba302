// Stream names ("source/layer") and the short labels the heatmap's axes show.

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
 *  is dropped when the axis shows one source, then the dotted prefix every layer shares
 *  ("model.encoder."), then the middle of what is still too long. */
export function shortLabels(streams, maxLength = 24) {
  const sources = sourcesOf(streams);
  let names = sources.length === 1 ? streams.map((s) => splitStream(s).layer) : [...streams];
  const prefix = commonSegmentPrefix(names);
  if (prefix.length > 0) names = names.map((n) => n.slice(prefix.length));
  return names.map((n) => ellipsize(n, maxLength));
}

// The longest prefix ending in '.' or '/' that every name has and none is equal to.
function commonSegmentPrefix(names) {
  if (names.length < 2) return '';
  let prefix = names[0];
  for (const name of names) {
    let i = 0;
    while (i < prefix.length && i < name.length && prefix[i] === name[i]) i++;
    prefix = prefix.slice(0, i);
  }
  const cut = Math.max(prefix.lastIndexOf('.'), prefix.lastIndexOf('/'));
  prefix = prefix.slice(0, cut + 1);
  return names.some((n) => n.length === prefix.length) ? '' : prefix;
}

function ellipsize(name, maxLength) {
  if (name.length <= maxLength) return name;
  const tail = Math.ceil((maxLength - 1) * 0.6);
  const head = maxLength - 1 - tail;
  return `${name.slice(0, head)}…${name.slice(name.length - tail)}`;
}
