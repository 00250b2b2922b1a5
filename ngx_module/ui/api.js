// The gateway's API as the page uses it: the API key (typed once, kept in
// this browser), requests with it as the Bearer token, and what a failed
// request means in words.

const KEY = 'sparsegate.apiKey';

export function apiKey() {
    try {
        return localStorage.getItem(KEY) || '';
    } catch {
        return '';
    }
}

export function setApiKey(key) {
    try {
        if (key) localStorage.setItem(KEY, key);
        else localStorage.removeItem(KEY);
    } catch {
        /* storage closed (private mode): the key lives until reload */
    }
    memoryKey = key;
}

let memoryKey = null;

function currentKey() {
    return memoryKey !== null ? memoryKey : apiKey();
}

// A failed request, with what the page tells its reader.
export class ApiError extends Error {
    constructor(kind, message, status = 0, retryAfter = 0) {
        super(message);
        this.kind = kind;          // down, auth, busy, store, server, ...
        this.status = status;
        this.retryAfter = retryAfter;
    }
}

// fetch() with the key; resolves to the Response when it is 2xx, else
// throws an ApiError that says what went wrong.
export async function request(path, init = {}) {
    const headers = new Headers(init.headers || {});
    const key = currentKey();
    if (key) headers.set('Authorization', `Bearer ${key}`);
    let res;
    try {
        res = await fetch(path, { ...init, headers, cache: 'no-store' });
    } catch (e) {
        if (e.name === 'AbortError') throw e;
        throw new ApiError('down', `Cannot reach the gateway at ${location.host}: `
                           + 'it is down or the network is.');
    }
    if (res.ok) return res;
    throw await errorOf(res, key !== '');
}

async function errorOf(res, hadKey) {
    let message = `HTTP ${res.status}`;
    let type = '', code = '';
    try {
        const body = await res.json();
        if (body && body.error) {
            message = body.error.message || message;
            type = body.error.type || '';
            code = body.error.code || '';
        }
    } catch {
        /* not JSON: nginx's own page, a proxy's */
    }
    const retry = Number(res.headers.get('Retry-After')) || 0;
    if (res.status === 401) {
        return new ApiError('auth', hadKey
            ? `The gateway refused this API key (${message}). Type another above.`
            : 'This gateway asks for an API key: type it in the key field above.',
            401);
    }
    if (res.status === 429) {
        return new ApiError('busy', `The engine is busy: ${message}. `
            + `Try again${retry ? ` in ${retry} s` : ' shortly'}.`, 429, retry);
    }
    if (code === 'store_error' || (code === 'timeout' && /store/.test(message))) {
        return new ApiError('store', `The passage store failed: ${message}`,
                            res.status);
    }
    return new ApiError(res.status >= 500 ? 'server' : 'request',
                        `${message} (HTTP ${res.status}${type ? `, ${type}` : ''})`,
                        res.status);
}

// Shows an error (its message, its kind as data-kind) in the element p, or
// hides p when e is null.
export function showMessage(p, e) {
    p.hidden = !e;
    p.textContent = e ? e.message : '';
    if (e) p.dataset.kind = e.kind || 'error';
    else delete p.dataset.kind;
}

export async function getJSON(path) {
    return (await request(path)).json();
}

// Server-sent events of a streamed response: calls onEvent(object) for
// each "data:" event until "[DONE]".  An error event mid-stream throws.
export async function streamEvents(res, onEvent) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
            const event = buf.slice(0, end);
            buf = buf.slice(end + 2);
            const data = event.split('\n')
                .filter((l) => l.startsWith('data:'))
                .map((l) => l.slice(5).replace(/^ /, ''))
                .join('\n');
            if (data === '') continue;
            if (data === '[DONE]') return;
            const obj = JSON.parse(data);
            if (obj.error) {
                throw new ApiError(obj.error.code === 'store_error' ? 'store'
                                   : 'server', obj.error.message);
            }
            onEvent(obj);
        }
    }
    throw new ApiError('down', 'The stream ended before its end: the gateway '
                       + 'closed the connection.');
}
