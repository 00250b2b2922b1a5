// DeepSeek-V3.2's chat encoding written again, in JavaScript, from the
// rules its model repository publishes (encoding/encoding_dsv32.py and its
// test_output.txt): an independent check of the gateway's C encoder.
//
//   prompt(messages, { thinking, tools, schema }) -> the prompt string
//   pyDumps(value)                                -> Python's
//                                                    json.dumps(value,
//                                                    ensure_ascii=False)
//
// The rules: BOS; system content as is, then "\n\n" + the tools block and
// "\n\n" + the response-format block when it carries them; a user message
// is "<｜User｜>" + content + "<｜Assistant｜>" + "<think>" when it is the
// last user message in thinking mode, else "</think>"; an assistant
// message is [its reasoning + "</think>" when it comes after the last user
// message in thinking mode] + content + its calls as a DSML block + EOS;
// tool results follow their assistant message inside
// "\n\n<function_results>" ... "\n</function_results>", each as
// "\n<result>" + content + "</result>", then "\n\n<think>" (thinking, at or
// after the last user message) or "\n\n</think>".
const DSML = '｜DSML｜';
const BOS = '<｜begin▁of▁sentence｜>';
const EOS = '<｜end▁of▁sentence｜>';

function pyString(s) {
    let out = '"';
    for (const ch of s) {
        const c = ch.codePointAt(0);
        if (ch === '"') out += '\\"';
        else if (ch === '\\') out += '\\\\';
        else if (ch === '\n') out += '\\n';
        else if (ch === '\r') out += '\\r';
        else if (ch === '\t') out += '\\t';
        else if (ch === '\b') out += '\\b';
        else if (ch === '\f') out += '\\f';
        else if (c < 0x20) out += '\\u' + c.toString(16).padStart(4, '0');
        else out += ch;
    }
    return out + '"';
}

// Python's repr of a float: the shortest digits that round-trip, an
// exponent (at least two digits) when the point sits 4+ places left of
// the first digit or more than 16 right of it.
function pyFloat(x) {
    if (Number.isInteger(x) && Math.abs(x) < 1e16) return String(x);
    const [mant, e] = x.toExponential().split('e');
    const exp = Number(e);
    const digits = mant.replace('-', '').replace('.', '');
    const sign = x < 0 ? '-' : '';
    if (exp + 1 <= -4 || exp + 1 > 16) {
        const m = digits.length > 1 ? digits[0] + '.' + digits.slice(1)
                                    : digits;
        return `${sign}${m}e${exp < 0 ? '-' : '+'}`
               + String(Math.abs(exp)).padStart(2, '0');
    }
    if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
    const int = digits.slice(0, exp + 1).padEnd(exp + 1, '0');
    const frac = digits.slice(exp + 1) || '0';
    return `${sign}${int}.${frac}`;
}

export function pyDumps(v) {
    if (v === null) return 'null';
    if (v === true) return 'true';
    if (v === false) return 'false';
    if (typeof v === 'number') return pyFloat(v);
    if (typeof v === 'string') return pyString(v);
    if (Array.isArray(v)) return '[' + v.map(pyDumps).join(', ') + ']';
    return '{' + Object.entries(v).map(([k, x]) => pyString(k) + ': '
                                        + pyDumps(x)).join(', ') + '}';
}

function toolsBlock(tools) {
    return '## Tools\n\n'
        + "You have access to a set of tools you can use to answer the user's"
        + ' question.\n'
        + `You can invoke functions by writing a "<${DSML}function_calls>"`
        + ' block like the following as part of your reply to the user:\n'
        + `<${DSML}function_calls>\n`
        + `<${DSML}invoke name="$FUNCTION_NAME">\n`
        + `<${DSML}parameter name="$PARAMETER_NAME" string="true|false">`
        + `$PARAMETER_VALUE</${DSML}parameter>\n`
        + '...\n'
        + `</${DSML}invoke>\n`
        + `<${DSML}invoke name="$FUNCTION_NAME2">\n`
        + '...\n'
        + `</${DSML}invoke>\n`
        + `</${DSML}function_calls>\n\n`
        + 'String and scalar parameters should be specified as is without any'
        + ' escaping or quotes, while lists and objects should use JSON'
        + ' format. The "string" attribute should be set to "true" for string'
        + ' type parameters and "false" for other types (numbers, booleans,'
        + ' arrays, objects).\n\n'
        + 'If the thinking_mode is enabled, then after function results you'
        + ' should strongly consider outputting a thinking block. Here is an'
        + ' example:\n\n'
        + `<${DSML}function_calls>\n...\n</${DSML}function_calls>\n\n`
        + '<function_results>\n...\n</function_results>\n\n'
        + '<think>...thinking about results</think>\n\n'
        + 'Here are the functions available in JSONSchema format:\n'
        + '<functions>\n'
        + tools.map((t) => pyDumps(t.function)).join('\n')
        + '\n</functions>\n';
}

function callsBlock(calls) {
    const invokes = calls.map((c) => {
        const args = JSON.parse(c.function.arguments);
        const params = Object.entries(args).map(([k, v]) =>
            `<${DSML}parameter name="${k}" string="${typeof v === 'string'}">`
            + (typeof v === 'string' ? v : pyDumps(v))
            + `</${DSML}parameter>`);
        return `<${DSML}invoke name="${c.function.name}">\n`
               + params.join('\n') + `\n</${DSML}invoke>`;
    });
    return `\n\n<${DSML}function_calls>\n` + invokes.join('\n')
           + `\n</${DSML}function_calls>`;
}

// messages: OpenAI's; tools and schema are put on the first message when
// it is a system one, else on an empty system message before it.
export function prompt(messages, { thinking = false, tools = null,
                                   schema = null } = {}) {
    let msgs = messages.map((m) => ({ ...m }));
    if (tools || schema) {
        if (msgs[0].role !== 'system') msgs.unshift({ role: 'system' });
        msgs[0].tools = tools;
        msgs[0].schema = schema;
    }
    let last = -1;
    msgs.forEach((m, i) => {
        if (m.role === 'user' || m.role === 'developer') last = i;
    });
    const think = (i) => (thinking && i === last ? '<think>' : '</think>');
    let out = BOS;
    msgs.forEach((m, i) => {
        const extras = () => (m.tools ? '\n\n' + toolsBlock(m.tools) : '')
            + (m.schema ? '\n\n## Response Format:\n\nYou MUST strictly'
               + ' adhere to the following schema to reply:\n'
               + pyDumps(m.schema) : '');
        if (m.role === 'system') {
            out += (m.content ?? '') + extras();
        } else if (m.role === 'developer') {
            out += '<｜User｜>' + extras() + "\n\n# The user's message is: "
                   + m.content + '<｜Assistant｜>' + think(i);
        } else if (m.role === 'user') {
            out += '<｜User｜>' + m.content + '<｜Assistant｜>' + think(i);
        } else if (m.role === 'assistant') {
            if (thinking && i > last)
                out += (m.reasoning_content ?? '') + '</think>';
            out += (m.content ?? '')
                   + (m.tool_calls?.length ? callsBlock(m.tool_calls) : '')
                   + EOS;
        } else if (m.role === 'tool') {
            let a = i - 1;
            while (msgs[a].role === 'tool') a--;
            const order = i - a, n = msgs[a].tool_calls.length;
            if (order === 1) out += '\n\n<function_results>';
            out += '\n<result>' + m.content + '</result>';
            if (order === n) {
                out += '\n</function_results>'
                       + (thinking && i >= last ? '\n\n<think>'
                                                : '\n\n</think>');
            }
        }
    });
    return out;
}
