// The page's modules that need no browser (server/web/src): stream names and their short
// labels, the over-training chart's default pairs, and the server-sent-events parser fed in chunks split anywhere.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  defaultPairs,
  kMaxLines,
  shortLabels,
  sourcesOf,
  splitStream,
  streamsOf,
} from '../../server/web/src/names.js';
import { SseParser } from '../../server/web/src/sse.js';

test('a stream splits at its first slash; without one its source is empty', () => {
  assert.deepEqual(splitStream('resnet/layer1/conv'), { source: 'resnet', layer: 'layer1/conv' });
  assert.deepEqual(splitStream('conv1'), { source: '', layer: 'conv1' });
});

test('the default pairs are same-named layers of the two axes, else the diagonal', () => {
  assert.deepEqual(defaultPairs(['a/conv1', 'a/fc', 'a/extra'], ['b/fc', 'b/conv1']), [
    { row: 'a/conv1', col: 'b/conv1' },
    { row: 'a/fc', col: 'b/fc' },
  ]);
  // One model on both axes: no same-named layer of another stream, so the diagonal.
  assert.deepEqual(defaultPairs(['m/x', 'm/y'], ['m/x', 'm/y']), [
    { row: 'm/x', col: 'm/x' },
    { row: 'm/y', col: 'm/y' },
  ]);
  assert.deepEqual(defaultPairs(['a/p', 'a/q', 'a/r'], ['b/u', 'b/v']), [
    { row: 'a/p', col: 'b/u' },
    { row: 'a/q', col: 'b/v' },
  ]);
  const many = Array.from({ length: 40 }, (_, i) => `a/l${i}`);
  assert.equal(defaultPairs(many, many.map((s) => s.replace('a/', 'b/'))).length, kMaxLines);
});

test('sources keep their first-seen order, and a source picks its streams', () => {
  const streams = ['b/x', 'a/x', 'b/y', 'x'];
  assert.deepEqual(sourcesOf(streams), ['b', 'a', '']);
  assert.deepEqual(streamsOf(streams, 'b'), ['b/x', 'b/y']);
  assert.deepEqual(streamsOf(streams, null), streams);
});

test('labels drop the one source, shared dotted beginnings and endings, the middle of long names', () => {
  assert.deepEqual(
    shortLabels(['m/model.encoder.layer1.attn', 'm/model.encoder.layer2.mlp']),
    ['layer1.attn', 'layer2.mlp'],
  );
  // The shared ending goes too; the segment before the number stays.
  assert.deepEqual(
    shortLabels(['bert/enc.layers.0.attn.out', 'bert/enc.layers.11.attn.out']),
    ['layers.0', 'layers.11'],
  );
  // Two sources: the source stays, it tells the rows apart.
  assert.deepEqual(shortLabels(['a/conv1', 'b/conv1']), ['a/conv1', 'b/conv1']);
  assert.deepEqual(
    shortLabels(['a/net.conv1', 'a/net.fc', 'b/net.conv1', 'b/net.fc']),
    ['a/conv1', 'a/fc', 'b/conv1', 'b/fc'],
  );
  // A prefix that is a whole name is kept.
  assert.deepEqual(shortLabels(['m/fc', 'm/fc.out']), ['fc', 'fc.out']);
  const [long] = shortLabels(['m/a_very_long_layer_name_that_goes_on_and_on'], 24);
  assert.equal(long.length, 24);
  assert.ok(long.startsWith('a_very_l') && long.endsWith('es_on_and_on') && long.includes('…'));
});

const kStream =
  ': keep-alive\r\n\r\n' +
  'event: matrix\r\ndata: {"a":1}\r\n\r\n' +
  'event: matrix\ndata: {"a":\ndata: 2}\n\n' +
  'data:plain\r\r' +
  'event: error\ndata: {"code":"NOT_FOUND"}\n\n' +
  'event: matrix\ndata: unfinished';
const kEvents = [
  { type: 'matrix', data: '{"a":1}' },
  { type: 'matrix', data: '{"a":\n2}' },
  { type: 'message', data: 'plain' },
  { type: 'error', data: '{"code":"NOT_FOUND"}' },
];

test('events parse the same however the stream is cut into chunks', () => {
  for (let i = 0; i <= kStream.length; i++) {
    for (const j of [i, Math.min(kStream.length, i + 1), Math.min(kStream.length, i + 7)]) {
      const parser = new SseParser();
      const events = [kStream.slice(0, i), kStream.slice(i, j), kStream.slice(j)].flatMap((c) =>
        parser.push(c),
      );
      assert.deepEqual(events, kEvents, `cut at ${i} and ${j}`);
    }
  }
});
