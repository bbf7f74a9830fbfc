#!/usr/bin/env python3
"""sample.py DELAY WINDOW OUT: after DELAY s, measure CPU (utime+stime) of the
d-engine-server pids in $ABDIR/node*.pid plus the bench (pid file bench.pid),
and the server counters (grpc Put/Get OK) over WINDOW s. Writes JSON to OUT."""
import glob, json, os, re, sys, time, urllib.request
delay, window, out = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
abdir = os.environ.get("ABDIR", "/tmp/admit_ab")
tck = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / tck, int(f[7])
    except Exception:
        return 0.0, 0
def scrape(port):
    try:
        t = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except Exception:
        return {}
    d = {}
    for line in t.splitlines():
        if line.startswith("#"): continue
        m = re.match(r'(\S+?)(\{.*\})?\s+(\S+)$', line)
        if m: d[(m.group(1) + (m.group(2) or ""))] = float(m.group(3))
    return d
time.sleep(delay)
pids = {os.path.basename(p)[:-4]: int(open(p).read()) for p in glob.glob(f"{abdir}/*.pid")}
def snap():
    return {k: cpu(v)[0] for k, v in pids.items()}, {n: scrape(19100 + n) for n in (1, 2, 3)}, time.time(), {k: cpu(v)[1] for k, v in pids.items()}
c0, m0, t0, f0 = snap()
time.sleep(window)
c1, m1, t1, f1 = snap()
def delta(key_re):
    s = 0.0
    for n in (1, 2, 3):
        for k, v in m1[n].items():
            if re.search(key_re, k): s += v - m0[n].get(k, 0.0)
    return s
res = {"window_s": t1 - t0, "cpu_s": {k: c1[k] - c0[k] for k in c0},
       "puts": delta(r'^dengine_proposals_total\{result="ok"'),
       "gets": delta(r'^dengine_grpc_requests_total\{(?=.*/Get")(?=.*code="OK")'),
       "overloaded": delta(r'^dengine_overloaded_total'),
       }
# server-side latency histograms (leader), bucket deltas
def hist(name, must=""):
    b = {}
    for n in (1, 2, 3):
        for k, v in m1[n].items():
            if not k.startswith(name + "_bucket{") or must not in k: continue
            le = re.search(r'le="([^"]+)"', k).group(1)
            b[le] = b.get(le, 0) + v - m0[n].get(k, 0.0)
    return b
res["grpc_put_hist"] = hist("dengine_grpc_request_duration_seconds", "Put")
res["grpc_get_hist"] = hist("dengine_grpc_request_duration_seconds", "/Get\"")
res["proposal_hist"] = hist("dengine_proposal_duration_seconds")
for nm in ("dengine_wal_sync_duration_seconds", "dengine_apply_duration_seconds", "dengine_read_index_duration_seconds"):
    res[nm] = hist(nm)
ops = res["puts"] + res["gets"]
res["minflt_per_op"] = {k: (f1[k] - f0[k]) / ops if ops else None for k in f0}
tot = sum(res["cpu_s"].values())
res["cpu_total_s"] = tot
res["cpu_us_per_op"] = tot / ops * 1e6 if ops else None
json.dump(res, open(out, "w"), indent=1)
print(json.dumps({k: res[k] for k in ("window_s", "cpu_s", "puts", "gets", "overloaded", "cpu_us_per_op", "minflt_per_op")}))
