// The Ask view: a question to /v1/rag, its answer streamed, the passages
// the prompt held listed beside it, and the usage line.

import { ApiError, getJSON, request, showMessage, streamEvents } from './api.js';

const $ = (id) => document.getElementById(id);

let running = null;          // the AbortController of the question in flight

export async function loadCollections(notify) {
    const select = $('collection');
    try {
        const list = await getJSON('/v1/collections');
        const keep = select.value;
        select.replaceChildren(new Option('every collection', ''));
        for (const c of list.data) {
            select.add(new Option(`${c.id} (${c.passages} passages)`, c.id));
        }
        if (keep && [...select.options].some((o) => o.value === keep)) {
            select.value = keep;
        } else if (list.data.length > 0) {
            select.value = list.data[0].id;
        }
        select.dataset.loaded = String(list.data.length);
        return true;
    } catch (e) {
        notify(e);
        return false;
    }
}

const showError = (e) => showMessage($('ask-error'), e);

function citationItem(c) {
    const li = document.createElement('li');
    li.className = 'citation';
    li.dataset.id = c.id;
    const head = document.createElement('button');
    head.type = 'button';
    head.className = 'citation-head';
    const title = document.createElement('span');
    title.className = 'title';
    title.textContent = c.title || c.doc_id || c.id;
    const meta = document.createElement('span');
    meta.className = 'meta';
    const where = c.rank === null || c.rank === undefined
        ? 'shared block' : `rank ${c.rank + 1}`;
    meta.textContent = `${c.id} · score ${Number(c.score).toFixed(2)} · `
        + `${where} · ${c.tokens} tokens`;
    head.append(title, meta);
    const text = document.createElement('p');
    text.className = 'passage';
    text.hidden = true;
    text.textContent = c.text ?? '';
    head.addEventListener('click', () => {
        text.hidden = !text.hidden;
        li.classList.toggle('open', !text.hidden);
    });
    li.append(head, text);
    return li;
}

function showCitations(cites) {
    const ol = $('citations');
    // retrieved passages first, best first; then the shared block
    const ranked = cites.filter((c) => c.rank !== null && c.rank !== undefined)
        .sort((a, b) => a.rank - b.rank);
    const shared = cites.filter((c) => c.rank === null || c.rank === undefined);
    ol.replaceChildren(...ranked.concat(shared).map(citationItem));
    $('citation-count').textContent = `${ranked.length} retrieved, `
        + `${shared.length} of the collection's shared block`;
}

function formatSeconds(s) {
    return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`;
}

function showUsage(u, t) {
    const p = $('usage');
    const parts = [];
    if (u) {
        const cached = u.prompt_tokens_details?.cached_tokens ?? 0;
        parts.push(`${u.prompt_tokens} prompt tokens (${cached} cached)`,
                   `${u.completion_tokens} completion tokens`);
        p.dataset.prompt = u.prompt_tokens;
        p.dataset.cached = cached;
        p.dataset.completion = u.completion_tokens;
    }
    if (t.first !== null) {
        parts.push(`first token after ${formatSeconds((t.first - t.start) / 1000)}`);
        const n = u ? u.completion_tokens : t.chunks;
        const span = (t.end - t.first) / 1000;
        if (n > 1 && span > 0) {
            parts.push(`${((n - 1) / span).toFixed(1)} tokens/s`);
        }
    }
    p.textContent = parts.join(' · ');
}

function setRunning(on) {
    $('ask-button').disabled = on;
    $('stop-button').disabled = !on;
    $('ask-state').textContent = on ? 'generating…' : '';
    document.body.dataset.asking = on ? '1' : '';
}

async function ask(ev) {
    ev.preventDefault();
    if (running) return;
    const question = $('question').value.trim();
    if (!question) return;

    showError(null);
    $('answer').textContent = '';
    $('answer').dataset.done = '';
    $('thinking').textContent = '';
    $('thinking-box').hidden = true;
    $('citations').replaceChildren();
    $('citation-count').textContent = '';
    $('usage').textContent = '';

    const body = {
        question,
        stream: true,
        stream_options: { include_usage: true },
        citation_text: true,
        max_tokens: Number($('max-tokens').value) || 256,
        temperature: Number($('temperature').value),
    };
    const collection = $('collection').value;
    if (collection) body.collection = collection;

    const t = { start: performance.now(), first: null, end: null, chunks: 0 };
    let usage = null;
    let finish = null;
    running = new AbortController();
    setRunning(true);
    try {
        const res = await request('/v1/rag', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify(body),
            signal: running.signal,
        });
        await streamEvents(res, (chunk) => {
            if (chunk.citations) showCitations(chunk.citations);
            if (chunk.usage) usage = chunk.usage;
            const choice = chunk.choices && chunk.choices[0];
            if (!choice) return;
            const d = choice.delta || {};
            // thinking (reasoning_content) apart from the answer
            if (d.reasoning_content) {
                $('thinking-box').hidden = false;
                $('thinking').textContent += d.reasoning_content;
            }
            if (d.content) {
                $('answer').textContent += d.content;
            }
            if (d.content || d.reasoning_content) {
                t.chunks++;
                if (t.first === null) t.first = performance.now();
                t.end = performance.now();
            }
            if (choice.finish_reason) finish = choice.finish_reason;
        });
        t.end = t.end ?? performance.now();
        $('answer').dataset.done = finish || 'stop';
        showUsage(usage, t);
        $('ask-state').textContent = '';
    } catch (e) {
        if (e.name === 'AbortError') {
            showError(new ApiError('stopped', 'Stopped: the gateway cancels the '
                                   + 'generation.'));
        } else {
            showError(e instanceof ApiError ? e
                      : new ApiError('error', `Unexpected: ${e.message}`));
        }
        if (t.first !== null) showUsage(usage, t);
    } finally {
        running = null;
        setRunning(false);
    }
}

export function setupAsk() {
    $('ask-form').addEventListener('submit', ask);
    $('stop-button').addEventListener('click', () => {
        if (running) running.abort();
    });
    $('question').addEventListener('keydown', (e) => {
        if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
            $('ask-form').requestSubmit();
        }
    });
}
