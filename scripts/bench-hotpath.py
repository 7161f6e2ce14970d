#!/usr/bin/env python3
"""Hot-path benchmark: certctl-server over HTTP (wrk) against its own SQL (pgbench), one run.

What it does (`make bench-hotpath` builds the release binaries first, then runs this):

1. starts a throw-away PostgreSQL 15 cluster (fast durability, `pg_stat_statements` loaded) and
   a release `certctl-server` on it (rate limits off, server key generation, demo seed), and
   seeds the load-test fleet with `certctl-loadtest seed` (10,000 certificates, 5,000 agents);
2. renews the whole 10,000-certificate fleet with one bulk-renew call and reports
   certificates/s (call to last job completion, database clock) and the server's CPU per
   certificate; the issued certificates are what renewal-info asks about;
3. for every hot endpoint and concurrency (16, 64): `wrk` for a few seconds (req/s, p50, p99,
   non-2xx answers, server and PostgreSQL CPU per request from /proc/PID/stat), the statements
   `pg_stat_statements` saw per request during that window, then `pgbench -M prepared -f`
   running the same statements (scripts/bench-hotpath/<endpoint>.sql) at the same concurrency;
4. prints one table (markdown) and writes it with the raw figures to --out.

Generator, server and PostgreSQL share the machine: on a 2-core box the figures are
pessimistic and move between runs. Compare ratios measured in the same run.
"""

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "scripts" / "bench-hotpath"
ADMIN_KEY = "bench-admin-key"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# (name, wrk script, pgbench script or None, expected HTTP status for wrk's sanity check)
ENDPOINTS = [
    ("heartbeat", "heartbeat.lua", "heartbeat.sql"),
    ("work_poll", "work_poll.lua", "work_poll.sql"),
    ("list", "list.lua", "list.sql"),
    ("create", "create.lua", "create.sql"),
    ("new_nonce", "new_nonce.lua", "new_nonce.sql"),
    ("directory", "directory.lua", None),
    ("renewal_info", "renewal_info.lua", "renewal_info.sql"),
]


