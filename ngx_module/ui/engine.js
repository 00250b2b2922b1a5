// The Engine view: /v1/status every second, kept for two minutes, drawn as
// tiles, charts and tables.  Rates and percentiles over a window come from
// the difference of two samples' counters, as Prometheus's rate() and
// histogram_quantile() would compute them.

import { getJSON } from './api.js';
import { drawChart } from './charts.js';

const $ = (id) => document.getElementById(id);
const KEEP = 120;                 // samples: two minutes at one a second
const samples = [];

// Prometheus's histogram_quantile over cumulative buckets (+Inf last).
export function quantile(q, le, buckets) {
    const count = buckets[buckets.length - 1];
    if (!(count > 0)) return null;
    const rank = q * count;
    const i = buckets.findIndex((b) => b >= rank);
    if (i >= le.length) return le[le.length - 1];
    const lo = i === 0 ? 0 : le[i - 1];
    const below = i === 0 ? 0 : buckets[i - 1];
    const inside = buckets[i] - below;
    return inside > 0 ? lo + (le[i] - lo) * (rank - below) / inside : le[i];
}

// The sample about `seconds` before the last one (the oldest within).
function since(seconds) {
    const last = samples[samples.length - 1];
    for (const s of samples) {
        if (last.time - s.time <= seconds + 0.25) return s;
    }
    return last;
}

function delta(now, then, f) {
    const a = f(now), b = f(then);
    return a === undefined || b === undefined ? 0 : a - b;
}

function windowQuantiles(name, now, then) {
    const h = now.metrics[name], o = then.metrics[name];
    const d = h.buckets.map((b, i) => b - (o ? o.buckets[i] : 0));
    return [0.5, 0.9, 0.99].map((q) => quantile(q, h.le, d));
}

function ms(s) {
    if (s === null || s === undefined) return '-';
    return s < 1 ? `${(s * 1000).toFixed(s < 0.01 ? 1 : 0)} ms` : `${s.toFixed(2)} s`;
}

function pct(x) {
    return x === null || x === undefined ? '-' : `${(x * 100).toFixed(1)}%`;
}

