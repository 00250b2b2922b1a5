"""The soak's driver (test_gateway_soak.sh, bench/soak.sh): N concurrent
streams (chat, completions and /v1/rag, streamed) against a running nginx
with its workers, a share of the clients leaving mid-stream at random
points, then the same load while one worker is killed (SIGKILL) mid-stream
and nginx is reloaded.  Between the phases, after an idle settle, the
workers are measured: open fds, VmRSS, the KV blocks in use beyond the
prefix cache, the active/running/queued/paused gauges.  Prints PASS/FAIL
lines and writes its numbers as JSON.

    soak_client.py PORT MASTER_PID PREFIX STREAMS SECONDS SEED LEAVE OUT
        [RSS_STEADY_MB]

SECONDS is each load phase's length (two clean phases, one with the kill
and the reload), LEAVE the share of requests whose client disconnects.
"""
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

BODIES = {
    "/v1/chat/completions": lambda r: {
        "messages": [{"role": "user", "content": "Tell me about %s."
                      % r.choice(["epoll", "timers", "sockets", "nginx"])}]},
    "/v1/completions": lambda r: {"prompt": "Event loop note %d:"
                                  % r.randrange(1000)},
    "/v1/rag": lambda r: {"question": r.choice(
        ["how does epoll report readiness", "what is an eventfd counter",
         "do nginx workers block", "timerfd expirations"]),
        "collection": "man"},
}


def now():
    return time.monotonic()


class Stream:
    """One request and what became of it."""

    def __init__(self, port, rnd, leave):
        self.path = rnd.choice(sorted(BODIES))
        self.body = BODIES[self.path](rnd)
        self.body.update({"max_tokens": rnd.randrange(8, 48),
                          "ignore_eos": True, "stream": True,
                          "temperature": 0.7, "seed": rnd.randrange(1 << 30)})
        if self.path == "/v1/rag":
            del self.body["ignore_eos"]     # not a field of /v1/rag
        # a leaving client goes after this many lines (0: before the
        # answer's first byte: while its request is queued or prefilled)
        self.leave_at = rnd.randrange(0, 30) if rnd.random() < leave else None
        self.port = port
        self.kind = None
        self.why = ""
        self.t0 = self.t1 = None

    def run(self):
        self.t0 = now()
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            self._run(c)
        except (OSError, http.client.HTTPException) as e:
            self.kind, self.why = "cut", repr(e)[:200]
        finally:
            c.close()
            self.t1 = now()

    def _run(self, c):
        c.request("POST", self.path, json.dumps(self.body),
                  {"Content-Type": "application/json"})
        if self.leave_at == 0:
            self.kind = "left"
            return
        r = c.getresponse()
        if r.status != 200:
            raw = r.read()
            try:
                msg = json.loads(raw)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                self.kind, self.why = "bad", "%d %r" % (r.status, raw[:200])
                return
            # refused (429 queue full, 503 out of memory): a clean error
            self.kind = "refused" if r.status in (429, 503) else "bad"
            self.why = "%d %s" % (r.status, msg[:120])
            return
        lines, last = 0, None
        while True:
            line = r.readline()
            if not line:
                break
            if not line.startswith(b"data: "):
                continue
            lines += 1
            last = line[6:].strip()
            if self.leave_at is not None and lines >= self.leave_at:
                self.kind = "left"
                return
            if last == b"[DONE]":
                break
            try:
                ev = json.loads(last.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                self.kind, self.why = "bad", "event %r" % last[:200]
                return
            if "error" in ev:
                self.kind, self.why = "error_event", str(ev["error"])[:160]
        if last == b"[DONE]":
            self.kind = self.kind or "done"
        elif self.kind != "error_event":
            self.kind = "cut"
            self.why = "%d events, the last %r" % (lines, (last or b"")[:80])


def client_loop(port, seed, leave, until, out, lock):
    rnd = random.Random(seed)
    while now() < until:
        s = Stream(port, rnd, leave)
        s.run()
        with lock:
            out.append(s)


def load(port, streams, seconds, seed, leave):
    """STREAMS clients, each sending one stream after another for SECONDS."""
    out, lock = [], threading.Lock()
    until = now() + seconds
    ts = [threading.Thread(target=client_loop,
                           args=(port, seed * 1000 + i, leave, until, out,
                                 lock), daemon=True)
          for i in range(streams)]
    for t in ts:
        t.start()
    return ts, out


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", path)
    r = c.getresponse()
    raw = r.read()
    c.close()
    return r.status, raw


def metrics(port):
    m = {}
    for line in get(port, "/metrics")[1].decode().splitlines():
        p = line.split()
        if len(p) == 2 and not line.startswith("#"):
            try:
                m[p[0]] = float(p[1])
            except ValueError:
                pass
    return m


def workers(master):
    """{pid: title} of nginx's workers (children of the master)."""
    w = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
            if ppid != master:
                continue
            with open("/proc/%s/cmdline" % d, "rb") as f:
                w[int(d)] = f.read().replace(b"\0", b" ").decode().strip()
        except (OSError, ValueError):
            pass
    return w


def fd_kinds(pid):
    """What a worker's fds are: {"socket": n, "/path": n, ...}."""
    k = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            t = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        t = t.split(":")[0] if ":" in t and not t.startswith("/") else t
        k[t] = k.get(t, 0) + 1
    return k


def measure(master):
    """{pid: {"fds": n, "rss_kb": n, "fd_kinds": {...}}} of the workers."""
    r = {}
    for pid in workers(master):
        try:
            kinds = fd_kinds(pid)
            fds = sum(kinds.values())
            with open("/proc/%d/status" % pid) as f:
                rss = next(int(l.split()[1]) for l in f
                           if l.startswith("VmRSS:"))
            r[pid] = {"fds": fds, "rss_kb": rss, "fd_kinds": kinds}
        except (OSError, StopIteration):
            pass
    return r


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))