def log(msg):
    print(f"bench-hotpath: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin(name):
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if not found:
        sys.exit(f"bench-hotpath: {name} not found (install PostgreSQL: make deps)")
    return found


class Cluster:
    """A throw-away PostgreSQL cluster (initdb + pg_ctl), as the `postgres` user when root."""

    def __init__(self, workdir, max_connections):
        self.dir = Path(workdir) / "pg"
        self.dir.mkdir()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        data = self.dir / "data"
        self._run([pg_bin("initdb"), "--no-sync", "-A", "trust", "-U", "postgres", "-E", "UTF8",
                   "--locale=C", "-D", str(data)])
        with open(data / "postgresql.conf", "a") as f:
            f.write(f"\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.dir}'\n"
                    f"max_connections = {max_connections}\nshared_buffers = '256MB'\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = top\n"
                    "pg_stat_statements.track_planning = on\n"
                    "pg_stat_statements.max = 10000\n")
        self._run([pg_bin("pg_ctl"), "-D", str(data), "-w", "-t", "30", "-o", f"-p {self.port}",
                   "-l", str(self.dir / "postgres.log"), "start"])
        self.data = data

    def _run(self, argv):
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)

    def url(self, db):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def postmaster_pid(self):
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self):
        try:
            self._run([pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"])
        except subprocess.CalledProcessError:
            pass


def psql(url, sql, fmt=True):
    out = subprocess.run([pg_bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-F", "\t", url,
                          "-c", sql], check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines()] if fmt else out


def cpu_ticks(pid):
    """utime + stime of one process, in clock ticks (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def children_ticks(ppid):
    """CPU ticks of every child of `ppid` (the PostgreSQL backends of a postmaster), by pid."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == ppid:
            out[int(p.name)] = int(fields[11]) + int(fields[12])
    return out


def ticks_delta(before, after):
    return sum(v - before.get(pid, 0) for pid, v in after.items())


def http(method, url, body=None, token=ADMIN_KEY, timeout=60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read() or b"null")


def wait_ready(base, proc, log_path):
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench-hotpath: certctl-server exited ({proc.returncode}); see {log_path}")
        try:
            with urllib.request.urlopen(f"{base}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    sys.exit("bench-hotpath: certctl-server did not become ready in 60 s")


def parse_duration_ms(s):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", s.strip())
    if not m:
        return None
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(out):
    res = {"rps": None, "p50_ms": None, "p99_ms": None, "requests": 0, "non_2xx": 0, "socket_errors": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non_2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["socket_errors"] = sum(int(x) for x in m.groups())
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        if m:
            res[key] = parse_duration_ms(m.group(1))
    return res


def top_statements(url, requests):
    """Statements pg_stat_statements saw since the last reset, per HTTP request."""
    rows = psql(url, "SELECT calls, round(total_exec_time::numeric, 3), round(total_plan_time::numeric, 3), "
                     "plans, regexp_replace(query, '\\s+', ' ', 'g') "
                     "FROM pg_stat_statements WHERE query NOT ILIKE '%pg_stat_statements%' "
                     "AND calls > 0 ORDER BY calls DESC LIMIT 8")
    out = []
    for calls, total_ms, plan_ms, plans, query in rows:
        calls = int(calls)
        if requests and calls / requests < 0.0005:
            continue
        out.append({"per_request": round(calls / requests, 4) if requests else None,
                    "mean_ms": round(float(total_ms) / calls, 4),
                    "plans_per_call": round(int(plans) / calls, 3),
                    "mean_plan_ms": round(float(plan_ms) / int(plans), 4) if int(plans) else 0.0,
                    "query": query[:160]})
    return out


class Perf:
    """`perf record -g -p PID` around one measurement when --perf-dir is given; writes
    <name>.data and a flat top-symbols summary <name>.txt."""

    def __init__(self, args, name, pid):
        self.proc, self.data = None, None
        if args.perf_dir:
            Path(args.perf_dir).mkdir(parents=True, exist_ok=True)
            self.data = Path(args.perf_dir) / f"{name}.data"
            self.proc = subprocess.Popen(["perf", "record", "-q", "-g", "-F", "499", "-p", str(pid), "-o",
                                          str(self.data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)

    def stop(self):
        if not self.proc:
            return
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        report = subprocess.run(["perf", "report", "-i", str(self.data), "--no-children", "--stdio",
                                 "--percent-limit", "1", "-g", "none", "--sort", "dso,symbol"],
                                capture_output=True, text=True, check=False).stdout
        self.data.with_suffix(".txt").write_text(report)


def run_wrk(args, base, script, conns, env, server_pid, postmaster):
    cmd = ["wrk", f"-t{args.wrk_threads}", f"-c{conns}", f"-d{args.duration}s", "--latency",
           "-s", str(ASSETS / script), base]
    perf = Perf(args, f"{Path(script).stem}-c{conns}", server_pid)
    srv0, pg0, t0 = cpu_ticks(server_pid), children_ticks(postmaster), time.time()
    ru0 = os.times()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    ru1 = os.times()
    srv1, pg1, t1 = cpu_ticks(server_pid), children_ticks(postmaster), time.time()
    perf.stop()
    if out.returncode != 0:
        sys.exit(f"bench-hotpath: wrk failed: {out.stderr.strip()}")
    res = parse_wrk(out.stdout)
    n = max(res["requests"], 1)
    res["seconds"] = round(t1 - t0, 2)
    res["server_cpu_us_per_req"] = round((srv1 - srv0) / CLK_TCK * 1e6 / n, 1)
    res["pg_cpu_us_per_req"] = round(ticks_delta(pg0, pg1) / CLK_TCK * 1e6 / n, 1)
    wrk_cpu = (ru1.children_user - ru0.children_user) + (ru1.children_system - ru0.children_system)
    res["wrk_cpu_us_per_req"] = round(wrk_cpu * 1e6 / n, 1)
    res["server_cores"] = round((srv1 - srv0) / CLK_TCK / (t1 - t0), 2)
    res["pg_cores"] = round(ticks_delta(pg0, pg1) / CLK_TCK / (t1 - t0), 2)
    return res


def run_pgbench(args, url, script, conns, env):
    cmd = [pg_bin("pgbench"), "-n", "-M", "prepared", f"-c{conns}", f"-j{args.wrk_threads}",
           f"-T{args.duration}", "-D", f"agents={env['BENCH_AGENTS']}", "-D", f"certs={env['BENCH_CERTS']}",
           "-f", str(ASSETS / script), url]
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        log(f"pgbench {script} failed: {out.stderr.strip()[-400:]}")
        return {"tps": None, "failed": None, "error": out.stderr.strip()[-400:]}
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    tps = float(m.group(1)) if m else None
    # PostgreSQL CPU per pgbench transaction is not reported: pgbench's backends exit with it,
    # before /proc can be read; 2 CPUs / tps bounds it from above.
    return {"tps": tps, "failed": int(failed.group(1)) if failed else 0, "seconds": round(time.time() - t0, 2)}


def fleet_renewal(args, base, url, server_pid, postmaster):
    """One bulk-renew call for the 10K fleet; certificates/s to the last completion."""
    ids = [r[0] for r in psql(url, "SELECT id FROM managed_certificates WHERE id LIKE 'loadtest-bulk-%' ORDER BY id")]
    psql(url, "SELECT pg_stat_statements_reset()", fmt=False)
    db_t0 = psql(url, "SELECT extract(epoch FROM clock_timestamp())")[0][0]
    perf = Perf(args, "fleet_renewal", server_pid)
    cpu0, pg0, t0 = cpu_ticks(server_pid), children_ticks(postmaster), time.time()
    _, body = http("POST", f"{base}/api/v1/certificates/bulk-renew", {"certificate_ids": ids}, timeout=300)
    call_s = time.time() - t0
    deadline = time.time() + 300
    while time.time() < deadline:
        left = int(psql(url, "SELECT count(*) FROM jobs WHERE certificate_id LIKE 'loadtest-bulk-%' "
                             "AND status NOT IN ('Completed', 'Failed', 'Cancelled')")[0][0])
        if left == 0:
            break
        time.sleep(0.2)
    cpu1, pg1 = cpu_ticks(server_pid), children_ticks(postmaster)
    perf.stop()
    done, failed, secs = psql(url, f"SELECT count(*) FILTER (WHERE status = 'Completed'), "
                                   f"count(*) FILTER (WHERE status = 'Failed'), "
                                   f"extract(epoch FROM max(completed_at)) - {db_t0} FROM jobs "
                                   f"WHERE certificate_id LIKE 'loadtest-bulk-%'")[0]
    done, secs = int(done), float(secs or 0)
    return {"selected": len(ids), "enqueued": body.get("total_enqueued"), "completed": done,
            "failed": int(failed), "call_s": round(call_s, 2), "seconds": round(secs, 2),
            "certs_per_s": round(done / secs, 1) if secs > 0 else None,
            "server_cpu_ms_per_cert": round((cpu1 - cpu0) / CLK_TCK * 1000 / max(done, 1), 3),
            "pg_cpu_ms_per_cert": round(ticks_delta(pg0, pg1) / CLK_TCK * 1000 / max(done, 1), 3),
            "statements": top_statements(url, done)}


def b64u(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def cert_ids(url, path):
    """certIDs (RFC 9773 §4.1) of the issued fleet certificates, written one a line to `path`;
    the serials also go to a table pgbench draws from."""
    rows = psql(url, "SELECT serial_number FROM certificate_versions ORDER BY id")
    if not rows:
        sys.exit("bench-hotpath: no issued certificates for renewal-info")
    pem = psql(url, "SELECT pem_chain FROM certificate_versions LIMIT 1", fmt=False)
    leaf = pem[:pem.index("-----END CERTIFICATE-----") + 25]
    ext = subprocess.run(["openssl", "x509", "-noout", "-ext", "authorityKeyIdentifier"], input=leaf,
                         capture_output=True, text=True, check=True).stdout
    hexid = re.search(r"([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})+)", ext).group(1).replace(":", "")
    aki = b64u(bytes.fromhex(hexid))
    with open(path, "w") as f:
        for (serial,) in rows:
            f.write(f"{aki}.{b64u(bytes.fromhex(serial))}\n")
    psql(url, "DROP TABLE IF EXISTS bench_serials; CREATE TABLE bench_serials AS "
              "SELECT row_number() OVER (ORDER BY id)::int AS n, serial_number FROM certificate_versions; "
              "ALTER TABLE bench_serials ADD PRIMARY KEY (n)", fmt=False)
    return len(rows)


def fmt(v, spec="{:,.0f}"):
    return "–" if v is None else spec.format(v)


def render(results, fleet, meta):
    lines = [f"Hot paths — {meta['when']}, commit {meta['commit']}, {meta['cpus']} CPUs "
             f"(generator, server and PostgreSQL share them), {meta['duration']} s per measurement, "
             f"fast durability, rate limits off.", "",
             "| endpoint | conns | HTTP req/s | p50 | p99 | non-2xx | SQL tps (pgbench) | HTTP/SQL | "
             "server CPU/req | PG CPU/req | wrk CPU/req | statements/req |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        w, p = r["wrk"], r.get("pgbench") or {}
        ratio = (w["rps"] / p["tps"]) if p.get("tps") and w["rps"] else None
        stmts = sum(s["per_request"] or 0 for s in r["statements"])
        lines.append(f"| {r['endpoint']} | {r['conns']} | {fmt(w['rps'])} | {fmt(w['p50_ms'], '{:.2f} ms')} | "
                     f"{fmt(w['p99_ms'], '{:.2f} ms')} | {w['non_2xx'] + w['socket_errors']} | "
                     f"{fmt(p.get('tps'))} | {fmt(ratio, '{:.2f}')} | {fmt(w['server_cpu_us_per_req'], '{:.0f} µs')} | "
                     f"{fmt(w['pg_cpu_us_per_req'], '{:.0f} µs')} | {fmt(w['wrk_cpu_us_per_req'], '{:.0f} µs')} | "
                     f"{stmts:.2f} |")
    by = {(r["endpoint"], r["conns"]): r["wrk"]["rps"] for r in results}
    lines.append("")
    for name, *_ in ENDPOINTS:
        a, b = by.get((name, 16)), by.get((name, 64))
        if a and b:
            lines.append(f"- {name}: 64/16-connection rate {b / a:.2f}")
    if fleet:
        lines += ["", f"Fleet renewal: {fleet['completed']} of {fleet['selected']} certificates in "
                      f"{fleet['seconds']} s = **{fmt(fleet['certs_per_s'])} certificates/s** "
                      f"(bulk-renew call {fleet['call_s']} s, {fleet['failed']} failed, server CPU "
                      f"{fleet['server_cpu_ms_per_cert']} ms and PostgreSQL CPU {fleet['pg_cpu_ms_per_cert']} ms "
                      f"per certificate). Statements per certificate:", ""]
        lines += [f"- {st['per_request']}× {st['mean_ms']} ms `{st['query']}`" for st in fleet["statements"]]
    lines += ["", "Statements per request (pg_stat_statements during the 16-connection wrk window):", ""]
    for r in results:
        if r["conns"] != 16:
            continue
        lines.append(f"- {r['endpoint']}:")
        for s in r["statements"]:
            lines.append(f"  - {s['per_request']}× {s['mean_ms']} ms (planned {s['plans_per_call']}× per call, "
                         f"{s['mean_plan_ms']} ms) `{s['query']}`")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")))
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk/pgbench measurement (8)")
    ap.add_argument("--conns", default="16,64", help="concurrency levels (16,64)")
    ap.add_argument("--endpoints", default=",".join(e[0] for e in ENDPOINTS), help="which endpoints (all)")
    ap.add_argument("--wrk-threads", type=int, default=2, help="wrk threads and pgbench jobs (2)")
    ap.add_argument("--no-fleet", action="store_true", help="skip the fleet renewal (renewal-info then skipped)")
    ap.add_argument("--out", default=None, help="directory for report.md and results.json "
                                                "(default: TARGET/bench-hotpath/<UTC time>)")
    ap.add_argument("--keep", action="store_true", help="leave server and database running until Ctrl-C "
                                                        "(for perf record -p PID)")
    ap.add_argument("--label", default=None, help="what the report calls the binaries (default: the "
                                                  "checkout's commit)")
    ap.add_argument("--perf-dir", default=None, help="record `perf record -g` of the server during the fleet "
                                                     "renewal and every wrk run into this directory")
    ap.add_argument("--server-env", action="append", default=[], metavar="K=V",
                    help="extra environment for certctl-server, e.g. CERTCTL_DATABASE_MAX_CONNS=8")
    args = ap.parse_args()
    for tool in ("wrk", "openssl"):
        if not shutil.which(tool):
            sys.exit(f"bench-hotpath: {tool} not found (make bench-hotpath installs wrk)")
    target = Path(args.target_dir) / "release"
    server_bin, loadtest_bin = target / "certctl-server", target / "certctl-loadtest"
    for b in (server_bin, loadtest_bin):
        if not b.exists():
            sys.exit(f"bench-hotpath: {b} missing: cargo build --workspace --release --all-targets --locked")
    wanted = args.endpoints.split(",")
    conns = [int(c) for c in args.conns.split(",")]
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    commit = args.label or subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
                                          capture_output=True, text=True).stdout.strip() or "unknown"
    out_dir = Path(args.out or Path(args.target_dir) / "bench-hotpath" / when.replace(":", ""))
    out_dir.mkdir(parents=True, exist_ok=True)

    work = tempfile.mkdtemp(prefix="certctl-bench-")
    os.chmod(work, 0o755)
    cluster, server = None, None
    try:
        cluster = Cluster(work, max_connections=max(200, 2 * max(conns) + 60))
        subprocess.run([pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
                        "certctl"], check=True)
        url = cluster.url("certctl")
        psql(url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements", fmt=False)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = dict(os.environ, CERTCTL_DATABASE_URL=url, CERTCTL_SERVER_PORT=str(port),
                   CERTCTL_API_KEYS_NAMED=f"bench:{ADMIN_KEY}:admin", CERTCTL_RATE_LIMIT_ENABLED="false",
                   CERTCTL_DEMO_SEED="true", CERTCTL_LOG_LEVEL="warn", CERTCTL_KEYGEN_MODE="server",
                   CERTCTL_JOB_PROCESSOR_INTERVAL="1s", CERTCTL_JOB_BATCH_SIZE="1000")
        for kv in args.server_env:
            k, _, v = kv.partition("=")
            env[k] = v
        server_log = out_dir / "server.log"
        server = subprocess.Popen([str(server_bin)], env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(server_log, "w"))
        wait_ready(base, server, server_log)
        log(f"server pid {server.pid} at {base}, database {url}")
        t = time.time()
        subprocess.run([str(loadtest_bin), "seed", "--database-url", url], check=True,
                       stdout=subprocess.DEVNULL)
        log(f"fleet seeded in {time.time() - t:.1f} s")
        fleet = None
        if not args.no_fleet:
            fleet = fleet_renewal(args, base, url, server.pid, cluster.postmaster_pid())
            log(f"fleet renewal: {fleet['certs_per_s']} certificates/s")
        ids_file = Path(work) / "cert_ids.txt"
        n_ids = 1
        if "renewal_info" in wanted and fleet:
            n_ids = cert_ids(url, ids_file)
            log(f"{n_ids} certIDs for renewal-info")
        elif "renewal_info" in wanted:
            wanted.remove("renewal_info")
        psql(url, "VACUUM ANALYZE", fmt=False)
        benv = dict(os.environ, BENCH_LUA_DIR=str(ASSETS), BENCH_ADMIN_KEY=ADMIN_KEY, BENCH_AGENTS="5000",
                    BENCH_CERT_IDS=str(ids_file), BENCH_CERTS=str(n_ids))
        results = []
        postmaster = cluster.postmaster_pid()
        for name, lua, sql in ENDPOINTS:
            if name not in wanted:
                continue
            for c in conns:
                psql(url, "SELECT pg_stat_statements_reset()", fmt=False)
                benv["BENCH_RUN"] = f"{int(time.time())}{c}"
                w = run_wrk(args, base, lua, c, benv, server.pid, postmaster)
                stmts = top_statements(url, w["requests"])
                p = run_pgbench(args, url, sql, c, benv) if sql else None
                results.append({"endpoint": name, "conns": c, "wrk": w, "pgbench": p, "statements": stmts})
                log(f"{name} c={c}: {w['rps']} req/s p50 {w['p50_ms']} p99 {w['p99_ms']} "
                    f"non-2xx {w['non_2xx']}; pgbench {p and p['tps']} tps")
        meta = {"when": when, "commit": commit, "cpus": os.cpu_count(), "duration": args.duration}
        report = render(results, fleet, meta)
        (out_dir / "report.md").write_text(report)
        (out_dir / "results.json").write_text(json.dumps({"meta": meta, "fleet": fleet, "results": results},
                                                         indent=2))
        print(report)
        log(f"written to {out_dir}")
        if args.keep:
            log(f"--keep: server pid {server.pid} at {base}, database {url}; Ctrl-C stops")
            try:
                server.wait()
            except KeyboardInterrupt:
                pass
    finally:
        if server and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        if cluster:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