function bytes(n) {
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

function text(id, value) {
    $(id).textContent = value;
}

// One row per metric sample, named as /metrics names it.
function totalsRows(m) {
    const rows = [];
    for (const [name, v] of Object.entries(m)) {
        if (typeof v === 'number') rows.push([name, v]);
    }
    for (const [label, v] of Object.entries(m.sparsegate_requests_total)) {
        rows.push([`sparsegate_requests_total{endpoint="${label}"}`, v]);
    }
    for (const [label, v] of Object.entries(m.sparsegate_errors_total)) {
        rows.push([`sparsegate_errors_total{kind="${label}"}`, v]);
    }
    return rows;
}

function table(id, rows) {
    const tbody = $(id);
    tbody.replaceChildren(...rows.map(([name, value, metric]) => {
        const tr = document.createElement('tr');
        const th = document.createElement('th');
        const td = document.createElement('td');
        th.textContent = name;
        td.textContent = value;
        if (metric) td.dataset.metric = metric;
        tr.append(th, td);
        return tr;
    }));
}

function requestsTable(list) {
    text('requests-count', list.length ? `(${list.length})` : '(none)');
    $('requests').replaceChildren(...list.map((r) => {
        const tr = document.createElement('tr');
        tr.dataset.phase = r.phase;
        const cells = [r.id || `*${r.connection}`, r.endpoint, r.phase,
                       ms(r.age_ms / 1000), r.prompt_tokens ?? '-',
                       r.cached_tokens ?? '-', r.generated_tokens];
        for (const c of cells) {
            const td = document.createElement('td');
            td.textContent = c;
            tr.append(td);
        }
        return tr;
    }));
}

function series(f) {
    return samples.map((s, i) => (i === 0 ? null : f(s, samples[i - 1], i)));
}

function render() {
    const now = samples[samples.length - 1];
    const e = now.engine;
    const m = now.metrics;
    const up = e.kv_blocks_total !== undefined;

    text('model', now.model);
    // KV pool (this worker's engine)
    text('kv-used', up ? e.kv_blocks_used : '-');
    text('kv-total', up ? e.kv_blocks_total : '-');
    text('kv-cached', up ? e.kv_blocks_cached : '-');
    text('kv-percent', up ? `${pct(e.kv_blocks_used / e.kv_blocks_total)} `
         + `of ${bytes(e.kv_blocks_total * e.kv_block_bytes)}` : 'no engine');

    // prefix-cache hit rate: of the prompt tokens admitted
    const w10 = since(10);
    const dp = delta(now, w10, (s) => s.engine.prompt_tokens);
    const dc = delta(now, w10, (s) => s.engine.cached_tokens);
    text('hit-rate', dp > 0 ? pct(dc / dp) : 'no prompts');
    const all = m.sparsegate_prompt_tokens_total;
    text('hit-rate-all', all > 0
         ? pct(m.sparsegate_prefix_cache_hit_tokens_total / all) : '-');

    text('running', m.sparsegate_running_sequences);
    text('queued', m.sparsegate_queue_depth);
    text('active', m.sparsegate_active_requests);

    const w5 = since(5);
    const dt5 = now.time - w5.time;
    text('tokens-per-s', dt5 > 0
         ? (delta(now, w5, (s) => s.engine.generated_tokens) / dt5).toFixed(1)
         : '-');

    const w60 = since(60);
    for (const [key, name] of [['ttft', 'sparsegate_time_to_first_token_seconds'],
                               ['itl', 'sparsegate_inter_token_latency_seconds']]) {
        const [p50, p90, p99] = windowQuantiles(name, now, w60);
        text(`${key}-p50`, ms(p50));
        text(`${key}-p90`, ms(p90));
        text(`${key}-p99`, ms(p99));
    }

    // charts over the kept samples
    const chart = (id, ss, opts) => drawChart($(id), ss, { capacity: KEEP, ...opts });
    chart('chart-kv', [{ values: samples.map((s) => (s.engine.kv_blocks_total
        ? s.engine.kv_blocks_used / s.engine.kv_blocks_total : null)) }],
          { max: 1, label: () => '100%' });
    chart('chart-hits', [{ values: samples.map((s, i) => {
        const o = samples[Math.max(0, i - 10)];
        const p = s.engine.prompt_tokens - o.engine.prompt_tokens;
        return p > 0 ? (s.engine.cached_tokens - o.engine.cached_tokens) / p : null;
    }) }], { max: 1, label: () => '100%' });
    chart('chart-requests', [
        { values: samples.map((s) => s.metrics.sparsegate_running_sequences) },
        { values: samples.map((s) => s.metrics.sparsegate_queue_depth), cls: 'b' },
    ], { label: (t) => `${t} req` });
    chart('chart-tps', [{ values: series((s, o) => (s.time > o.time
        ? (s.engine.generated_tokens - o.engine.generated_tokens) / (s.time - o.time)
        : null)) }], { label: (t) => `${t.toFixed(0)}/s` });
    for (const [id, name] of [['chart-ttft', 'sparsegate_time_to_first_token_seconds'],
                              ['chart-itl', 'sparsegate_inter_token_latency_seconds']]) {
        const q = samples.map((s, i) => windowQuantiles(name, s,
                                                        samples[Math.max(0, i - 10)]));
        chart(id, [{ values: q.map((x) => x[0]) }, { values: q.map((x) => x[2]), cls: 'b' }],
              { label: ms });
    }

    requestsTable(now.requests);
    table('totals', totalsRows(m).map(([name, v]) => [name, v, name]));
    const lat = [];
    for (const [key, name] of [['time to first token', 'sparsegate_time_to_first_token_seconds'],
                               ['inter-token latency', 'sparsegate_inter_token_latency_seconds']]) {
        const h = m[name];
        for (const q of [0.5, 0.9, 0.99]) {
            const v = quantile(q, h.le, h.buckets);
            lat.push([`${key} p${q * 100}`, ms(v), `${name}:${q}`]);
        }
        lat.push([`${key} count`, h.count, `${name}_count`]);
    }
    table('latency', lat);
    // the raw quantiles, for a reader of the DOM (the browser test)
    for (const td of $('latency').querySelectorAll('td[data-metric*=":"]')) {
        const [name, q] = td.dataset.metric.split(':');
        const v = quantile(Number(q), m[name].le, m[name].buckets);
        td.dataset.value = v === null ? '' : String(v);
    }
}

export function startEngine(onState) {
    let busy = false;
    async function poll() {
        if (busy) return;
        busy = true;
        try {
            const s = await getJSON('/v1/status');
            samples.push(s);
            if (samples.length > KEEP) samples.shift();
            render();
            document.body.dataset.statusAt = String(s.time);
            onState(s.engine.available ? 'up' : 'no-engine', s, null);
        } catch (e) {
            onState(e.kind || 'error', null, e);
        } finally {
            busy = false;
        }
    }
    poll();
    return setInterval(poll, 1000);
}
