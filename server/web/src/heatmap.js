// The CKA heatmap: a SimilarityMatrix drawn on a fixed 0–1 colour scale, and what it shows
// (window.__ckaShown, for tests and the exports).
import * as echarts from 'echarts/core';
import { CustomChart, HeatmapChart } from 'echarts/charts';
import {
  GridComponent,
  TitleComponent,
  TooltipComponent,
  VisualMapComponent,
} from 'echarts/components';
import { CanvasRenderer } from 'echarts/renderers';

echarts.use([
  CustomChart,
  HeatmapChart,
  GridComponent,
  TitleComponent,
  TooltipComponent,
  VisualMapComponent,
  CanvasRenderer,
]);

// Perceptually ordered, readable in grey print (viridis' stops).
const kColours = ['#440154', '#3b528b', '#21918c', '#5ec962', '#fde725'];
// Up to this many cells per side, each cell also prints its value.
const kLabelledSide = 12;
// Column labels are slanted beyond this many columns.
const kUnrotatedColumns = 6;
const kLabelAngle = 40;
// The axis labels' font, about this many pixels a character.
const kCharWidth = 6.5;
const kLabelHeight = 14;
// Up to this many streams per axis, every one is labelled.
const kEveryLabelUpTo = 40;
// Cells without a value (no common batch yet).
const kMissingColour = '#e4e7eb';
// The outline of a block of near-identical layers (the Blocks panel's).
const kOutlineColour = '#c81e3c';
// Cell labels are dark on the light end of the scale.
const kDarkTextAbove = 0.7;
// The figure's height: room for the axes, then this much per row, within bounds.
const kRowHeight = 36;
const kMinHeight = 300;
const kMaxHeight = 900;
const kMinCellWidth = 56;
const kMaxCellWidth = 160;
// The grid's bottom margin on screen, and in the PNG, which also carries the caption.
const kBottom = 40;
const kBottomWithCaption = 96;

/** The JSON API's numbers: doubles may be "NaN"/"Infinity" strings, int64s are strings. */
// The cells of each block that `rows` and `cols` show as one rectangle: its layers in a row,
// first to last, on both axes. [first row, first column, last row, last column] each.
function blockOutlines(blocks, rows, cols) {
  const out = [];
  for (const b of blocks ?? []) {
    const length = toNumber(b.length);
    const r = rows.indexOf(b.first_stream);
    const c = cols.indexOf(b.first_stream);
    if (r < 0 || c < 0) continue;
    const r1 = r + length - 1;
    const c1 = c + length - 1;
    if (rows[r1] === b.last_stream && cols[c1] === b.last_stream) out.push([r, c, r1, c1]);
  }
  return out;
}

export function toNumber(value) {
  return typeof value === 'number' ? value : Number(value);
}

export class Heatmap {
  constructor(element) {
    this.element = element;
    this.chart = echarts.init(element, null, { renderer: 'canvas' });
    this.shown = null;
    new ResizeObserver(() => this.chart.resize()).observe(element);
    // Axis labels are shortened; hovering one shows the full stream name.
    this.chart.on('mouseover', (params) => {
      if (params.componentType !== 'xAxis' && params.componentType !== 'yAxis') return;
      const names = params.componentType === 'xAxis' ? this.shown?.cols : this.shown?.rows;
      if (params.targetType === 'axisLabel') element.title = names?.[params.tickIndex] ?? '';
    });
    this.chart.on('mouseout', () => {
      element.title = '';
    });
  }