GAUGES = ("sparsegate_active_requests", "sparsegate_running_sequences",
          "sparsegate_queue_depth", "sparsegate_paused_sequences")


def settle(port, master, n_workers, limit=60):
    """Waits (bounded) until the workers are idle: N_WORKERS of them, none
    shutting down, every gauge 0 and no KV block in use beyond the prefix
    cache.  Returns (seconds waited, the last metrics)."""
    t0 = now()
    m = {}
    while now() - t0 < limit:
        w = workers(master)
        try:
            m = metrics(port)
        except (OSError, http.client.HTTPException):
            m = {}
        busy = [g for g in GAUGES if m.get(g, 1) != 0]
        kv = m.get("sparsegate_kv_blocks_used", 1) - \
            m.get("sparsegate_kv_blocks_cached", 0)
        if len(w) == n_workers and \
                not any("shutting" in t for t in w.values()) and \
                not busy and kv == 0:
            break
        time.sleep(0.25)
    time.sleep(0.5)     # a last event in flight, fds closed after it
    return now() - t0, metrics(port)


def summary(streams):
    k = {}
    for s in streams:
        k[s.kind] = k.get(s.kind, 0) + 1
    return k


def check(name, ok, why=""):
    print("PASS %s" % name if ok else "FAIL %s: %s" % (name, why))
    sys.stdout.flush()
    return ok


