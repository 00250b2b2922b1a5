// Drives a running SparseGate gateway with the official `openai` npm client
// (a client nobody here wrote).  Called by test_gateway.sh with
//   GW_URL=http://127.0.0.1:PORT GW_MODEL=name node gateway_client.mjs [part]
// part: "api" (default: endpoints, streaming, errors, stop strings, prefix
// cache) or "concurrency" (32 simultaneous streams vs solo runs).
// Prints "PASS name" / "FAIL name: why" lines.
import OpenAI from 'openai';

const base = process.env.GW_URL;
const model = process.env.GW_MODEL;
const part = process.argv[2] || 'api';
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'none',
                            timeout: 120000, maxRetries: 0 });

let failed = 0;
const pass = (n) => console.log(`PASS ${n}`);
const fail = (n, why) => { failed++; console.log(`FAIL ${n}: ${why}`); };
const check = (n, ok, why) => (ok ? pass(n) : fail(n, why));

async function test(name, fn) {
    try {
        await fn();
    } catch (e) {
        fail(name, `threw ${e?.constructor?.name}: ${e?.message}`);
    }
}

async function expectError(name, cls, status, fn) {
    try {
        await fn();
        fail(name, 'no error');
    } catch (e) {
        check(name, e instanceof cls && e.status === status
                     && typeof e.message === 'string' && e.error,
              `got ${e?.constructor?.name} ${e?.status}: ${e?.message}`);
    }
}

const chatReq = (extra) => ({
    model, messages: [{ role: 'user', content: 'Tell me about nginx.' }],
    max_tokens: 12, temperature: 0, ignore_eos: true, ...extra,
});

async function streamText(params) {
    const stream = await client.chat.completions.create({ ...params,
                                                          stream: true });
    let text = '', finish = null, usage = null, chunks = 0, role = null;
    for await (const c of stream) {
        chunks++;
        if (c.usage) usage = c.usage;
        const ch = c.choices[0];
        if (!ch) continue;
        if (ch.delta?.role) role = ch.delta.role;
        if (ch.delta?.content) text += ch.delta.content;
        if (ch.finish_reason) finish = ch.finish_reason;
    }
    return { text, finish, usage, chunks, role };
}