  /** Draws `matrix` (a SimilarityMatrix of the JSON API) with the axis labels and names given;
   *  `half` hides the cells above the diagonal; title and subtitle go into the PNG. Returns and
   *  records what is shown: rows, cols and row-major values (null: no value, or hidden),
   *  common batches and standard errors (null: none, or hidden). `blocks` (the answer's, or
   *  none) are outlined where the rows and the columns both show a block's layers in a row;
   *  `outlines` records them as [first row, first column, last row, last column]. */
  show(matrix, { rowLabels, colLabels, rowName, colName, half, title, subtitle, blocks = [] }) {
    const rows = matrix.rows;
    const cols = matrix.cols;
    const values = [];
    const batches = [];
    const errors = [];
    const data = [];
    const missing = []; // cells without a value (no common batch yet), drawn grey
    for (let i = 0; i < rows.length; i++) {
      for (let j = 0; j < cols.length; j++) {
        const k = i * cols.length + j;
        const value = toNumber(matrix.values[k]);
        const n = toNumber(matrix.batches[k] ?? 0);
        // A server without standard errors sends none: no SE.
        const se = toNumber(matrix.standard_errors?.[k] ?? NaN);
        const hidden = half && j > i;
        values.push(hidden || Number.isNaN(value) ? null : value);
        batches.push(hidden ? null : n);
        errors.push(hidden || Number.isNaN(value) || Number.isNaN(se) ? null : se);
        if (hidden) continue;
        if (Number.isNaN(value)) {
          missing.push([j, i, 0, n, null]);
          continue;
        }
        // Dimension 2 is the colour: unbiased estimates can leave [0, 1] a little, and take the
        // scale's end colours then. Dimension 4 is the value itself, 5 its standard error.
        data.push({
          value: [j, i, Math.min(1, Math.max(0, value)), n, value, errors[errors.length - 1]],
          label: { color: value > kDarkTextAbove ? '#1f2933' : '#fff' },
        });
      }
    }
    const outlines = blockOutlines(blocks, rows, cols);
    const labelled = rows.length <= kLabelledSide && cols.length <= kLabelledSide;
    const rotated = cols.length > kUnrotatedColumns;
    // Cells about square when there are few; the page's width when there are many.
    const height = Math.min(kMaxHeight, Math.max(kMinHeight, 140 + rows.length * kRowHeight));
    const cellWidth = Math.max(kMinCellWidth, Math.min(kMaxCellWidth, 900 / cols.length));
    const width = 320 + cols.length * cellWidth;
    if (this.element.style.height !== `${height}px` || this.element.style.maxWidth !== `${width}px`) {
      this.element.style.height = `${height}px`;
      this.element.style.maxWidth = `${width}px`;
      this.chart.resize();
    }
    this.chart.setOption(
      {
        animation: false,
        // Shown in the PNG only: on the page, the figure's caption says it.
        title: {
          show: false,
          text: title,
          subtext: subtitle,
          left: 'center',
          bottom: 0,
          textStyle: { fontSize: 13, fontWeight: 600, color: '#1f2933' },
          subtextStyle: { fontSize: 11, color: '#52606d' },
        },
        grid: { left: 8, right: 90, top: 28, bottom: kBottom, containLabel: true },
        tooltip: {
          position: 'top',
          formatter: (p) => {
            const [j, i, , n, value, se] = p.value;
            return `${escapeHtml(rows[i])} × ${escapeHtml(cols[j])}<br>${cellText(value, se ?? null, n)}`;
          },
        },
        xAxis: {
          type: 'category',
          data: colLabels,
          name: colName,
          nameLocation: 'middle',
          nameGap: labelDepth(colLabels, rotated) + 14,
          nameTextStyle: { fontWeight: 600, color: '#1f2933' },
          triggerEvent: true,
          axisLabel: { rotate: rotated ? kLabelAngle : 0, interval: labelInterval(cols.length) },
          splitLine: { show: false },
        },
        yAxis: {
          type: 'category',
          data: rowLabels,
          name: rowName,
          nameLocation: 'start',
          nameTextStyle: { fontWeight: 600, color: '#1f2933', align: 'right' },
          inverse: true,
          triggerEvent: true,
          axisLabel: { interval: labelInterval(rows.length) },
          splitLine: { show: false },
        },
        visualMap: {
          type: 'continuous',
          seriesIndex: 0,
          dimension: 2,
          min: 0,
          max: 1,
          calculable: false,
          orient: 'vertical',
          right: 8,
          top: 'middle',
          itemHeight: 200,
          text: ['1', '0'],
          textGap: 6,
          inRange: { color: kColours },
        },
        series: [
          {
            type: 'heatmap',
            data,
            label: {
              show: labelled,
              formatter: (p) => p.value[4].toFixed(2),
            },
            emphasis: { itemStyle: { borderColor: '#111', borderWidth: 1 } },
          },
          {
            type: 'heatmap',
            data: missing,
            itemStyle: { color: kMissingColour },
            label: { show: labelled, formatter: '–', color: '#52606d' },
            emphasis: { itemStyle: { borderColor: '#111', borderWidth: 1 } },
          },
          {
            // The blocks: a rectangle around each one's cells.
            type: 'custom',
            silent: true,
            z: 10,
            data: outlines,
            renderItem: (params, api) => {
              const [x0, y0] = api.coord([api.value(1), api.value(0)]);
              const [x1, y1] = api.coord([api.value(3), api.value(2)]);
              const [w, h] = api.size([1, 1]);
              return {
                type: 'rect',
                shape: { x: x0 - w / 2, y: y0 - h / 2, width: x1 - x0 + w, height: y1 - y0 + h },
                style: { fill: 'none', stroke: kOutlineColour, lineWidth: 2 },
              };
            },
          },
        ],
      },
      { notMerge: true },
    );
    this.shown = {
      session_id: matrix.session_id,
      measure: matrix.measure,
      rows: [...rows],
      cols: [...cols],
      values,
      batches,
      standard_errors: errors,
      half: Boolean(half),
      outlines,
    };
    return this.shown;
  }