def main(port, master, prefix, n, seconds, seed, leave, out_path,
         rss_steady_mb="8"):
    port, master, n, seed = int(port), int(master), int(n), int(seed)
    seconds, leave = float(seconds), float(leave)
    n_workers = len(workers(master))
    res = {"streams": n, "seconds": seconds, "seed": seed, "leave": leave,
           "workers": n_workers}
    print("# soak: %d streams, %d workers, %.0f s a phase, seed %d, %.0f%% "
          "of clients leave" % (n, n_workers, seconds, seed, leave * 100))

    # warm: every worker has served every kind once (a few rounds of all
    # three, n at once, so both workers get some)
    ts, warm = load(port, min(n, 8), 3, seed + 7, 0.0)
    for t in ts:
        t.join()
    settle(port, master, n_workers)
    s0 = measure(master)
    res["before"] = s0
    res["master_rss_kb_before"] = rss_kb(master)

    phases = []
    for ph in (1, 2):
        ts, got = load(port, n, seconds, seed + ph, leave)
        for t in ts:
            t.join()
        waited, m = settle(port, master, n_workers)
        snap = measure(master)
        phases.append({"streams": summary(got), "settle_s": round(waited, 1),
                       "workers": snap,
                       "kv_used": m.get("sparsegate_kv_blocks_used"),
                       "kv_cached": m.get("sparsegate_kv_blocks_cached"),
                       "gauges": {g: m.get(g) for g in GAUGES},
                       "bad": [(s.path, s.kind, s.why) for s in got
                               if s.kind not in ("done", "left", "refused",
                                                 "error_event")][:5]})
        print("# phase %d: %s; settled in %.1f s; workers %s" % (
            ph, summary(got), waited,
            {p: (v["fds"], v["rss_kb"]) for p, v in snap.items()}))
    res["phases"] = phases
    s1, s2 = phases[0]["workers"], phases[1]["workers"]
    ok_streams = all(not p["bad"] for p in phases)
    check("soak_streams_end_cleanly", ok_streams,
          "; ".join("phase %d: %s" % (i + 1, p["bad"])
                    for i, p in enumerate(phases) if p["bad"]))
    total = sum(sum(p["streams"].values()) for p in phases)
    done = sum(p["streams"].get("done", 0) for p in phases)
    left = sum(p["streams"].get("left", 0) for p in phases)
    check("soak_load_ran", done >= n and left >= n // 8,
          "%d streams, %d done, %d left mid-way" % (total, done, left))
    check("soak_same_workers", set(s0) == set(s1) == set(s2),
          "workers %s, then %s, then %s" % (sorted(s0), sorted(s1),
                                            sorted(s2)))
    # the SQLite store's pool opens its connections as queries first need
    # them (each holds the file and its -wal): those may add up to
    # 2 x the pool's size; no other kind of fd may be more than before (a
    # socket still open when the first snapshot was read, a connection
    # being served, can be gone at the end: fewer is not a leak)
    pooled, _, extra = os.environ.get("SOAK_POOLED", ":0").rpartition(":")

    def split(kinds):
        st = sum(v for k, v in kinds.items() if pooled and
                 k.startswith(pooled))
        return st, {k: v for k, v in kinds.items()
                    if not (pooled and k.startswith(pooled))}
    fds_ok = True
    for p in s0:
        a, rest_a = split(s0[p]["fd_kinds"])
        b, rest_b = split(s2.get(p, {}).get("fd_kinds", {}))
        fds_ok &= (all(v <= rest_a.get(k, 0) for k, v in rest_b.items())
                   and a <= b <= a + int(extra))
    res["fds_before"] = {p: v["fds"] for p, v in s0.items()}
    res["fds_after"] = {p: v["fds"] for p, v in s2.items()}
    check("soak_fds_return", fds_ok,
          "open fds before %s, after %s (the store's pool may add %s)" % (
              {p: v["fd_kinds"] for p, v in s0.items()},
              {p: v["fd_kinds"] for p, v in s2.items()}, extra))
    grow = {p: (s2[p]["rss_kb"] - s1[p]["rss_kb"]) // 1024
            for p in s0 if p in s1 and p in s2}
    res["rss_growth_phase2_mb"] = grow
    res["rss_growth_total_mb"] = {p: (s2[p]["rss_kb"] - s0[p]["rss_kb"])
                                  // 1024 for p in s0 if p in s2}
    check("soak_rss_steady", grow and max(grow.values()) <=
          int(rss_steady_mb),
          "VmRSS growth over the second phase %s MB (bound %s MB)"
          % (grow, rss_steady_mb))
    # from the warm workers to the end: the KV pool's pages as they are
    # first touched (at most its size) and the store pool's caches
    growth = res["rss_growth_total_mb"]
    bound = int(os.environ.get("SOAK_RSS_TOTAL_MB", "80"))
    check("soak_rss_bounded", growth and max(growth.values()) <= bound,
          "VmRSS growth since the warm-up %s MB (bound %d MB)"
          % (growth, bound))
    for i, p in enumerate(phases):
        kv = p["kv_used"] is not None and p["kv_used"] - p["kv_cached"] == 0
        check("soak_phase%d_idle" % (i + 1),
              kv and all(v == 0 for v in p["gauges"].values()),
              "kv used %s cached %s, gauges %s" % (p["kv_used"],
                                                   p["kv_cached"],
                                                   p["gauges"]))

    # chaos: the same load; a worker killed mid-stream, then a reload
    ts, got = load(port, n, seconds, seed + 3, leave)
    time.sleep(seconds * 0.3)
    m = metrics(port)
    victim = sorted(workers(master))[0]
    res["killed_pid"] = victim
    t_kill = now()
    os.kill(victim, signal.SIGKILL)
    print("# killed worker %d (%d requests active)" % (
        victim, m.get("sparsegate_active_requests", -1)))
    time.sleep(seconds * 0.3)
    conf = os.path.join(prefix, "conf", "nginx.conf")
    rl = subprocess.run(["nginx", "-p", prefix, "-c", conf, "-s", "reload"],
                        capture_output=True, text=True)
    t_reload = now()
    print("# nginx -s reload: exit %d %s" % (rl.returncode,
                                              rl.stderr.strip()[:200]))
    for t in ts:
        t.join()
    waited, m = settle(port, master, n_workers, limit=120)
    s3 = measure(master)
    res["master_rss_kb_after"] = rss_kb(master)
    k = summary(got)
    # cut: only streams under way on the killed worker when it died
    cut = [s for s in got if s.kind == "cut"]
    unexplained = [s for s in cut if not (s.t0 < t_kill <= s.t1 < t_kill + 5)]
    bad = [(s.path, s.kind, s.why) for s in got
           if s.kind not in ("done", "left", "refused", "error_event",
                             "cut")]
    res["chaos"] = {"streams": k, "settle_s": round(waited, 1),
                    "cut_by_kill": len(cut) - len(unexplained),
                    "reload_exit": rl.returncode, "workers": s3,
                    "kv_used": m.get("sparsegate_kv_blocks_used"),
                    "kv_cached": m.get("sparsegate_kv_blocks_cached"),
                    "gauges": {g: m.get(g) for g in GAUGES},
                    "after_reload": sum(1 for s in got if s.t0 > t_reload
                                        and s.kind == "done")}
    print("# chaos phase: %s; %d cut by the kill; settled in %.1f s; "
          "workers %s" % (k, len(cut) - len(unexplained), waited,
                          {p: (v["fds"], v["rss_kb"]) for p, v in s3.items()}))
    check("soak_kill_was_mid_stream", len(cut) >= 1,
          "no stream was cut: the killed worker %d served none" % victim)
    check("soak_chaos_streams_end_cleanly", not unexplained and not bad,
          "cut not by the kill: %s; other: %s" % (
              [(s.path, s.why) for s in unexplained][:4], bad[:4]))
    check("soak_reload_under_load", rl.returncode == 0 and
          res["chaos"]["after_reload"] >= 1 and victim not in s3 and
          not set(s3) & set(s0) and len(s3) == n_workers,
          "reload exit %d; %d streams done after it; workers before %s, "
          "after %s" % (rl.returncode, res["chaos"]["after_reload"],
                        sorted(s0), sorted(s3)))
    check("soak_chaos_idle",
          m.get("sparsegate_kv_blocks_used", 1) -
          m.get("sparsegate_kv_blocks_cached", 0) == 0
          and all(m.get(g) == 0 for g in GAUGES),
          "kv used %s cached %s, gauges %s" % (
              m.get("sparsegate_kv_blocks_used"),
              m.get("sparsegate_kv_blocks_cached"),
              {g: m.get(g) for g in GAUGES}))
    # new workers that served the same load hold what the old ones held
    fds0 = sorted(v["fds"] for v in s0.values())
    fds3 = sorted(v["fds"] for v in s3.values())
    check("soak_new_workers_fds", fds3 and
          max(fds3) <= min(fds0) + int(extra),
          "open fds of the first workers %s, of the new ones %s"
          % (fds0, fds3))
    # a new worker is forked from the reloaded master (the configuration
    # parsed twice): held to the first workers' warm size + the same
    # bound as their growth
    rss_old = max(v["rss_kb"] for v in s0.values())
    rss_new = max(v["rss_kb"] for v in s3.values()) if s3 else 0
    res["rss_new_vs_warm_mb"] = (rss_new - rss_old) // 1024
    check("soak_new_workers_rss", s3 and rss_new - rss_old <= bound * 1024,
          "VmRSS of the new workers %d KB, the first ones' when warm %d KB "
          "(bound +%d MB)" % (rss_new, rss_old, bound))
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    main(*sys.argv[1:])