async function api() {
    await test('openai_models_list', async () => {
        const list = await client.models.list();
        const ids = list.data.map((m) => m.id);
        check('openai_models_list', ids.length === 1 && ids[0] === model,
              `ids ${JSON.stringify(ids)}`);
        const one = await client.models.retrieve(model);
        check('openai_models_retrieve', one.id === model, JSON.stringify(one));
    });

    let solo = null;
    await test('openai_chat', async () => {
        const r = await client.chat.completions.create(chatReq());
        solo = r.choices[0].message.content;
        check('openai_chat', r.object === 'chat.completion'
              && r.model === model && typeof solo === 'string'
              && solo.length > 0 && r.choices[0].finish_reason === 'length'
              && r.usage.completion_tokens === 12
              && r.usage.prompt_tokens > 0
              && r.usage.total_tokens === r.usage.prompt_tokens + 12
              && typeof r.usage.prompt_tokens_details.cached_tokens
                 === 'number',
              JSON.stringify(r));
    });

    await test('openai_chat_stream', async () => {
        const s = await streamText(chatReq({
            stream_options: { include_usage: true } }));
        check('openai_chat_stream', s.text === solo && s.finish === 'length'
              && s.role === 'assistant' && s.usage
              && s.usage.completion_tokens === 12,
              `stream ${JSON.stringify(s)} vs ${JSON.stringify(solo)}`);
        const s2 = await streamText(chatReq());
        check('openai_chat_stream_no_usage', s2.usage === null
              && s2.text === solo, JSON.stringify(s2));
    });

    await test('openai_completions', async () => {
        const p = { model, prompt: 'The event loop', max_tokens: 10,
                    temperature: 0, ignore_eos: true };
        const r = await client.completions.create(p);
        const text = r.choices[0].text;
        check('openai_completions', r.object === 'text_completion'
              && text.length > 0 && r.usage.completion_tokens === 10
              && r.choices[0].finish_reason === 'length', JSON.stringify(r));
        const s = await client.completions.create({ ...p, stream: true });
        let st = '';
        for await (const c of s) st += c.choices[0]?.text ?? '';
        check('openai_completions_stream', st === text,
              `${JSON.stringify(st)} vs ${JSON.stringify(text)}`);
    });

    // Stop strings: cut where the string first appears, in both modes.
    await test('openai_stop', async () => {
        const p = { model, prompt: 'Once upon a time', max_tokens: 24,
                    temperature: 0, ignore_eos: true };
        const full = (await client.completions.create(p)).choices[0].text;
        const chars = [...full];
        if (chars.length < 8) {
            fail('openai_stop', `text too short: ${JSON.stringify(full)}`);
            return;
        }
        const stop = chars.slice(4, 7).join('');
        const want = full.slice(0, full.indexOf(stop));
        const r = await client.completions.create({ ...p, stop: [stop] });
        check('openai_stop', r.choices[0].text === want
              && r.choices[0].finish_reason === 'stop',
              `${JSON.stringify(r.choices[0])} want ${JSON.stringify(want)}`);
        const s = await client.completions.create({ ...p, stop, stream: true });
        let st = '', fin = null;
        for await (const c of s) {
            st += c.choices[0]?.text ?? '';
            fin = c.choices[0]?.finish_reason ?? fin;
        }
        check('openai_stop_stream', st === want && fin === 'stop',
              `${JSON.stringify(st)} (${fin}) want ${JSON.stringify(want)}`);
    });

    await expectError('openai_error_unknown_model', OpenAI.NotFoundError, 404,
        () => client.chat.completions.create(chatReq({ model: 'nope' })));
    await expectError('openai_error_bad_field', OpenAI.BadRequestError, 400,
        () => client.chat.completions.create(chatReq({ temperature: 7 })));
    await expectError('openai_error_no_messages', OpenAI.BadRequestError, 400,
        () => client.chat.completions.create({ model, messages: [] }));
    await expectError('openai_error_context', OpenAI.BadRequestError, 400,
        () => client.completions.create({ model, prompt: 'x',
                                          max_tokens: 100000 }));

    const secure = (key) => new OpenAI({ baseURL: `${base}/secure/v1`,
                                         apiKey: key, maxRetries: 0 });
    await expectError('openai_error_auth', OpenAI.AuthenticationError, 401,
        () => secure('sk-wrong').models.list());
    await test('openai_auth_ok', async () => {
        const l = await secure('sk-test-2').models.list();
        check('openai_auth_ok', l.data[0].id === model, JSON.stringify(l));
    });

    // The same long prompt twice: the second is served by the prefix cache.
    await test('openai_prefix_cache', async () => {
        const words = [];
        for (let i = 0; i < 300; i++) words.push(`word${i}`);
        const p = { model, prompt: words.join(' '), max_tokens: 2,
                    temperature: 0 };
        const a = await client.completions.create(p);
        const b = await client.completions.create(p);
        const ca = a.usage.prompt_tokens_details.cached_tokens;
        const cb = b.usage.prompt_tokens_details.cached_tokens;
        check('openai_prefix_cache', a.usage.prompt_tokens > 128 && cb >= 64
              && cb <= b.usage.prompt_tokens && b.choices[0].text
                 === a.choices[0].text,
              `cached ${ca} then ${cb} of ${b.usage.prompt_tokens}`);
    });
}

// 32 simultaneous streams, each seeded: every one must match its solo run.
async function concurrency() {
    const n = 32;
    const req = (i) => ({
        model, max_tokens: 16, seed: 1000 + i,
        temperature: Number(process.env.GW_TEMPERATURE ?? 0.9),
        ignore_eos: true,
        messages: [{ role: 'user', content: `Question number ${i % 5}?` }],
    });
    const solo = [];
    for (let i = 0; i < n; i++) solo.push((await streamText(req(i))).text);
    const t0 = Date.now();
    const all = await Promise.all(
        Array.from({ length: n }, (_, i) => streamText(req(i))));
    const ms = Date.now() - t0;
    const bad = all.map((s, i) => (s.text === solo[i] && s.finish === 'length'
                                   ? -1 : i)).filter((i) => i >= 0);
    check('concurrent_32_streams_match_solo', bad.length === 0,
          `${bad.length} differ, e.g. #${bad[0]}: `
          + `${JSON.stringify(all[bad[0]]?.text)} vs `
          + `${JSON.stringify(solo[bad[0]])}`);
    const distinct = new Set(solo).size;
    check('concurrent_seeds_independent', distinct > n / 2,
          `only ${distinct} distinct texts of ${n}`);
    console.log(`# 32 concurrent streams of 16 tokens in ${ms} ms`);
}

if (part === 'concurrency') await concurrency(); else await api();
process.exit(failed ? 1 : 0);