  /** The pixel centre of cell (row i, column j) within the figure's element, for tests that
   *  hover a cell. */
  cellCentre(i, j) {
    return this.chart.convertToPixel({ seriesIndex: 0 }, [j, i]);
  }

  /** Clears the figure (no session, or the query failed). */
  clear() {
    this.chart.clear();
    this.shown = null;
  }

  /** The figure as a PNG data URL, at twice the screen's resolution, on white. */
  pngDataUrl() {
    this.chart.setOption({ title: { show: true }, grid: { bottom: kBottomWithCaption } });
    const url = this.chart.getDataURL({ type: 'png', pixelRatio: 2, backgroundColor: '#fff' });
    this.chart.setOption({ title: { show: false }, grid: { bottom: kBottom } });
    return url;
  }
}

/** What hovering a cell says of its value: "value ± SE (n batches)"; the SE only when the
 *  entry has one (2 or more batches, a minibatch CKA measure). */
export function cellText(value, se, n) {
  const batches = `(${n} batch${n === 1 ? '' : 'es'})`;
  if (value === null) return `<b>no value</b> ${batches}`;
  const error = se === null ? '' : ` ± ${se.toFixed(4)}`;
  return `<b>${value.toFixed(4)}${error}</b> ${batches}`;
}

/** The shown matrix as CSV: a header of column streams, each followed by its standard errors'
 *  column ("<stream> SE"), then one line per row stream; empty where there is no value or SE,
 *  or the cell is hidden. */
export function shownCsv(shown) {
  const quote = (s) => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
  const header = shown.cols.flatMap((col) => [col, `${col} SE`]);
  const lines = [['', ...header].map(quote).join(',')];
  const text = (v) => (v === null || v === undefined ? '' : String(v));
  shown.rows.forEach((row, i) => {
    const cells = shown.cols.flatMap((_, j) => {
      const k = i * shown.cols.length + j;
      return [text(shown.values[k]), text(shown.standard_errors?.[k])];
    });
    lines.push([quote(row), ...cells].join(','));
  });
  return `${lines.join('\n')}\n`;
}

// How far the column labels reach below the axis line, in pixels.
function labelDepth(labels, rotated) {
  if (!rotated) return kLabelHeight;
  const longest = Math.max(0, ...labels.map((l) => l.length));
  return Math.ceil(longest * kCharWidth * Math.sin((kLabelAngle * Math.PI) / 180)) + kLabelHeight;
}

// Every axis label while they fit; beyond, ECharts leaves out what would overlap (hovering a
// cell still names both streams).
function labelInterval(count) {
  return count <= kEveryLabelUpTo ? 0 : 'auto';
}

export function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
