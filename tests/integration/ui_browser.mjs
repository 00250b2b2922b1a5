// The page in Debian's chromium (headless, driven by playwright-core; no
// browser is downloaded), against the gateways test_ui.sh started:
//   UI_URL     gateway A: SQLite store, API key UI_KEY on the API, one
//              running sequence and a queue of one
//   UI_URL_B   gateway B: its store is down; UI_PID_B its nginx, stopped
//              here to see the page with the gateway gone
//   UI_SHOTS   where the screenshots go; UI_CHROMIUM the browser;
//   UI_CORPUS  the passages ingested (their text is checked on the page)
// Prints "PASS name" / "FAIL name: why" lines.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const A = process.env.UI_URL;
const B = process.env.UI_URL_B;
const KEY = process.env.UI_KEY;
const SHOTS = process.env.UI_SHOTS;
const corpus = Object.fromEntries(readFileSync(process.env.UI_CORPUS, 'utf8')
    .trim().split('\n').map((l) => JSON.parse(l)).map((d) => [d.id, d.text]));

let failed = 0;
const pass = (n) => console.log(`PASS ${n}`);
const fail = (n, why) => { failed++; console.log(`FAIL ${n}: ${String(why).replace(/\s+/g, ' ')}`); };
const check = (n, ok, why) => (ok ? pass(n) : fail(n, why));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function test(name, fn) {
    try {
        await fn();
    } catch (e) {
        fail(name, `threw ${e?.name}: ${e?.message?.split('\n')[0]}`);
    }
}

// /metrics as a map: 'name{labels}' -> value
async function metrics(base = A) {
    const text = await (await fetch(`${base}/metrics`)).text();
    const m = new Map();
    for (const line of text.split('\n')) {
        if (!line || line.startsWith('#')) continue;
        const i = line.lastIndexOf(' ');
        m.set(line.slice(0, i), Number(line.slice(i + 1)));
    }
    return m;
}

async function until(what, fn, ms = 30000) {
    const end = Date.now() + ms;
    let last;
    while (Date.now() < end) {
        last = await fn();
        if (last) return last;
        await sleep(100);
    }
    throw new Error(`timed out waiting for ${what}`);
}

const idle = () => until('an idle engine', async () => {
    const m = await metrics();
    return m.get('sparsegate_active_requests') === 0
        && m.get('sparsegate_running_sequences') === 0
        && m.get('sparsegate_queue_depth') === 0;
});

