"""How long one /v1/rag question holds up the worker: posts a question of
WORDS distinct words (8 letters each, none a stop word: WORDS * 9 bytes)
and asks /health every 5 ms until its answer comes, then as long again
with nothing else running.  Prints one line:
  SLOWEST_HEALTH_MS QUESTION_MS STATUS QUESTION_BYTES SLOWEST_IDLE_MS N
(N: /health answers while the question ran).  Used by
tests/integration/test_gateway_stores.sh and bench/rag_freeze.sh.

  python3 gateway_freeze.py PORT WORDS [COLLECTION]
"""
import http.client
import json
import sys
import threading
import time

port, words = int(sys.argv[1]), int(sys.argv[2])
collection = sys.argv[3] if len(sys.argv) > 3 else "man"


def word(i):
    s = "q"
    for _ in range(7):
        s += chr(97 + i % 26)
        i //= 26
    return s


question = " ".join(word(i) for i in range(words))
body = json.dumps({"question": question, "collection": collection,
                   "max_tokens": 1})


def sample(alive):
    h = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    worst, n = 0.0, 0
    while alive():
        t0 = time.monotonic()
        h.request("GET", "/health")
        h.getresponse().read()
        worst = max(worst, time.monotonic() - t0)
        n += 1
        time.sleep(0.005)
    return worst, n


res = {"status": 0, "t": 0.0}


def post():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.monotonic()
    c.request("POST", "/v1/rag", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    res["status"], res["t"] = r.status, time.monotonic() - t0


th = threading.Thread(target=post)
th.start()
busy, n = sample(th.is_alive)
th.join()
end = time.monotonic() + min(max(res["t"], 0.5), 10)
idle, _ = sample(lambda: time.monotonic() < end)
print("%d %d %d %d %d %d" % (busy * 1000, res["t"] * 1000, res["status"],
                             len(question), idle * 1000, n))
