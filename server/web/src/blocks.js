// The Blocks panel: each source's runs of consecutive layers whose pairwise values all exceed
// the threshold the user set, as the similarity answer's `blocks` lists them (core/MATH.md,
// "Block structure"), with a warning for a block longer than half its network.
import { toNumber } from './heatmap.js';

/** What the panel shows for `blocks` (the answer's, protobuf's JSON mapping), as numbers. */
export function blocksShown(blocks, threshold) {
  return {
    threshold,
    blocks: (blocks ?? []).map((b) => ({
      source: b.source ?? '',
      first_stream: b.first_stream,
      last_stream: b.last_stream,
      first_layer: toNumber(b.first_layer ?? 0),
      length: toNumber(b.length),
      source_layers: toNumber(b.source_layers),
      mean_value: toNumber(b.mean_value),
      min_value: toNumber(b.min_value),
      warning: Boolean(b.warning),
    })),
  };
}

/** Lists `shown` (blocksShown's) in `element`; null shows the hint to set a threshold. */
export function renderBlocks(element, shown) {
  if (shown === null) {
    element.replaceChildren(line('hint', 'Set a threshold to list each source\'s blocks.'));
    return;
  }
  if (shown.blocks.length === 0) {
    element.replaceChildren(
      line('hint', `No blocks: no two consecutive layers of a source above ${shown.threshold}.`),
    );
    return;
  }
  const list = document.createElement('ul');
  list.className = 'blocks';
  for (const b of shown.blocks) {
    const item = document.createElement('li');
    item.dataset.source = b.source;
    item.dataset.first = b.first_stream;
    item.dataset.last = b.last_stream;
    item.textContent =
      `${b.source || '(no source)'}: ${b.first_stream} … ${b.last_stream}, ` +
      `${b.length} of ${b.source_layers} layers (mean ${b.mean_value.toFixed(3)}, ` +
      `min ${b.min_value.toFixed(3)})`;
    if (b.warning) {
      const warning = document.createElement('strong');
      warning.className = 'warning';
      warning.textContent =
        ` Warning: more than half of ${b.source || 'the network'}'s layers are near-identical; ` +
        'it may be deeper than it needs to be.';
      item.append(warning);
    }
    list.append(item);
  }
  element.replaceChildren(list);
}

function line(className, text) {
  const p = document.createElement('p');
  p.className = className;
  p.textContent = text;
  return p;
}