// Prometheus's histogram_quantile, from the /metrics text
function quantile(m, name, q) {
    const b = [...m.entries()].filter(([k]) => k.startsWith(`${name}_bucket{`))
        .map(([k, v]) => [k.includes('+Inf') ? Infinity : Number(k.match(/le="([^"]+)"/)[1]), v])
        .sort((x, y) => x[0] - y[0]);
    const count = b[b.length - 1][1];
    if (!(count > 0)) return null;
    const rank = q * count;
    const i = b.findIndex(([, c]) => c >= rank);
    if (b[i][0] === Infinity) return b[b.length - 2][0];
    const lo = i === 0 ? 0 : b[i - 1][0];
    const below = i === 0 ? 0 : b[i - 1][1];
    const inside = b[i][1] - below;
    return inside > 0 ? lo + (b[i][0] - lo) * (rank - below) / inside : b[i][0];
}

async function ask(page, question, maxTokens) {
    await page.evaluate(() => { location.hash = '#ask'; });
    await page.fill('#question', question);
    await page.fill('#max-tokens', String(maxTokens));
    await page.fill('#temperature', '0');
    await page.click('#ask-button');
}

const answerDone = (page, ms = 90000) => page.waitForFunction(
    () => document.getElementById('answer').dataset.done
          || !document.getElementById('ask-error').hidden, null, { timeout: ms });

// the notice line's text once it shows an error of this kind
const noticeOf = async (page, kind, ms) => (await page.waitForFunction((k) => {
    const p = document.getElementById('notice');
    return !p.hidden && p.dataset.kind === k && p.textContent;
}, kind, { timeout: ms })).jsonValue();

const askError = (page) => page.evaluate(() => {
    const e = document.getElementById('ask-error');
    return e.hidden ? null : { kind: e.dataset.kind, text: e.textContent };
});

// The engine view's numbers against /metrics, read right after the page
// drew a fresh sample of /v1/status on an idle gateway.
async function compareWithMetrics(page, name) {
    await page.evaluate(() => { location.hash = '#engine'; });
    const before = await page.evaluate(() => document.body.dataset.statusAt);
    await page.waitForFunction((t) => document.body.dataset.statusAt !== t,
                               before, { timeout: 10000 });
    const m = await metrics();
    const shown = await page.evaluate(() => {
        const out = {};
        for (const td of document.querySelectorAll('#totals td[data-metric]')) {
            out[td.dataset.metric] = Number(td.textContent);
        }
        for (const td of document.querySelectorAll('#latency td[data-metric]')) {
            out[td.dataset.metric] = td.dataset.value !== undefined
                ? (td.dataset.value === '' ? null : Number(td.dataset.value))
                : Number(td.textContent);
        }
        for (const id of ['kv-total', 'kv-used', 'running', 'queued', 'active']) {
            out[`#${id}`] = Number(document.getElementById(id).textContent);
        }
        return out;
    });
    const bad = [];
    let n = 0;
    for (const [k, v] of Object.entries(shown)) {
        let want;
        if (k.includes(':')) {
            const [h, q] = k.split(':');
            want = quantile(m, h, Number(q));
            n++;
            const same = want === null ? v === null
                : v !== null && Math.abs(v - want) <= 1e-9 * Math.max(1, Math.abs(want));
            if (!same) bad.push(`${k} page ${v} /metrics ${want}`);
            continue;
        }
        want = k.startsWith('#') ? m.get({ 'kv-total': 'sparsegate_kv_blocks_total',
                                            'kv-used': 'sparsegate_kv_blocks_used',
                                            running: 'sparsegate_running_sequences',
                                            queued: 'sparsegate_queue_depth',
                                            active: 'sparsegate_active_requests' }[k.slice(1)])
            : m.get(k);
        n++;
        // reading the numbers is itself counted: the page's next poll and
        // this /metrics request may come after the sample it shows
        const observing = /endpoint="(status|metrics)"/.test(k);
        if (want === undefined || (observing ? !(v <= want && v >= want - 3) : v !== want)) {
            bad.push(`${k} page ${v} /metrics ${want}`);
        }
    }
    check(name, bad.length === 0 && n > 30, `${n} numbers; ${bad.slice(0, 6).join('; ')}`);
}

// playwright gives the browser a fresh profile of its own (a new
// --user-data-dir) and removes it at close
const browser = await chromium.launch({
    executablePath: process.env.UI_CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
           '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
const errors = [];

async function newPage(base) {
    const page = await context.newPage();
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${base}/ui/`);
    return page;
}

try {
    const page = await newPage(A);

    await test('ui_401_without_key', async () => {
        const n = await noticeOf(page, 'auth', 10000);
        const state = await page.getAttribute('#gateway-state', 'data-state');
        check('ui_401_without_key', state === 'auth' && /API key/.test(n),
              `state ${state}, notice ${n}`);
    });

    await test('ui_key_accepted', async () => {
        await page.fill('#key', KEY);
        await page.click('#key-form button');
        await page.waitForFunction(() => document.getElementById('collection').dataset.loaded,
                                   null, { timeout: 10000 });
        const opts = await page.$$eval('#collection option', (o) => o.map((x) => x.value));
        await page.waitForFunction(() => document.getElementById('gateway-state')
            .dataset.state === 'up', null, { timeout: 10000 });
        const notice = await page.isHidden('#notice');
        check('ui_key_accepted', opts.includes('man') && notice
              && await page.inputValue('#collection') === 'man',
              `options ${opts}, notice hidden ${notice}`);
    });

    await test('ui_ask_streams', async () => {
        await page.evaluate(() => {
            window.answerUpdates = 0;
            new MutationObserver(() => { window.answerUpdates++; })
                .observe(document.getElementById('answer'),
                         { childList: true, characterData: true, subtree: true });
        });
        await ask(page, 'How does epoll report that a descriptor is ready?', 16);
        await answerDone(page);
        const r = await page.evaluate(() => ({
            done: document.getElementById('answer').dataset.done,
            text: document.getElementById('answer').textContent,
            updates: window.answerUpdates,
            error: document.getElementById('ask-error').hidden ? null
                : document.getElementById('ask-error').textContent,
            usage: { ...document.getElementById('usage').dataset },
            usageText: document.getElementById('usage').textContent,
        }));
        check('ui_ask_streams', r.done === 'length' && r.text.length > 0 && r.updates >= 3,
              JSON.stringify(r));
        check('ui_usage_line', Number(r.usage.completion) === 16 && Number(r.usage.prompt) > 0
              && r.usage.cached !== undefined && /first token after/.test(r.usageText)
              && /tokens\/s/.test(r.usageText), r.usageText);
    });

    await test('ui_citations', async () => {
        const items = await page.$$eval('#citations li', (l) => l.map((x) => ({
            id: x.dataset.id, head: x.querySelector('.citation-head').textContent })));
        check('ui_citations', items.length === 4 && items[0].id === 'epoll:0000'
              && /^epoll/.test(items[0].head) && /score \d/.test(items[0].head)
              && /rank 1/.test(items[0].head), JSON.stringify(items));
        const hidden = await page.isHidden('#citations li:first-child .passage');
        await page.click('#citations li:first-child .citation-head');
        const text = await page.textContent('#citations li:first-child .passage');
        check('ui_passage_text_on_click', hidden && text === corpus.epoll
              && await page.isVisible('#citations li:first-child .passage'),
              `hidden before ${hidden}, text ${text}`);
        await page.screenshot({ path: join(SHOTS, 'ask.png') });
    });

    await test('ui_engine_view_matches_metrics', async () => {
        await idle();
        await compareWithMetrics(page, 'ui_engine_view_matches_metrics');
        const svg = await page.$$eval('#engine-view svg.chart path.series', (p) => p.length);
        check('ui_engine_charts_drawn', svg >= 6, `${svg} series drawn`);
    });

    await test('ui_requests_live', async () => {
        await ask(page, 'What does eventfd count?', 400);
        await page.evaluate(() => { location.hash = '#engine'; });
        const row = await page.waitForFunction(() => {
            const tr = document.querySelector('#requests tr[data-phase="decode"]');
            return tr && Number(tr.children[6].textContent) > 0
                && [...tr.children].map((td) => td.textContent);
        }, null, { timeout: 60000 });
        const cells = await row.jsonValue();
        check('ui_requests_live', cells[1] === 'rag' && /^rag-/.test(cells[0])
              && Number(cells[4]) > 0 && cells[5] !== '-', JSON.stringify(cells));
        await page.screenshot({ path: join(SHOTS, 'engine.png'), fullPage: true });
    });

    await test('ui_navigate_away_cancels', async () => {
        const m0 = await metrics();
        await page.goto('about:blank');
        const m1 = await until('the cancellation', async () => {
            const m = await metrics();
            return m.get('sparsegate_engine_requests_cancelled')
                       === m0.get('sparsegate_engine_requests_cancelled') + 1
                && m.get('sparsegate_active_requests') === 0 && m;
        });
        check('ui_navigate_away_cancels',
              m1.get('sparsegate_errors_total{kind="client_closed"}')
              === m0.get('sparsegate_errors_total{kind="client_closed"}') + 1
              && m1.get('sparsegate_running_sequences') === 0,
              `client_closed ${m1.get('sparsegate_errors_total{kind="client_closed"}')}`);
    });

    await page.goto(`${A}/ui/`);      // the key is remembered
    await page.waitForFunction(() => document.getElementById('collection').dataset.loaded,
                               null, { timeout: 10000 });

    // a model in thinking mode streams delta.reasoning_content before the
    // answer: the page shows it apart (the stream here is the API's shape,
    // served by the browser in place of the gateway)
    await test('ui_thinking_apart', async () => {
        const chunk = (delta, extra = {}) => `data: ${JSON.stringify({
            id: 'rag-x', object: 'chat.completion.chunk', created: 1, model: 'm',
            choices: [{ index: 0, delta, logprobs: null, finish_reason: null }], ...extra })}\n\n`;
        const body = chunk({ role: 'assistant', content: '' }, { citations: [] })
            + chunk({ reasoning_content: 'First, epoll ' })
            + chunk({ reasoning_content: 'waits.' })
            + chunk({ content: 'It reports readiness.' })
            + `data: ${JSON.stringify({ id: 'rag-x', object: 'chat.completion.chunk',
                created: 1, model: 'm', choices: [{ index: 0, delta: {}, logprobs: null,
                finish_reason: 'stop' }] })}\n\n`
            + 'data: [DONE]\n\n';
        await page.route('**/v1/rag', (route) => route.fulfill({
            status: 200, contentType: 'text/event-stream', body }));
        await ask(page, 'Think first', 8);
        await answerDone(page);
        await page.unroute('**/v1/rag');
        const r = await page.evaluate(() => ({
            thinking: document.getElementById('thinking').textContent,
            shown: !document.getElementById('thinking-box').hidden,
            answer: document.getElementById('answer').textContent }));
        check('ui_thinking_apart', r.shown && r.thinking === 'First, epoll waits.'
              && r.answer === 'It reports readiness.', JSON.stringify(r));
    });

    await page.goto(`${A}/ui/`);
    await page.waitForFunction(() => document.getElementById('collection').dataset.loaded,
                               null, { timeout: 10000 });

    await test('ui_stop_cancels', async () => {
        await idle();
        const m0 = await metrics();
        await ask(page, 'What does nginx never do?', 400);
        await page.waitForFunction(() => document.getElementById('answer').textContent.length > 0,
                                   null, { timeout: 60000 });
        await page.click('#stop-button');
        await answerDone(page);
        const e = await askError(page);
        const m1 = await until('the cancellation', async () => {
            const m = await metrics();
            return m.get('sparsegate_engine_requests_cancelled')
                       === m0.get('sparsegate_engine_requests_cancelled') + 1
                && m.get('sparsegate_active_requests') === 0 && m;
        });
        check('ui_stop_cancels', e && e.kind === 'stopped'
              && await page.isEnabled('#ask-button') && m1, JSON.stringify(e));
    });

    await test('ui_429_engine_busy', async () => {
        await idle();
        // one sequence running, then one queued, fill the engine
        const hold = [0, 1].map(() => new AbortController());
        const body = JSON.stringify({ messages: [{ role: 'user', content: 'hold' }],
                                      max_tokens: 600, ignore_eos: true, stream: true });
        const streams = [];
        for (const [i, c] of hold.entries()) {
            streams.push(fetch(`${A}/v1/chat/completions`, {
                method: 'POST', body, signal: c.signal,
                headers: { Authorization: `Bearer ${KEY}`,
                           'Content-Type': 'application/json' },
            }).then((r) => r.body.getReader().read()).catch(() => null));
            await until(i ? 'a full queue' : 'a running sequence', async () => {
                const m = await metrics();
                return m.get('sparsegate_running_sequences') === 1
                    && m.get('sparsegate_queue_depth') === i;
            });
        }
        await ask(page, 'Is the engine busy?', 8);
        await answerDone(page);
        const e = await askError(page);
        hold.forEach((c) => c.abort());
        await Promise.all(streams);
        check('ui_429_engine_busy', e && e.kind === 'busy' && /busy/.test(e.text)
              && /queue is full/.test(e.text), JSON.stringify(e));
        await idle();
    });

    await test('ui_engine_view_matches_metrics_after', async () => {
        await compareWithMetrics(page, 'ui_engine_view_matches_metrics_after');
    });

    // gateway B: the store is down, then the gateway goes
    const pb = await newPage(B);

    await test('ui_store_error', async () => {
        const n = await noticeOf(pb, 'store', 15000);
        await ask(pb, 'Anything?', 8);
        await answerDone(pb);
        const e = await askError(pb);
        check('ui_store_error', /passage store failed/.test(n)
              && e && e.kind === 'store' && /store/.test(e.text),
              `notice ${n}, ask ${JSON.stringify(e)}`);
        await pb.screenshot({ path: join(SHOTS, 'store-error.png') });
    });

    await test('ui_gateway_down', async () => {
        process.kill(Number(process.env.UI_PID_B), 'SIGTERM');
        await pb.waitForFunction(() => document.getElementById('gateway-state')
            .dataset.state === 'down', null, { timeout: 15000 });
        const notice = await pb.evaluate(() => ({
            kind: document.getElementById('notice').dataset.kind,
            text: document.getElementById('notice').textContent }));
        await ask(pb, 'Still there?', 8);
        await answerDone(pb);
        const e = await askError(pb);
        check('ui_gateway_down', notice.kind === 'down' && /Cannot reach/.test(notice.text)
              && e && e.kind === 'down', `notice ${JSON.stringify(notice)}, ask ${JSON.stringify(e)}`);
        await pb.screenshot({ path: join(SHOTS, 'gateway-down.png') });
    });

    check('ui_no_page_errors', errors.length === 0, errors.join('; '));
} finally {
    await browser.close();
}
process.exit(failed ? 1 : 0);
