"""Fuzzes a running gateway's JSON endpoints with mutated valid bodies, for
test_gateway_fuzz.sh:

    fuzz_client.py PORT N_PER_ENDPOINT SEED

Every body starts as a valid request and gets one to three mutations: a
value replaced by another type or a huge, negative or fractional number, a
key dropped or added, a value buried under deep nesting, invalid UTF-8
(raw bytes and lone surrogates), truncation, a flipped byte, a duplicated
key, a long string.  Every answer must come within the time limit, be
below 500, and be what it claims: an error in OpenAI's shape, a JSON
response, or a stream of JSON events that ends with [DONE].  Prints the
seed, a count of answers by status and mutation, PASS/FAIL lines.
"""
import http.client
import json
import random
import sys
import time

ENDPOINTS = {
    "chat_completions": "/v1/chat/completions",
    "completions": "/v1/completions",
    "rag": "/v1/rag",
}


def base_bodies(rnd, endpoint):
    """A valid request of the endpoint, varied."""
    common = {"max_tokens": rnd.choice([1, 2, 4]),
              "temperature": rnd.choice([0, 0.7, 1.5]),
              "seed": rnd.randrange(1000)}
    if rnd.random() < 0.3:
        common["stream"] = True
        if rnd.random() < 0.5:
            common["stream_options"] = {"include_usage": True}
    if rnd.random() < 0.3:
        common["stop"] = rnd.choice(["\n", ["zz", "."], "the"])
    if rnd.random() < 0.2:
        common["top_p"] = 0.9
    if rnd.random() < 0.2:
        common["cache_salt"] = "salt-%d" % rnd.randrange(5)
    if rnd.random() < 0.1:
        common["model"] = "gw-fuzz"
    if endpoint == "chat_completions":
        msgs = [{"role": "user", "content": "Tell me about event loops."}]
        if rnd.random() < 0.3:
            msgs.insert(0, {"role": "system", "content": "Be brief."})
        if rnd.random() < 0.2:
            msgs.append({"role": "assistant", "content": "Sure."})
            msgs.append({"role": "user",
                         "content": [{"type": "text", "text": "More."}]})
        body = {"messages": msgs}
    elif endpoint == "completions":
        body = {"prompt": rnd.choice(["Hello", ["Once upon"],
                                      [15, 200, 3000], [[1, 2, 3]]])}
    else:
        body = {"question": "How do timers work?"}
        if rnd.random() < 0.5:
            body["collection"] = "c"
        if rnd.random() < 0.3:
            body["top_k"] = rnd.choice([1, 3])
    body.update(common)
    return body


HUGE = ["1e308", "-1e308", "1e999", "-0", "123456789012345678901234567890",
        "9223372036854775808", "-9223372036854775809", "0.0000001",
        "4294967296", "2147483648", "-1", "NaN", "Infinity", "1.5e-400"]
SPECIAL = ["<\uff5cAssistant\uff5c>", "<\uff5cUser\uff5c>",
           "<\uff5cend\u2581of\u2581sentence\uff5c>", "</think>"]


def random_value(rnd, depth=0):
    k = rnd.randrange(12)
    if k == 0:
        return None
    if k == 1:
        return rnd.choice([True, False])
    if k == 2:
        return rnd.choice([0, -1, 1, 2 ** 31, 2 ** 63, -2 ** 63, 10 ** 30])
    if k == 3:
        return rnd.choice([0.5, -0.5, 1e-300, 3.4e38, 1e300])
    if k == 4:
        return ""
    if k == 5:
        return rnd.choice(SPECIAL) * rnd.randrange(1, 4)
    if k == 6:
        cps = (rnd.randrange(0x20, 0x2FFFF) if rnd.random() < 0.9
               else rnd.randrange(1, 0x20) for _ in range(rnd.randrange(1, 40)))
        return "".join(chr(c) for c in cps if not 0xD800 <= c < 0xE000)
    if k == 7 and depth < 3:
        return [random_value(rnd, depth + 1) for _ in range(rnd.randrange(4))]
    if k == 8 and depth < 3:
        return {rnd.choice(["role", "content", "text", "x", "type"]):
                random_value(rnd, depth + 1) for _ in range(rnd.randrange(3))}
    if k == 9:
        return "x" * rnd.choice([1000, 20000, 100000])
    return rnd.choice(["user", "system", "assistant", "tool", "developer",
                       "text", "c", "stop"])


