// The "over training" chart: for chosen (row, col) pairs of streams (names.js' defaultPairs),
// the CKA of each step bucket on its own (the JSON API's .../series), one line per pair, one
// point per bucket; and what it shows (window.__ckaSeries, for tests).
import * as echarts from 'echarts/core';
import { LineChart } from 'echarts/charts';
import { GridComponent, LegendComponent, TooltipComponent } from 'echarts/components';
import { CanvasRenderer } from 'echarts/renderers';
import { escapeHtml, toNumber } from './heatmap.js';

echarts.use([LineChart, GridComponent, LegendComponent, TooltipComponent, CanvasRenderer]);

// The bucket of a session without step buckets spans every int64 step: drawn at x = 0.
const kAllStepsFirst = '-9223372036854775808';

export class TrainingChart {
  constructor(element) {
    this.element = element;
    this.chart = echarts.init(element, null, { renderer: 'canvas' });
    this.shown = null;
    new ResizeObserver(() => this.chart.resize()).observe(element);
  }

  /** Draws `series` (a SimilaritySeries of the JSON API), each pair labelled by `labels`.
   *  Returns and records what is shown: the pairs, the buckets' steps and, per line, its points
   *  as the chart holds them ([x, value], '-' where the bucket has no value). */
  show(series, labels) {
    const allSteps = (b) => String(b.step_first) === kAllStepsFirst;
    const buckets = (series.buckets ?? []).map((b) => ({
      step_first: allSteps(b) ? null : toNumber(b.step_first),
      step_last: allSteps(b) ? null : toNumber(b.step_last),
      values: (b.values ?? []).map(toNumber),
      batches: (b.batches ?? []).map(toNumber),
      standard_errors: (b.standard_errors ?? []).map(toNumber),
    }));
    const x = (b) => b.step_first ?? 0;
    const pairs = series.pairs ?? [];
    const lines = pairs.map((pair, p) => ({
      name: labels[p],
      type: 'line',
      showSymbol: true,
      connectNulls: false,
      data: buckets.map((b) => [x(b), Number.isNaN(b.values[p]) ? '-' : b.values[p]]),
    }));
    this.chart.setOption(
      {
        animation: false,
        grid: { left: 8, right: 24, top: 40, bottom: 32, containLabel: true },
        legend: { type: 'scroll', top: 0 },
        tooltip: {
          trigger: 'axis',
          formatter: (items) => {
            const b = buckets[items[0]?.dataIndex] ?? null;
            if (b === null) return '';
            const steps = b.step_first === null ? 'all steps' : `steps ${b.step_first}–${b.step_last}`;
            const rows = items.map((item) => {
              const v = b.values[item.seriesIndex];
              const n = b.batches[item.seriesIndex];
              const se = b.standard_errors[item.seriesIndex] ?? NaN;
              const error = Number.isNaN(se) ? '' : ` ± ${se.toFixed(4)}`;
              const value = Number.isNaN(v) ? 'no value' : `${v.toFixed(4)}${error}`;
              return `${item.marker}${escapeHtml(item.seriesName)}: <b>${value}</b> · n = ${n}`;
            });
            return [steps, ...rows].join('<br>');
          },
        },
        xAxis: { type: 'value', name: 'step', nameLocation: 'middle', nameGap: 24, scale: true },
        // 0 to 1, widened when an unbiased estimate leaves it.
        yAxis: {
          type: 'value',
          name: 'CKA',
          min: (e) => Math.min(0, e.min),
          max: (e) => Math.max(1, e.max),
        },
        series: lines,
      },
      { notMerge: true },
    );
    const drawn = this.chart.getOption().series ?? [];
    this.shown = {
      session_id: series.session_id,
      measure: series.measure,
      step_bucket: toNumber(series.step_bucket ?? 0),
      pairs: pairs.map(({ row, col }) => ({ row, col })),
      buckets: buckets.map(({ step_first, step_last }) => ({ step_first, step_last })),
      lines: drawn.map((line) => ({ name: line.name, data: line.data })),
    };
    return this.shown;
  }

  clear() {
    this.chart.clear();
    this.shown = null;
  }
}