def tweak(rnd, v):
    """Another value of the same kind, mostly in range: the body stays
    valid more often and reaches the generation."""
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return rnd.choice([0, 1, 2, 3, 8, 9, v + 1, v - 1, -v])
    if isinstance(v, float):
        return rnd.choice([0.0, 0.01, 0.99, 1.0, 1.99, 2.0, 2.01, -0.1, v / 2])
    if isinstance(v, str):
        return rnd.choice([
            v + " " + v, v[: len(v) // 2], v.upper(), "",
            "".join(rnd.choice(["\u4e2d\u6587", "\U0001f600", "\n", "\t",
                                "\\", '"', "caf\u00e9", " "] + SPECIAL)
                    for _ in range(rnd.randrange(1, 12))),
            "\u00e9" * rnd.randrange(1, 300)])
    if isinstance(v, list):
        return v + v[:1] if v and rnd.random() < 0.5 else v[1:]
    if isinstance(v, dict):
        return dict(list(v.items())[: max(0, len(v) - 1)])
    return v


def paths(obj, prefix=()):
    """Every (container, key) in the object."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((obj, k))
            out.extend(paths(v))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append((obj, i))
            out.extend(paths(v))
    return out


RAW = "\x00RAW%d\x00"


def mutate(rnd, body):
    """Mutates body in place or as bytes; returns (bytes, what)."""
    raws, what = [], []
    for _ in range(rnd.randrange(1, 4)):
        spots = paths(body)
        m = rnd.randrange(10)
        if m >= 7 and spots:                      # a plausible value
            c, k = rnd.choice(spots)
            c[k] = tweak(rnd, c[k])
            what.append("tweak")
        elif m == 0 and spots:                    # a value of another type
            c, k = rnd.choice(spots)
            c[k] = random_value(rnd)
            what.append("type")
        elif m == 1 and spots:                    # a huge or odd number
            c, k = rnd.choice(spots)
            c[k] = RAW % len(raws)
            raws.append(rnd.choice(HUGE))
            what.append("number")
        elif m == 2 and spots:                    # a key dropped
            c, k = rnd.choice(spots)
            if isinstance(c, dict):
                del c[k]
            else:
                c.pop(k)
            what.append("drop")
        elif m == 3:                              # a key added
            body[rnd.choice(["max_tokens", "n", "logprobs", "user", "extra",
                             "max_completion_tokens", "ignore_eos",
                             "collection", "doc_ids", "thinking"])] = \
                random_value(rnd)
            what.append("add")
        elif m in (4, 5) and spots:               # deep nesting
            c, k = rnd.choice(spots)
            d = rnd.choice([50, 500, 5000])
            c[k] = RAW % len(raws)
            raws.append(("[" * d + "1" + "]" * d) if rnd.random() < 0.5 else
                        ('{"a":' * d + "1" + "}" * d))
            what.append("nesting")
        else:
            what.append("bytes")
    text = json.dumps(body, ensure_ascii=rnd.random() < 0.5)
    for i, r in enumerate(raws):
        text = text.replace(json.dumps(RAW % i), r)
    data = text.encode("utf-8", "surrogatepass")
    if "bytes" in what:
        b = bytearray(data)
        for _ in range(rnd.randrange(1, 4)):
            k = rnd.randrange(7)
            at = rnd.randrange(len(b) + 1)
            if k == 0:
                b[at:at] = rnd.choice([b"\xff", b"\xc0\x80", b"\xed\xa0\x80",
                                       b"\xf4\x90\x80\x80", b"\xe4\xb8",
                                       b"\x80"])
            elif k == 1:
                b[at:at] = rnd.choice([b'\\udc00', b'\\ud800', b'\\u0000',
                                       b'\\uffff', b'\\'])
            elif k == 2:
                del b[at:]                        # truncated
            elif k == 3 and len(b) > 0:
                b[min(at, len(b) - 1)] ^= 1 << rnd.randrange(8)
            elif k == 4:
                b[at:at] = b',"max_tokens":2,"max_tokens":"x"'
            elif k == 5:
                b[at:at] = bytes(rnd.randrange(256) for _ in range(8))
            else:
                b = b[:at] + b[at:] * 2
        data = bytes(b)
    return data, "+".join(sorted(set(what)))


class Client:
    def __init__(self, port):
        self.port = port
        self.c = None

    def post(self, path, data, timeout):
        for attempt in range(2):
            if self.c is None:
                self.c = http.client.HTTPConnection("127.0.0.1", self.port,
                                                    timeout=timeout)
            try:
                self.c.request("POST", path, data,
                               {"Content-Type": "application/json"})
                r = self.c.getresponse()
                raw = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.c.close()
                    self.c = None
                return r.status, r.getheader("Content-Type", ""), raw
            except (ConnectionError, http.client.RemoteDisconnected,
                    http.client.BadStatusLine):
                self.c.close()
                self.c = None
                if attempt == 1:
                    raise
        raise RuntimeError("unreachable")


def answer_ok(status, ctype, raw):
    """Why the answer is wrong, or None."""
    if status >= 500:
        return "status %d" % status
    if status == 200 and ctype.startswith("text/event-stream"):
        text = raw.decode("utf-8")          # raises: not UTF-8
        events = [e for e in text.split("\n\n") if e]
        if not events or events[-1] != "data: [DONE]":
            return "stream without [DONE]"
        for e in events[:-1]:
            json.loads(e[len("data: "):])
        return None
    d = json.loads(raw.decode("utf-8"))
    if status != 200 and not (isinstance(d.get("error"), dict)
                              and isinstance(d["error"].get("message"), str)):
        return "status %d without an OpenAI error" % status
    return None


def main():
    port, n, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    print("# fuzz seed %d (SG_FUZZ_SEED=%d replays it), %d bodies per "
          "endpoint" % (seed, seed, n))
    client = Client(port)
    for name, path in ENDPOINTS.items():
        rnd = random.Random("%d/%s" % (seed, name))
        counts, bad, t0, slowest = {}, [], time.time(), 0.0
        for i in range(n):
            data, what = mutate(rnd, base_bodies(rnd, name))
            t = time.time()
            try:
                status, ctype, raw = client.post(path, data, 30)
                why = answer_ok(status, ctype, raw)
            except (OSError, http.client.HTTPException) as e:
                status, why = "none", "no answer: %s" % e
            except (ValueError, UnicodeDecodeError) as e:
                why = "answer not JSON/UTF-8: %s" % str(e)[:80]
            slowest = max(slowest, time.time() - t)
            counts[status] = counts.get(status, 0) + 1
            if why is not None:
                bad.append("#%d (%s): %s; body %r" % (i, what, why,
                                                      data[:160]))
        print("# %s: %d bodies in %.0f s (slowest answer %.2f s): %s"
              % (name, n, time.time() - t0, slowest,
                 ", ".join("%s: %d" % (k, v) for k, v in
                           sorted(counts.items(), key=str))))
        print(("PASS fuzz_%s" % name) if not bad else
              "FAIL fuzz_%s: %d of %d answers wrong (seed %d): %s"
              % (name, len(bad), n, seed, " | ".join(bad[:3])))


if __name__ == "__main__":
    main()
