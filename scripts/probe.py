#!/usr/bin/env python3
"""certctl security probe: a black-box, re-runnable repeat of the outside probe of issue 14.

Starts `certctl-dev` itself (a throw-away PostgreSQL with the demo seed; an admin and a
non-admin key of its own) — or probes a running server given by --url and keys — and drives it
only over real HTTP, as a new user would: the REST API (every route of the served OpenAPI
document, with every kind of credential and hostile input), the agent protocol, ACME (its own
ES256 JWS client) and the CRL endpoint, plus raw sockets for the connection limits.

Every response is tracked. After the run the server's log is searched for `panicked`.
One line per check (PASS/FAIL + detail), then a summary; exit 0 when every check holds,
1 otherwise, 2 when the probe could not run.

Needs Python 3 and `cryptography` (Debian: python3-cryptography). Usage:
  scripts/probe.py                                  # target/release/certctl-dev
  scripts/probe.py --bin target/debug/certctl-dev
  scripts/probe.py --url http://host:8443 --admin-key K --reader-key K [--server-log FILE]
"""

import argparse
import base64
import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from datetime import datetime, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

BAD_NAMES = [
    "*.*.com", "*", "exa mple.com", "a..b", "10.0.0.1/8", "*.com", "f*o.example.com",
    "-a.example.com", "bücher.de", "example.com.", ".example.com", "a" * 64 + ".example.com",
    ("a" * 62 + ".") * 4 + "example.com",  # 254+ characters
    "ex_ample.com", "xn--.example.com",
]
# ACME `dns` identifiers: IP addresses are no DNS names (they are fine as IP SANs on the REST API).
ACME_BAD_NAMES = BAD_NAMES + ["1.2.3.4", "::1"]
# Every ACME route with a path parameter, relative to a directory root.
ACME_PARAM_ROUTES = ["account/{x}", "account/{x}/orders", "order/{x}", "order/{x}/finalize", "authz/{x}",
                     "challenge/{x}", "cert/{x}", "renewal-info/{x}"]
LONG = "a" * 10240
ENVELOPE = {"error", "message", "request_id"}


# ---------------------------------------------------------------------------------------------
# HTTP with accounting


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def message(self):
        j = self.json if isinstance(self.json, dict) else {}
        return str(j.get("message") or j.get("detail") or "")

    def envelope(self):
        return isinstance(self.json, dict) and ENVELOPE <= set(self.json)

    def problem(self):
        return (self.headers.get("content-type", "").startswith("application/problem+json")
                and isinstance(self.json, dict) and str(self.json.get("type", "")).startswith("urn:ietf:params:acme:error:"))

    def __repr__(self):
        return f"{self.status} {self.text[:160]}"


class Http:
    """Keep-alive connections per source address; every answer is counted."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.sent = 0
        self.statuses = {}
        self.five_xx = []
        self.no_request_id = []
        self.acme_no_index = []
        self.conns = {}
        # Answers 429 to these keys (the per-key request limit of a server run with its defaults,
        # e.g. --url) are waited out (Retry-After) and retried; `waited` counts them.
        self.valid_keys = set()
        self.waited = 0
        self.lock = threading.Lock()
        self._src = 0

    def fresh_source(self):
        """A loopback source address not used before (the failed-auth limiter is per address)."""
        with self.lock:
            self._src += 1
            n = self._src
        return f"127.0.{100 + n // 250}.{1 + n % 250}" if self.host.startswith("127.") else None

    def _conn(self, source):
        c = self.conns.get(source)
        if c is None:
            c = http.client.HTTPConnection(self.host, self.port, timeout=60,
                                           source_address=(source, 0) if source else None)
            self.conns[source] = c
        return c

    def record(self, method, path, status, body):
        with self.lock:
            self.sent += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status >= 500:
                self.five_xx.append(f"{method} {path[:120]} -> {status} {body[:200]!r}")

    def req(self, method, path, body=None, key=None, headers=None, raw=None, source=None, ctype="application/json"):
        hdrs = {"Accept": "application/json, application/problem+json, */*"}
        if key:
            hdrs["Authorization"] = f"Bearer {key}"
        data = raw
        if data is None and body is not None:
            data = json.dumps(body).encode()
        if data is not None and ctype:
            hdrs["Content-Type"] = ctype
        hdrs.update(headers or {})
        for _ in range(30):
            resp = self._send(method, path, data, hdrs, source)
            if resp.status != 429 or key not in self.valid_keys:
                return resp
            with self.lock:
                self.waited += 1
            time.sleep(min(5.0, float(resp.headers.get("retry-after", "1") or 1)))
        return resp

    def _send(self, method, path, data, hdrs, source):
        for attempt in (0, 1):
            c = self._conn(source)
            try:
                c.request(method, path, body=data, headers=hdrs)
                r = c.getresponse()
                payload = r.read()
                resp = Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, payload)
                if r.will_close:
                    c.close()
                    self.conns.pop(source, None)
                break
            except (http.client.HTTPException, ConnectionError, socket.timeout, OSError):
                c.close()
                self.conns.pop(source, None)
                if attempt:
                    raise
        self.record(method, path, resp.status, resp.body)
        if "x-request-id" not in resp.headers:
            self.no_request_id.append(f"{method} {path[:80]} -> {resp.status}")
        if path.startswith("/acme/") and 'rel="index"' not in resp.headers.get("link", ""):
            self.acme_no_index.append(f"{method} {path[:80]} -> {resp.status}")
        return resp


# ---------------------------------------------------------------------------------------------
# Report


class Report:
    def __init__(self):
        self.results = []

    def check(self, name, ok, detail=""):
        self.results.append((name, bool(ok), detail))
        print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
        return ok

    def failed(self):
        return [r for r in self.results if not r[1]]


def sample(items, n=4):
    items = list(items)
    return "; ".join(str(i) for i in items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


# ---------------------------------------------------------------------------------------------
# The server under test


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevServer:
    def __init__(self, binary, log_path, env):
        self.port = free_port()
        self.log_path = log_path
        full = dict(os.environ)
        full.update({"CERTCTL_SERVER_HOST": "127.0.0.1", "CERTCTL_SERVER_PORT": str(self.port),
                     "CERTCTL_LOG_FORMAT": "pretty"})
        full.update(env)
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([binary], env=full, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"certctl-dev exited during startup (log: {log_path})")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/ready")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"certctl-dev did not become ready (log: {log_path})")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ---------------------------------------------------------------------------------------------
# X.509 and ACME helpers


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def csr_pem(names, cn=None, key=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or (names[0] if names else "probe"))]))
    if names:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def cert_id(leaf):
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    n = leaf.serial_number
    return b64u(aki) + "." + b64u(n.to_bytes((n.bit_length() + 8) // 8, "big"))


class Acme:
    """A compact RFC 8555 client: ES256 JWS, nonces from every answer."""

    def __init__(self, http_, profile):
        self.h = http_
        self.dir_path = f"/acme/profile/{profile}/directory"
        d = self.h.req("GET", self.dir_path)
        if d.status != 200:
            raise RuntimeError(f"ACME directory {self.dir_path}: {d}")
        self.dir = d.json
        self.key = ec.generate_private_key(ec.SECP256R1())
        nums = self.key.public_key().public_numbers()
        self.jwk = {"crv": "P-256", "kty": "EC", "x": b64u(nums.x.to_bytes(32, "big")),
                    "y": b64u(nums.y.to_bytes(32, "big"))}
        self.kid = None
        self.nonce = None

    @staticmethod
    def path(url):
        u = urllib.parse.urlsplit(url)
        return u.path + (f"?{u.query}" if u.query else "")

    def new_nonce(self):
        r = self.h.req("HEAD", self.path(self.dir["newNonce"]))
        return r.headers.get("replay-nonce")

    def post(self, url, payload, use_jwk=False, raw_payload=None):
        nonce = self.nonce or self.new_nonce()
        self.nonce = None
        prot = {"alg": "ES256", "nonce": nonce, "url": url}
        if self.kid and not use_jwk:
            prot["kid"] = self.kid
        else:
            prot["jwk"] = self.jwk
        p64 = b64u(json.dumps(prot).encode())
        pl64 = raw_payload if raw_payload is not None else ("" if payload is None else b64u(json.dumps(payload).encode()))
        r, s = decode_dss_signature(self.key.sign(f"{p64}.{pl64}".encode(), ec.ECDSA(hashes.SHA256())))
        jws = {"protected": p64, "payload": pl64, "signature": b64u(r.to_bytes(32, "big") + s.to_bytes(32, "big"))}
        resp = self.h.req("POST", self.path(url), body=jws, ctype="application/jose+json")
        self.nonce = resp.headers.get("replay-nonce")
        if resp.status == 400 and isinstance(resp.json, dict) and resp.json.get("type", "").endswith(":badNonce"):
            return self.post(url, payload, use_jwk, raw_payload)
        return resp

    def register(self):
        r = self.post(self.dir["newAccount"], {"termsOfServiceAgreed": True, "contact": ["mailto:probe@example.com"]},
                      use_jwk=True)
        if r.status not in (200, 201):
            raise RuntimeError(f"new-account: {r}")
        self.kid = r.headers["location"]
        return self

    def order(self, names, replaces=None):
        body = {"identifiers": [{"type": "dns", "value": n} for n in names]}
        if replaces:
            body["replaces"] = replaces
        return self.post(self.dir["newOrder"], body)

    def issue(self, names):
        """Order → finalize → download on a trust_authenticated profile: (leaf, order json)."""
        o = self.order(names)
        if o.status != 201:
            raise RuntimeError(f"new-order {names}: {o}")
        order_url = o.headers["location"]
        f = self.post(o.json["finalize"], {"csr": b64u(x509.load_pem_x509_csr(csr_pem(names).encode())
                                                     .public_bytes(serialization.Encoding.DER))})
        if f.status != 200:
            raise RuntimeError(f"finalize {names}: {f}")
        body = f.json
        for _ in range(50):
            if body.get("status") == "valid":
                break
            time.sleep(0.2)
            body = self.post(order_url, None).json
        c = self.post(body["certificate"], None)
        if c.status != 200:
            raise RuntimeError(f"certificate download: {c}")
        return x509.load_pem_x509_certificates(c.body)[0], body, order_url


def finalize_der(names, cn=None):
    return b64u(x509.load_pem_x509_csr(csr_pem(names, cn).encode()).public_bytes(serialization.Encoding.DER))


# ---------------------------------------------------------------------------------------------
# OpenAPI walking


def resolve(doc, s):
    while isinstance(s, dict) and "$ref" in s:
        s = doc["components"]["schemas"][s["$ref"].rsplit("/", 1)[1]]
    return s


def object_schema(doc, s):
    """Properties and required names of a request schema (through $ref, oneOf null|ref, allOf),
    plus the first anyOf branch's required names (a selector the body must carry)."""
    s = resolve(doc, s)
    props, required, selector = {}, set(), set()
    for sub in s.get("allOf", []) + [x for x in s.get("oneOf", []) if resolve(doc, x).get("type") != "null"]:
        p, r, sel = object_schema(doc, sub)
        props.update(p)
        required |= r
        selector |= sel
    if s.get("anyOf"):
        first = resolve(doc, s["anyOf"][0])
        selector |= set(first.get("required", []))
    props.update({k: resolve(doc, v) for k, v in s.get("properties", {}).items()})
    required |= set(s.get("required", []))
    return props, required, selector


def types_of(schema):
    t = schema.get("type")
    if t is None and schema.get("oneOf"):
        return {x.get("type") for x in schema["oneOf"]}
    return set(t) if isinstance(t, list) else {t}


def placeholder(name, schema):
    t = types_of(schema)
    enum = schema.get("enum") or next((x.get("enum") for x in schema.get("oneOf", []) if x.get("enum")), None)
    if enum:
        return enum[0]
    if "string" in t:
        if name == "csr_pem":
            return csr_pem(["probe.example.com"])
        m = re.match(r"^\^\((?:\|)?([A-Za-z_]+)", schema.get("pattern", ""))
        return m.group(1) if m else "probe-value"
    if "integer" in t:
        return max(1, schema.get("minimum", 1))
    if "boolean" in t:
        return False
    if "array" in t:
        return ["probe-none"]
    return {}


def operations(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


def request_schema(op):
    return ((op.get("requestBody") or {}).get("content") or {}).get("application/json", {}).get("schema")


def concrete(path, agent_id, job_id="probe-missing-job"):
    p = path.replace("/api/v1/agents/{id}/", f"/api/v1/agents/{agent_id}/")
    return p.replace("{job_id}", job_id).replace("{id}", "probe-missing")


# ---------------------------------------------------------------------------------------------
# The probe


class Probe:
    def __init__(self, h, admin, reader, report, args):
        self.h, self.admin, self.reader, self.r, self.args = h, admin, reader, report, args
        self.doc = None
        self.base = f"http://{h.host}:{h.port}"

    # -- small helpers ----------------------------------------------------------------------
    def api(self, method, path, body=None, key="admin", **kw):
        k = {"admin": self.admin, "reader": self.reader, None: None}.get(key, key)
        return self.h.req(method, path, body=body, key=k, **kw)

    def register_agent(self, name):
        a = self.api("POST", "/api/v1/agents", {"name": f"{name}-{secrets.token_hex(4)}", "hostname": f"{name}.probe"})
        if a.status != 201:
            raise RuntimeError(f"register agent: {a}")
        return a.json["id"], a.json["credential"]

    def create_cert(self, names, agent_id=None, profile=None, expect=201):
        body = {"name": f"probe-{secrets.token_hex(5)}", "common_name": names[0], "sans": names,
                "owner_id": "o-alice", "team_id": "t-platform", "issuer_id": "iss-local",
                "renewal_policy_id": "rp-standard"}
        if agent_id:
            body["agent_id"] = agent_id
        if profile:
            body["certificate_profile_id"] = profile
        a = self.api("POST", "/api/v1/certificates", body)
        if a.status != expect:
            raise RuntimeError(f"create certificate {names}: {a}")
        return a.json["id"]

    def job(self, job_id):
        return self.api("GET", f"/api/v1/jobs/{job_id}").json

    def wait_job(self, job_id, pred):
        deadline = time.time() + self.args.job_wait
        j = self.job(job_id)
        while not pred(j) and time.time() < deadline:
            time.sleep(0.3)
            j = self.job(job_id)
        return j

    def renew_awaiting_csr(self, cert_id):
        a = self.api("POST", f"/api/v1/certificates/{cert_id}/renew", {"force": True})
        if a.status != 202:
            raise RuntimeError(f"renew {cert_id}: {a}")
        j = self.wait_job(a.json["job_id"], lambda j: j.get("status") == "AwaitingCSR")
        if j.get("status") != "AwaitingCSR":
            raise RuntimeError(f"job {a.json['job_id']} never reached AwaitingCSR: {j}")
        return a.json["job_id"]

    def versions(self, cert_id):
        return self.api("GET", f"/api/v1/certificates/{cert_id}/versions").json.get("data", [])

    def profile(self, max_sans=5):
        a = self.api("POST", "/api/v1/profiles", {"name": f"probe-prof-{secrets.token_hex(4)}", "issuer_id": "iss-local",
                                                  "max_sans": max_sans, "validity_days": 30})
        if a.status != 201:
            raise RuntimeError(f"create profile: {a}")
        return a.json["id"]

    # -- 1. numbers and dates ---------------------------------------------------------------
    def numbers(self):
        bad_ints = [2147483647, 3651, 0, -1, -2147483648, 2147483648, 9223372036854775807, 9223372036854775808,
                    10 ** 30, 1.5, 1e308, "90", None, True, [90]]
        wrong = []
        for v in bad_ints:
            for method, path, body in [
                ("PUT", "/api/v1/issuers/iss-local", {"validity_days": v}),
                ("PUT", "/api/v1/profiles/prof-standard-tls", {"validity_days": v}),
                ("POST", "/api/v1/issuers", {"name": f"probe-huge-{secrets.token_hex(3)}", "type": "GenericCA", "validity_days": v}),
                ("POST", "/api/v1/profiles", {"name": f"probe-huge-{secrets.token_hex(3)}", "validity_days": v}),
            ]:
                a = self.api(method, path, body)
                ok = a.status in (400, 422) and a.envelope() if v is not None else a.status in (200, 201, 400, 422)
                if v == 2147483647 and not (a.status == 422 and "validity_days" in a.message()):
                    ok = False
                if not ok:
                    wrong.append(f"{method} {path} validity_days={v!r} -> {a}")
        iss = self.api("GET", "/api/v1/issuers/iss-local").json
        self.r.check("1 validity_days 2147483647/3651/0/negative/overflowing/non-integer on issuers and profiles -> 4xx (2147483647: 422 naming validity_days)",
                     not wrong and 1 <= iss.get("validity_days", 0) <= 3650,
                     sample(wrong) or f"{len(bad_ints) * 4} writes refused; iss-local validity_days still {iss.get('validity_days')}")
        # Other numbers: renewal policies, max_sans, list paging, dates in filters.
        wrong = []
        for field, v in [("renewal_window_days", 2147483647), ("renewal_window_days", -1), ("max_retries", 2147483647),
                         ("max_retries", -5), ("retry_interval_seconds", 2147483647), ("retry_interval_seconds", -1),
                         ("alert_thresholds_days", [2147483647, -2147483648]), ("renewal_window_days", 2 ** 63)]:
            a = self.api("POST", "/api/v1/renewal-policies", {"name": f"probe-rp-{secrets.token_hex(3)}", field: v})
            if a.status >= 500 or (a.status >= 400 and not a.envelope()):
                wrong.append(f"{field}={v} -> {a}")
        for v in [0, -1, 2147483648, 10 ** 20]:
            a = self.api("PUT", "/api/v1/profiles/prof-standard-tls", {"max_sans": v})
            if a.status not in (400, 422):
                wrong.append(f"max_sans={v} -> {a}")
        for q in ["expires_before=9999-12-31T23:59:59Z", "expires_after=0001-01-01T00:00:00Z",
                  "expires_before=+275760-09-13T00:00:00Z", "expires_before=-infinity", "expires_after=2026-13-45T99:99:99Z",
                  "page=9223372036854775807&per_page=500", "page=18446744073709551616", "page=-1", "per_page=0",
                  "per_page=501", "per_page=-2147483649", "page_size=0", "page_size=100000"]:
            a = self.api("GET", f"/api/v1/certificates?{q}")
            if a.status >= 500 or (a.status >= 400 and not a.envelope()):
                wrong.append(f"?{q} -> {a}")
        self.r.check("1 huge/negative numbers and extreme dates in renewal policies, max_sans, paging and date filters -> 2xx/4xx envelope, never 5xx",
                     not wrong, sample(wrong) or "all answered")
        self.huge_window_policy = None
        a = self.api("POST", "/api/v1/renewal-policies", {"name": f"probe-rp-huge-{secrets.token_hex(3)}",
                                                          "renewal_window_days": 2147483647})
        if a.status == 201:
            self.huge_window_policy = a.json["id"]

    # -- 2. names on API create/update ------------------------------------------------------
    def names_api(self):
        wrong = []
        target = self.create_cert(["names-target.probe.example"])
        for bad in BAD_NAMES:
            cases = [
                ("POST", "/api/v1/certificates", {"name": f"probe-bad-{secrets.token_hex(4)}", "common_name": "ok.probe.example",
                                                  "sans": ["ok.probe.example", bad], "owner_id": "o-alice", "team_id": "t-platform",
                                                  "issuer_id": "iss-local", "renewal_policy_id": "rp-standard"}),
                ("POST", "/api/v1/certificates", {"name": f"probe-bad-{secrets.token_hex(4)}", "common_name": bad,
                                                  "sans": [], "owner_id": "o-alice", "team_id": "t-platform",
                                                  "issuer_id": "iss-local", "renewal_policy_id": "rp-standard"}),
                ("PUT", f"/api/v1/certificates/{target}", {"sans": [bad]}),
                ("PUT", f"/api/v1/certificates/{target}", {"common_name": bad}),
            ]
            for method, path, body in cases:
                a = self.api(method, path, body)
                shown = bad if len(bad) <= 60 else bad[:20]
                if not (a.status in (400, 422) and a.envelope() and (shown in a.message() or a.status == 400)):
                    wrong.append(f"{method} {path} {bad[:40]!r} -> {a}")
        cert = self.api("GET", f"/api/v1/certificates/{target}").json
        stored_bad = [s for s in cert.get("sans", []) + [cert.get("common_name")] if s in BAD_NAMES]
        self.r.check(f"2 invalid names ({len(BAD_NAMES)} kinds: wildcards, spaces, empty labels, CIDR, U-labels, trailing dots, 64-char labels, 254-char names) on certificate create and update -> 422 naming the value",
                     not wrong and not stored_bad, sample(wrong) or f"{len(BAD_NAMES) * 4} refused; stored names unchanged {cert.get('sans')}")
        many = [f"h{i}.probe.example" for i in range(1000)]
        a = self.api(
            "POST", "/api/v1/certificates", {"name": f"probe-1000-{secrets.token_hex(3)}", "common_name": many[0], "sans": many,
                                             "owner_id": "o-alice", "team_id": "t-platform", "issuer_id": "iss-local",
                                             "renewal_policy_id": "rp-standard", "certificate_profile_id": "prof-standard-tls"})
        b = self.api("PUT", f"/api/v1/certificates/{target}", {"sans": many, "certificate_profile_id": "prof-standard-tls"})
        self.r.check("2 1,000 SANs under prof-standard-tls (max_sans 100) on create and update -> 422",
                     a.status == 422 and b.status == 422 and "100" in a.message(), f"create {a}; update {b}")
        good = self.api("POST", "/api/v1/certificates", {
            "name": f"probe-good-{secrets.token_hex(3)}", "common_name": "good.probe.example",
            "sans": ["*.good.probe.example", "10.0.0.1", "::1", "xn--bcher-kva.example", "GOOD.probe.example"],
            "owner_id": "o-alice", "team_id": "t-platform", "issuer_id": "iss-local", "renewal_policy_id": "rp-standard"})
        self.r.check("2 valid names (leftmost wildcard, IPv4/IPv6 SANs, A-label, upper case) are accepted", good.status == 201, repr(good))

    # -- 2/3/4/1. the agent protocol --------------------------------------------------------
    def agent_flow(self):
        agent, cred = self.register_agent("probe-edge")
        self.agent, self.agent_cred = agent, cred
        prof = self.profile(max_sans=5)
        names = ["edge1.probe.example", "edge2.probe.example"]
        cert = self.create_cert(names, agent_id=agent, profile=prof)
        job = self.renew_awaiting_csr(cert)
        base = f"/api/v1/agents/{agent}"
        # 4. no completion without the CSR.
        rep = [self.api("POST", f"{base}/jobs/{job}/status", {"status": s}, key=cred) for s in
               ("Completed", "Running", "Pending", "Cancelled", "AwaitingApproval")]
        j = self.job(job)
        self.r.check("4 an agent cannot move its AwaitingCSR renewal to Completed/Running/Pending/Cancelled/AwaitingApproval without a CSR -> 409, job stays AwaitingCSR",
                     all(a.status == 409 and a.envelope() for a in rep) and j.get("status") == "AwaitingCSR" and not self.versions(cert),
                     f"{[a.status for a in rep]}, job {j.get('status')}, versions {len(self.versions(cert))}")
        # 2. names in the agent CSR.
        wrong = []
        for bad in ["*.*.com", "exa mple.com", "a..b", "other.probe.example", "*.probe.example", "10.0.0.1/8"]:
            a = self.api("POST", f"{base}/csr", {"csr_pem": csr_pem(["edge1.probe.example", bad]), "certificate_id": cert}, key=cred)
            if not (a.status == 422 and a.envelope() and bad in a.message()):
                wrong.append(f"{bad!r} -> {a}")
        # max_sans lowered below the certificate's names after it was created.
        low = self.api("PUT", f"/api/v1/profiles/{prof}", {"max_sans": 1})
        if low.status == 200:
            a = self.api("POST", f"{base}/csr", {"csr_pem": csr_pem(["edge1.probe.example"]), "certificate_id": cert}, key=cred)
            if not (a.status == 422 and "at most 1" in a.message()):
                wrong.append(f"2 names under max_sans 1 -> {a}")
            self.api("PUT", f"/api/v1/profiles/{prof}", {"max_sans": 5})
        self.r.check("2 agent CSR with invalid or foreign names, or more names than max_sans -> 422 naming the value; nothing signed",
                     not wrong and not self.versions(cert) and self.job(job).get("status") == "AwaitingCSR",
                     sample(wrong) or f"refused; profile max_sans 1 update answered {low.status}")
        # 1. issuance still works (after the validity probes), within the CA's lifetime.
        a = self.api("POST", f"{base}/csr", {"csr_pem": csr_pem(names), "certificate_id": cert}, key=cred)
        vs = self.versions(cert)
        detail = f"csr {a.status}, versions {len(vs)}"
        ok = a.status == 202 and len(vs) == 1
        if ok:
            leaf = x509.load_pem_x509_certificates(vs[0]["pem_chain"].encode())[0]
            days = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
            ok = 1 <= days <= 31 and sorted(sans) == sorted(names)
            detail += f", leaf {days} days, SANs {sans}"
        self.r.check("1 issuance works after the refused validity writes: agent CSR -> 202, one version, leaf within the profile's 30 days with exactly the certificate's names",
                     ok and self.job(job).get("status") == "Completed", detail)
        a = self.api("POST", f"{base}/jobs/{job}/status", {"status": "Running"}, key=cred)
        self.r.check("4 a completed job cannot be moved back by its agent -> 409", a.status == 409, repr(a))
        self.cert_with_version = cert

    def retired_agent(self):
        agent, cred = self.register_agent("probe-retiree")
        cert = self.create_cert(["retiree.probe.example"], agent_id=agent)
        job = self.renew_awaiting_csr(cert)
        d = self.api("DELETE", f"/api/v1/agents/{agent}")
        wrong, n = [], 0
        for method, path, op in operations(self.doc):
            if not path.startswith("/api/v1/agents/{id}/"):
                continue
            p = path.replace("{id}", agent).replace("{job_id}", job)
            body = {"csr_pem": csr_pem(["retiree.probe.example"]), "certificate_id": cert} if p.endswith("/csr") else (
                {"status": "Completed"} if p.endswith("/status") else ({} if request_schema(op) else None))
            for key in (cred, self.admin):
                a = self.h.req(method, p, body=body, key=key)
                n += 1
                if not (a.status == 410 and a.envelope()):
                    wrong.append(f"{method} {p} ({'agent' if key == cred else 'admin'}) -> {a}")
        j = self.job(job)
        self.r.check("3 a retired agent gets 410 on every agent route of the OpenAPI document (its credential and the admin key); its job does not move, nothing is signed",
                     d.status == 200 and not wrong and n >= 8 and j.get("status") == "AwaitingCSR" and not self.versions(cert),
                     sample(wrong) or f"retire {d.status}; {n} calls all 410; job {j.get('status')}")

    # -- server keygen (second instance) ----------------------------------------------------
    def server_keygen(self, h):
        p = Probe(h, self.admin, self.reader, self.r, self.args)
        prof = p.profile(max_sans=5)
        names = ["kg1.probe.example", "kg2.probe.example", "kg3.probe.example"]
        cert = p.create_cert(names, profile=prof)
        low = p.api("PUT", f"/api/v1/profiles/{prof}", {"max_sans": 2})
        a = p.api("POST", f"/api/v1/certificates/{cert}/renew", {"force": True})
        j = p.wait_job(a.json.get("job_id", ""), lambda j: "at most" in str(j.get("last_error")) or j.get("status") in ("Completed", "Failed"))
        refused = "at most 2" in str(j.get("last_error")) and not p.versions(cert)
        self.r.check("2 server keygen refuses to sign more names than the profile's max_sans (lowered after creation): job error names the limit, no version",
                     low.status == 200 and refused, f"profile update {low.status}; job {j.get('status')} {j.get('last_error')!r}; versions {len(p.versions(cert))}")
        p.api("PUT", f"/api/v1/profiles/{prof}", {"max_sans": 5})
        for v in (2147483647, 3651, -1):
            p.api("PUT", "/api/v1/issuers/iss-local", {"validity_days": v})
        a = p.api("POST", f"/api/v1/certificates/{cert}/renew", {"force": True})
        j = p.wait_job(a.json.get("job_id", ""), lambda j: j.get("status") in ("Completed", "Failed"))
        vs = p.versions(cert)
        self.r.check("1 server keygen issues after refused validity writes (job Completed, one version)",
                     j.get("status") == "Completed" and len(vs) == 1, f"job {j.get('status')} {j.get('last_error')!r}; versions {len(vs)}")

    # -- 5. revocation reasons, 11. CRL -----------------------------------------------------
    def revocation_and_crl(self, cert_id):
        wrong = []
        for reason in ("removeFromCRL", "removefromcrl", "REMOVEFROMCRL", "8", "unused", "nonsense", LONG[:300]):
            a = self.api("POST", f"/api/v1/certificates/{cert_id}/revoke", {"reason": reason})
            if a.status != 400 or not a.envelope():
                wrong.append(f"{reason[:20]!r} -> {a}")
        b = self.api("POST", "/api/v1/certificates/bulk-revoke", {"certificate_ids": [cert_id], "reason": "removeFromCRL"})
        if b.status != 400:
            wrong.append(f"bulk-revoke removeFromCRL -> {b}")
        still = self.api("GET", f"/api/v1/certificates/{cert_id}").json.get("status")
        self.r.check("5 removeFromCRL (any case) and unknown reasons refused on revoke and bulk-revoke -> 400; certificate not revoked",
                     not wrong and still != "Revoked", sample(wrong) or f"refused; status {still}")
        leaf = x509.load_pem_x509_certificates(self.versions(cert_id)[0]["pem_chain"].encode())[0]
        t0 = time.time()
        a = self.api("POST", f"/api/v1/certificates/{cert_id}/revoke", {"reason": "keyCompromise"})
        found, crl, resp = None, None, None
        while time.time() - t0 < 20:
            resp = self.h.req("GET", "/.well-known/pki/crl/iss-local")
            if resp.status == 200:
                crl = x509.load_der_x509_crl(resp.body)
                entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
                if entry is not None:
                    found = time.time() - t0
                    break
            time.sleep(0.25)
        reason_ok = False
        if found is not None:
            try:
                reason_ok = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
            except x509.ExtensionNotFound:
                reason_ok = False
        self.r.check("11 a revocation reaches the issuer's CRL (parsed with cryptography's CRL loader) within seconds, with its reason",
                     a.status == 200 and found is not None and found <= 10 and reason_ok,
                     f"revoke {a.status}; in the CRL after {found if found is None else round(found, 2)} s; reason keyCompromise {reason_ok}; "
                     f"Cache-Control {resp.headers.get('cache-control') if resp else None}")
        cc = resp.headers.get("cache-control", "") if resp else ""
        m = re.search(r"max-age=(\d+)", cc)
        self.r.check("11 the CRL's Cache-Control max-age is short (≤ 60 s, the re-sign interval)", bool(m) and int(m.group(1)) <= 60, cc)
        return found

    # -- 6. role matrix ---------------------------------------------------------------------
    def role_matrix(self):
        other_agent, other_cred = self.register_agent("probe-other")
        creds = {"none": None, "wrong": "probe-wrong-key-" + secrets.token_hex(8), "wrong-agent": "cca_" + secrets.token_hex(32),
                 "reader": self.reader, "agent": self.agent_cred, "other-agent": other_cred, "admin": self.admin}
        # Every bearer token that is not an API key and not the agent of the path counts as a failed
        # authentication (README); those calls come from fresh source addresses so that the
        # failed-auth limit (tested in 9) does not answer this walk with 429.
        bad_cred = {"wrong", "wrong-agent", "other-agent", "agent"}
        wrong, n, src, per_src = [], 0, self.h.fresh_source(), 0
        for method, path, op in operations(self.doc):
            access = op.get("x-certctl-access")
            p = concrete(path, self.agent)
            body = {} if request_schema(op) else None
            for who, key in creds.items():
                if who in bad_cred:
                    per_src += 1
                    if per_src > 10:  # stay under the failed-auth limit: this walk is about roles
                        src, per_src = self.h.fresh_source(), 1
                a = self.h.req(method, p, body=body, key=key, source=src if who in bad_cred else None)
                n += 1
                if access == "public":
                    ok, expect = a.status not in (401, 403), "not 401/403 (a public route ignores credentials)"
                elif who in ("none", "wrong", "wrong-agent", "other-agent"):
                    ok, expect = a.status == 401, "401"
                elif who == "admin":
                    ok, expect = a.status not in (401, 403), "allowed"
                elif who == "reader":
                    ok, expect = (a.status == 403, "403") if access in ("admin", "agent") else (a.status not in (401, 403), "allowed")
                else:  # the agent's own credential
                    ok, expect = (a.status not in (401, 403), "allowed") if access == "agent" else (a.status == 401, "401")
                if a.status >= 400 and a.status != 405 and not a.envelope():
                    ok, expect = False, expect + " with the error envelope"
                if a.status == 401 and "bearer" not in a.headers.get("www-authenticate", "").lower():
                    ok, expect = False, expect + " with WWW-Authenticate"
                if not ok:
                    wrong.append(f"{method} {path} as {who} ({access}): expected {expect}, got {a}")
        self.r.check(f"6 role matrix over every OpenAPI operation x {{none, wrong key, wrong agent credential, another agent's credential, non-admin key, the agent's credential, admin}} as x-certctl-access says",
                     not wrong, sample(wrong) or f"{n} calls as documented")
        self.role_policy(other_agent)

    def role_policy(self, other_agent):
        """The README's matrix, independently of the document's annotations, and the issue's cases."""
        admin_only = [(m, p) for m, p, _ in operations(self.doc)
                      if (m in ("POST", "PUT", "DELETE") and re.match(r"^/api/v1/(profiles|issuers|renewal-policies)", p))
                      or p == "/api/v1/certificates/bulk-revoke"]
        marked = [(m, p) for m, p in admin_only if next(op for mm, pp, op in operations(self.doc) if (mm, pp) == (m, p)).get("x-certctl-access") != "admin"]
        self.r.check("6 the document marks every README admin-only write (profiles, issuers, renewal policies, bulk-revoke) admin",
                     len(admin_only) == 10 and not marked, f"{len(admin_only)} operations; not admin: {marked}")
        before = self.api("GET", "/api/v1/profiles/prof-standard-tls").json
        tries = [
            self.api("PUT", "/api/v1/profiles/prof-standard-tls", {"acme_auth_mode": "trust_authenticated", "max_sans": 100000}, key="reader"),
            self.api("POST", "/api/v1/profiles", {"name": "probe-codesign", "extended_key_usages": ["codeSigning", "OCSPSigning", "timeStamping"]}, key="reader"),
            self.api("PUT", "/api/v1/issuers/iss-local", {"validity_days": 3650}, key="reader"),
            self.api("POST", "/api/v1/issuers", {"name": "probe-rogue", "type": "GenericCA"}, key="reader"),
            self.api("DELETE", "/api/v1/issuers/iss-local", key="reader"),
            self.api("PUT", "/api/v1/renewal-policies/rp-standard", {"renewal_window_days": 0}, key="reader"),
            self.api("POST", "/api/v1/renewal-policies", {"name": "probe-rogue-rp"}, key="reader"),
            self.api("DELETE", "/api/v1/profiles/prof-test", key="reader"),
            self.api("POST", "/api/v1/certificates/bulk-revoke", {"team_id": "t-platform"}, key="reader"),
            self.api("POST", f"/api/v1/agents/{self.agent}/heartbeat", {}, key="reader"),
        ]
        after = self.api("GET", "/api/v1/profiles/prof-standard-tls").json
        names = [p["name"] for p in self.api("GET", "/api/v1/profiles?per_page=500").json.get("data", [])]
        self.r.check("6 the non-admin key cannot change CA policy (the issue's trust_authenticated/max_sans 100000 PUT, a codeSigning profile, issuers, renewal policies, bulk-revoke, agent routes) -> 403, nothing changed",
                     all(t.status == 403 for t in tries) and after.get("acme_auth_mode") == before.get("acme_auth_mode") == "challenge"
                     and after.get("max_sans") == before.get("max_sans") and "probe-codesign" not in names,
                     f"{[t.status for t in tries]}; acme_auth_mode {after.get('acme_auth_mode')}, max_sans {after.get('max_sans')}")
        src = self.h.fresh_source()
        conf = [self.h.req("POST", f"/api/v1/agents/{other_agent}/heartbeat", body={}, key=self.agent_cred, source=src),
                self.h.req("GET", f"/api/v1/agents/{self.agent}", key=self.agent_cred, source=src),
                self.h.req("GET", "/api/v1/certificates", key=self.agent_cred, source=src),
                self.h.req("POST", f"/api/v1/agents/{self.agent}/heartbeat", body={}, key=self.agent_cred, source=src)]
        self.r.check("6 an agent credential is confined to its own agent routes (another agent's heartbeat, its own agent record, certificates -> 401; its heartbeat -> 200)",
                     [c.status for c in conf] == [401, 401, 401, 200], str([c.status for c in conf]))

    # -- 7. long values ---------------------------------------------------------------------
    def long_values(self):
        wrong, n = [], 0
        for method, path, op in operations(self.doc):
            schema = request_schema(op)
            if not schema:
                continue
            props, required, selector = object_schema(self.doc, schema)
            base = {k: placeholder(k, props.get(k, {})) for k in required | selector if k in props}
            p = concrete(path, self.agent)
            for name, s in props.items():
                t = types_of(s)
                items = s.get("items") or {}
                if "string" in t or s.get("enum") or s.get("oneOf"):
                    value = LONG
                elif "array" in t and "string" in types_of(resolve(self.doc, items)):
                    value = [LONG]
                else:
                    continue
                body = dict(base)
                body[name] = value
                a = self.api(method, p, body)
                n += 1
                if not (a.status == 400 and a.envelope() and name in a.message()):
                    wrong.append(f"{method} {path} {name}: {a}")
        self.r.check("7 every string property (and string-array item) of every request schema with a 10 KB value -> 400 naming the field",
                     not wrong and n > 50, sample(wrong) or f"{n} requests")
        wrong, n = [], 0
        for method, path, op in operations(self.doc):
            for prm in op.get("parameters", []):
                if prm["in"] == "query":
                    a = self.api(method, concrete(path, self.agent) + f"?{prm['name']}={LONG}")
                    n += 1
                    if a.status >= 500 or (a.status >= 400 and not a.envelope()):
                        wrong.append(f"{method} {path}?{prm['name']}=10KB -> {a}")
        for path in {concrete(p, self.agent) for m, p, _ in operations(self.doc) if "{" in p}:
            for junk in [LONG, "%00", "..", "%2e%2e", "%2F..%2F..%2Fetc%2Fpasswd", urllib.parse.quote("ünïcødé-☃"),
                         "%ff%fe", "a%0d%0aX-Injected:%201", "'%20OR%201=1--", "%25", "-1", "0"]:
                p = path.replace("probe-missing", junk, 1) if "probe-missing" in path else path.replace(self.agent, junk, 1)
                a = self.api("GET", p)
                n += 1
                if a.status >= 500 or a.status in (200, 201) and junk in ("%00", LONG) or (a.status >= 400 and a.status != 405 and not a.envelope()) \
                        or "x-injected" in a.headers:
                    wrong.append(f"GET {p[:80]} -> {a}")
        self.r.check("7 10 KB query values on every operation and junk path parameters (%00, .., encoded slashes, unicode, CRLF, 10 KB ids) -> 4xx envelope, never 5xx",
                     not wrong, sample(wrong) or f"{n} requests")

    # -- more hostile input -----------------------------------------------------------------
    def hostile(self):
        wrong = []
        body_ops = [(m, concrete(p, self.agent)) for m, p, op in operations(self.doc) if request_schema(op)]
        n = 0
        for method, p in body_ops:
            for raw, ctype in [(b"{", "application/json"), (b"[1,2", "application/json"), (b'{"name":}', "application/json"),
                               (b"\xff\xfe\x00", "application/json"), (b'{"name":"x"}', "text/plain"), (b"name=x", "application/x-www-form-urlencoded"),
                               (b'{"name":"a","name":"b","name":"c"}', "application/json"), (b"null", "application/json"),
                               (b'"string"', "application/json"), (b"[" * 5000 + b"]" * 5000, "application/json"),
                               (b'{"a":' * 3000 + b"1" + b"}" * 3000, "application/json"), (b'{"name":"\\ud800"}', "application/json"),
                               (b'{"name":"x\\u0000y"}', "application/json")]:
                a = self.h.req(method, p, raw=raw, key=self.admin, ctype=ctype)
                n += 1
                if a.status >= 500 or (a.status >= 400 and not a.envelope()):
                    wrong.append(f"{method} {p} {raw[:20]!r} ({ctype}) -> {a}")
        self.r.check("+ malformed JSON, wrong content types, duplicate keys, deep nesting, lone surrogates, NUL on every body operation -> 2xx/4xx envelope, never 5xx",
                     not wrong, sample(wrong) or f"{n} requests")
        a = self.h.req("POST", "/api/v1/teams", raw=b'{"name":"' + b"a" * (1 << 20) + b'"}', key=self.admin)
        c = self.h.req("POST", "/acme/profile/prof-test/new-order", raw=b"{" + b" " * (1 << 20) + b"}", ctype="application/jose+json")
        self.r.check("+ bodies over the documented 1 MiB limit -> 413 (REST envelope; ACME problem document)",
                     a.status == 413 and a.envelope() and c.status == 413 and c.problem(), f"REST {a}; ACME {c}")
        dup = self.api("POST", "/api/v1/teams", raw=b'{"name":"probe-dup-a","name":"probe-dup-b"}')
        self.r.check("+ duplicate JSON keys are refused or resolved, never 5xx", dup.status < 500, repr(dup))
        m = [self.h.req(meth, p, key=self.admin) for meth, p in [("PATCH", "/api/v1/certificates"), ("DELETE", "/api/v1/certificates"),
                                                                  ("PUT", "/api/v1/stats/summary"), ("POST", "/health"), ("TRACE", "/api/v1/version")]]
        self.r.check("+ methods a route does not take -> 405 with the error envelope", all(x.status == 405 and x.envelope() for x in m),
                     str([x.status for x in m]))
        q = []
        for qs in ["per_page=-1", "per_page=0", "per_page=501", "per_page=99999999999999999999", "page=0", "page=abc",
                   "cursor=garbage", "cursor=" + "A" * 5000, "cursor=%00", "sort=bogus", "sort=name;DROP%20TABLE%20x",
                   "sort=--name", "status=Nope", "page_size=-5", "cursor=eyJ4IjoxfQ&page_size=10", "expires_before=yesterday"]:
            for lst in ["/api/v1/certificates", "/api/v1/agents", "/api/v1/jobs", "/api/v1/audit", "/api/v1/notifications", "/api/v1/teams"]:
                a = self.api("GET", f"{lst}?{qs}")
                if a.status >= 500 or (a.status >= 400 and not a.envelope()):
                    q.append(f"{lst}?{qs[:30]} -> {a}")
                documented = {x["name"] for x in self.doc["paths"][lst]["get"].get("parameters", [])}
                if qs in ("per_page=-1", "per_page=0", "per_page=501", "page=0", "sort=bogus") and qs.split("=")[0] in documented \
                        and a.status != 400:
                    q.append(f"{lst}?{qs} -> {a.status} (expected 400)")
        self.r.check("+ query junk on list endpoints (negative/huge/zero limits, bad cursors, bad sort, unknown status) -> 400 envelope, never 5xx",
                     not q, sample(q) or "all refused or answered")
        a = self.h.req("GET", "/api/v1/certificates", key=self.admin, headers={"X-Probe": "x" * 100000})
        b = self.h.req("GET", "/api/v1/version", headers={"X-Request-ID": "evil\u00e9".encode("latin-1").decode("latin-1") + "x" * 300})
        self.r.check("+ a 100 KB header and a hostile X-Request-ID -> 4xx or sanitised, never 5xx",
                     a.status < 500 and b.status < 500 and "x" * 300 not in b.headers.get("x-request-id", ""), f"{a.status}, {b.status} id {b.headers.get('x-request-id')}")
        unknown = self.h.req("GET", "/api/v1/nothing-here", key=self.admin)
        self.r.check("+ unknown /api path -> 404 envelope", unknown.status == 404 and unknown.envelope(), repr(unknown))

    # -- 8. connection limits (raw sockets, in a thread) ------------------------------------
    def connection_limits(self, results):
        """Starts the raw-socket scenarios, one thread each (they wait for server timeouts, so they
        run alongside the other checks); each small closure below is one scenario, whose result
        goes into `results` for `report_connections`."""
        def until_closed(s, limit):
            t0, got = time.time(), b""
            s.settimeout(limit)
            try:
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    got += d
            except socket.timeout:
                return None, got
            except OSError:
                pass
            return time.time() - t0, got

        def run(name, fn):
            try:
                results[name] = fn()
            except Exception as e:  # noqa: BLE001 - a probe failure is reported, not raised
                results[name] = (None, f"error {e}")

        def unfinished_head():
            s = socket.create_connection((self.h.host, self.h.port))
            s.sendall(b"GET /health HTTP/1.1\r\nHost: probe\r\nX-Slow: ")
            t, got = until_closed(s, 90)
            s.close()
            return t, got[:60]

        def drip():
            s = socket.create_connection((self.h.host, self.h.port))
            s.sendall(b"GET /health HTTP/1.1\r\nHost: probe\r\n")
            t0 = time.time()
            s.settimeout(1)
            try:
                while time.time() - t0 < 90:
                    s.sendall(b"X")
                    try:
                        if s.recv(1) == b"":
                            return time.time() - t0, "closed"
                    except socket.timeout:
                        pass
            except OSError:
                return time.time() - t0, "closed (send failed)"
            return None, "still open after 90 s"

        def idle_keepalive():
            s = socket.create_connection((self.h.host, self.h.port))
            s.sendall(b"GET /health HTTP/1.1\r\nHost: probe\r\n\r\n")
            s.settimeout(5)
            head = s.recv(65536)
            t, got = until_closed(s, 120)
            s.close()
            return t, head[:15]

        def stalled_body():
            s = socket.create_connection((self.h.host, self.h.port))
            s.sendall(f"POST /api/v1/teams HTTP/1.1\r\nHost: probe\r\nAuthorization: Bearer {self.admin}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"na".encode())
            t, got = until_closed(s, 120)
            s.close()
            return t, got[:40]

        def http10():
            s = socket.create_connection((self.h.host, self.h.port))
            s.sendall(b"GET /api/v1/version HTTP/1.0\r\n\r\n")
            t, got = until_closed(s, 15)
            s.close()
            return t, got[:20]

        def many_unfinished(n=300):
            socks = []
            for i in range(n):
                s = socket.create_connection((self.h.host, self.h.port))
                s.sendall(b"GET /health HTTP/1.1\r\nHost: probe\r\nX-Slow: " + str(i).encode())
                socks.append(s)
            t0 = time.time()
            c = http.client.HTTPConnection(self.h.host, self.h.port, timeout=10)
            c.request("GET", "/health")
            status = c.getresponse().status
            answered = time.time() - t0
            c.close()
            open_after = 0
            for s in socks:
                s.settimeout(max(0.1, 16 - (time.time() - t0)))
                try:
                    while s.recv(65536):
                        pass
                except socket.timeout:
                    open_after += 1
                except OSError:
                    pass
                s.close()
            return (status, answered, open_after, time.time() - t0), n

        threads = [threading.Thread(target=run, args=(n, f)) for n, f in
                   [("unfinished_head", unfinished_head), ("drip", drip), ("idle_keepalive", idle_keepalive),
                    ("stalled_body", stalled_body), ("http10", http10), ("many_unfinished", many_unfinished)]]
        for t in threads:
            t.start()
        return threads

    def report_connections(self, res, header_timeout, idle_timeout):
        t, got = res.get("unfinished_head", (None, ""))
        self.header_read = t
        self.r.check(f"8 a connection that never finishes its request head is closed within the header-read timeout ({header_timeout} s)",
                     t is not None and t <= header_timeout + 3, f"closed after {t if t is None else round(t, 2)} s, sent {got!r}")
        t, got = res.get("drip", (None, ""))
        self.r.check("8 a head dripped one byte a second is still closed at the header-read timeout",
                     t is not None and t <= header_timeout + 3, f"{got} after {t if t is None else round(t, 2)} s")
        t, got = res.get("idle_keepalive", (None, ""))
        self.idle_keepalive = t
        self.r.check(f"8 an idle keep-alive connection is closed per the documented limit (header-read timeout {header_timeout} s)",
                     t is not None and t <= header_timeout + 3 and got.startswith(b"HTTP/1.1 200"), f"closed after {t if t is None else round(t, 2)} s")
        t, got = res.get("stalled_body", (None, ""))
        self.stalled_body = (t, got)
        self.r.check(f"8 a request whose body stalls is ended within the idle timeout ({idle_timeout} s) or the request deadline",
                     t is not None and t <= idle_timeout + 5, f"after {t if t is None else round(t, 2)} s, answer {got!r}")
        r, n = res.get("many_unfinished", (None, 0))
        ok = isinstance(r, tuple) and r[0] == 200 and r[1] < 2 and r[2] == 0
        self.r.check(f"8 {n} connections holding unfinished heads at once: a new client is still served at once, and all {n} are closed by the header-read timeout",
                     ok, f"GET /health {r[0]} in {r[1]:.3f} s; {r[2]} still open after {r[3]:.1f} s" if isinstance(r, tuple) else str(n))
        t, got = res.get("http10", (None, ""))
        self.r.check("+ an HTTP/1.0 request is answered 200 and the connection closed", t is not None and got.startswith(b"HTTP/1.") and b" 200 " in got,
                     f"{got!r} closed after {t if t is None else round(t, 2)} s")

    # -- 9. failed-authentication limit -----------------------------------------------------
    def auth_failures(self):
        out = {}
        for kind in ("key", "agent"):
            src = self.h.fresh_source()
            statuses, retry_after = {}, None
            t0 = time.time()
            for i in range(2000):
                if kind == "key":
                    a = self.h.req("GET", "/api/v1/certificates", key=f"probe-guess-{i}", source=src)
                else:
                    a = self.h.req("POST", f"/api/v1/agents/{self.agent}/heartbeat", body={}, key="cca_" + secrets.token_hex(32), source=src)
                statuses[a.status] = statuses.get(a.status, 0) + 1
                if a.status == 429 and retry_after is None:
                    retry_after = a.headers.get("retry-after")
            elapsed = time.time() - t0
            valid = self.h.req("GET", "/api/v1/certificates", key=self.admin, source=src)
            valid_reader = self.h.req("GET", "/api/v1/version", key=self.reader, source=src)
            ok = statuses.get(429, 0) > 1900 and statuses.get(401, 0) <= 25 and set(statuses) <= {401, 429} \
                and retry_after and retry_after.isdigit() and valid.status == 200
            out[kind] = statuses
            self.r.check(f"9 2,000 wrong {'API keys' if kind == 'key' else 'agent credentials'} from one address -> 429 with Retry-After after the limit, while a valid key from that address still works",
                         ok, f"{statuses} in {elapsed:.1f} s, Retry-After {retry_after}; valid admin key {valid.status}, non-admin {valid_reader.status}")
        return out

    # -- 10/12. ACME ------------------------------------------------------------------------
    def acme(self):
        """ACME over the compact client; returns an issued (and revoked) leaf for the CRL check."""
        test = Acme(self.h, "prof-test").register()
        std = Acme(self.h, "prof-standard-tls").register()
        self.acme_names(test, std)
        leaf = self.acme_ari(test)
        self.acme_revoke_and_deactivate(test, leaf)
        self.acme_paths(test)
        return leaf

    def acme_names(self, test, std):
        # 2. names on new-order (both profiles).
        wrong = []
        for bad in ACME_BAD_NAMES:
            for acct in (test, std):
                a = acct.order([bad])
                shown = bad if len(bad) <= 60 else bad[:20]
                if not (400 <= a.status < 500 and a.problem() and a.json["type"].endswith((":rejectedIdentifier", ":malformed", ":unsupportedIdentifier"))
                        and shown in a.message()):
                    wrong.append(f"{acct.dir_path.split('/')[3]} {bad[:30]!r} -> {a}")
        a = test.post(test.dir["newOrder"], {"identifiers": [{"type": "ip", "value": "10.0.0.1"}]})
        if not (400 <= a.status < 500 and a.problem()):
            wrong.append(f"ip identifier -> {a}")
        many = std.order([f"m{i}.probe.example" for i in range(101)])
        self.r.check("2 ACME new-order with invalid names -> rejectedIdentifier problem naming the value (both demo profiles)", not wrong,
                     sample(wrong) or f"{len(ACME_BAD_NAMES) * 2} refused")
        self.r.check("2 ACME new-order with 101 names on prof-standard-tls (max_sans 100) -> problem document",
                     400 <= many.status < 500 and many.problem() and "100" in many.message(), repr(many))
        # finalize with names other than the order's.
        o = test.order(["fin.probe.example"])
        fin = []
        for names, cn in [(["*.*.com"], "*.*.com"), (["fin.probe.example", "extra.probe.example"], None), ([], "fin.probe.example "),
                          (["other.probe.example"], None), (["fin.probe.example"], "exa mple.com")]:
            a = test.post(o.json["finalize"], {"csr": finalize_der(names, cn)})
            if not (400 <= a.status < 500 and a.problem() and a.json["type"].endswith(":badCSR")):
                fin.append(f"{names} cn={cn!r} -> {a}")
        a = test.post(o.json["finalize"], {"csr": "!!!not-base64!!!"})
        if not (400 <= a.status < 500 and a.problem()):
            fin.append(f"garbage CSR -> {a}")
        self.r.check("2 ACME finalize with a CSR naming anything but the order's identifiers (or invalid names) -> badCSR problem", not fin,
                     sample(fin) or "refused")

    def acme_ari(self, test):
        # issuance, ARI.
        leaf, order, order_url = test.issue(["ari1.probe.example", "ari2.probe.example"])
        cid = cert_id(leaf)
        ri = self.h.req("GET", Acme.path(test.dir["renewalInfo"]) + "/" + cid)
        r1 = test.order(["ari1.probe.example"], replaces=cid)
        r2 = test.order(["ari1.probe.example", "ari2.probe.example"], replaces=cid)
        fetched = test.post(r1.headers.get("location", test.kid), None) if r1.status == 201 else None
        self.r.check("10 ARI: an order naming `replaces` is accepted and echoes it (new-order answer and a later fetch); renewal-info answers the certID",
                     ri.status == 200 and r1.status == 201 and r1.json.get("replaces") == cid and fetched is not None and fetched.json.get("replaces") == cid,
                     f"renewal-info {ri.status}; order {r1.status} replaces={r1.json.get('replaces') if r1.json else None}; fetch {fetched.json.get('replaces') if fetched else None}")
        self.r.check("10 ARI: the same `replaces` again while the first order is open -> 409 alreadyReplaced",
                     r2.status == 409 and r2.problem() and r2.json["type"].endswith(":alreadyReplaced"), repr(r2))
        aki_part = cid.split(".")[0]
        fake = aki_part + "." + b64u(b"\x01" + secrets.token_bytes(15))
        other = Acme(self.h, "prof-test").register()
        oleaf, _, _ = other.issue(["someone-else.probe.example"])
        refused = [test.order(["ari1.probe.example"], replaces=fake), test.order(["mine.probe.example"], replaces=cert_id(oleaf)),
                   test.order(["ari1.probe.example"], replaces="not-a-cert-id"), test.order(["ari1.probe.example"], replaces=LONG)]
        self.r.check("10 ARI: `replaces` of a certificate never issued here, of another account's certificate with no shared name, or malformed -> 4xx problem",
                     all(400 <= x.status < 500 and x.problem() for x in refused), str([repr(x)[:90] for x in refused]))
        return leaf

    def acme_revoke_and_deactivate(self, test, leaf):
        # 5. removeFromCRL over ACME.
        der = b64u(leaf.public_bytes(serialization.Encoding.DER))
        rv = [test.post(test.dir["revokeCert"], {"certificate": der, "reason": r}) for r in (8, 7, 11, -1, 2 ** 40)]
        self.r.check("5 ACME revoke-cert with reason 8 (removeFromCRL), 7 and out-of-range reasons -> badRevocationReason problem",
                     all(x.status == 400 and x.problem() and x.json["type"].endswith(":badRevocationReason") for x in rv), str([x.status for x in rv]))
        ok_rev = test.post(test.dir["revokeCert"], {"certificate": der, "reason": 4})
        again = test.post(test.dir["revokeCert"], {"certificate": der, "reason": 4})
        self.r.check("5 ACME revoke-cert with reason 4 -> 200, again -> alreadyRevoked",
                     ok_rev.status == 200 and again.status == 400 and again.problem() and again.json["type"].endswith(":alreadyRevoked"),
                     f"{ok_rev.status}, {again}")
        # 10. deactivation.
        d = Acme(self.h, "prof-test").register()
        deact = d.post(d.kid, {"status": "deactivated"})
        after = [d.order(["deact.probe.example"]), d.post(d.kid, None), d.post(d.dir["newAccount"], {"termsOfServiceAgreed": True}, use_jwk=True)]
        self.r.check("10 a deactivated account gets 401 unauthorized (RFC 8555 §7.3.6) on new-order, account fetch and new-account with its key",
                     deact.status == 200 and deact.json.get("status") == "deactivated"
                     and all(x.status == 401 and x.problem() and x.json["type"].endswith(":unauthorized") for x in after),
                     f"deactivate {deact.status}; then {[x.status for x in after]}")

    def acme_paths(self, test):
        # 12. unknown paths, junk path parameters, and their headers.
        def not_problems(paths):
            wrong = []
            for p in paths:
                for method in ("GET", "POST"):
                    a = self.h.req(method, p, raw=b"{}" if method == "POST" else None, ctype="application/jose+json")
                    if not (400 <= a.status < 500 and a.problem() and a.headers.get("replay-nonce") and a.headers.get("cache-control") == "no-store"):
                        wrong.append(f"{method} {p[:60]} -> {a.status} {a.headers.get('content-type')} {a.text[:60]!r} "
                                     f"nonce={bool(a.headers.get('replay-nonce'))} cache-control={a.headers.get('cache-control')}")
            return wrong
        unknown = ["/acme/nothing", "/acme/profile/no-such-profile/directory", "/acme/profile/prof-test/nothing", "/acme/%00",
                   "/acme/profile/prof-test/order/does-not-exist", "/acme/" + "a" * 5000,
                   "/acme/profile/" + urllib.parse.quote("☃") + "/new-nonce", "/acme/profile/prof-test/renewal-info/",
                   "/acme/profile/prof-test/renewal-info/a.b", "/acme/profile/%ff/directory"]
        wrong = not_problems(unknown)
        self.r.check("12 unknown paths under /acme/ (GET and POST) -> problem document with Replay-Nonce and Cache-Control: no-store, as docs/operator/acme.md says",
                     not wrong, sample(wrong) or f"{2 * len(unknown)} problem documents")
        junk = [root + route.replace("{x}", j) for root in ("/acme/", "/acme/profile/prof-test/") for route in ACME_PARAM_ROUTES
                for j in ("%ff", "%c3%28", "%00", "a" * 3000, "..%2F..", "%E2%98%83")]
        wrong = not_problems(junk)
        self.r.check("12 junk in every ACME path parameter (invalid UTF-8, NUL, 3,000 characters, encoded slashes, unicode; GET and POST) -> problem document with Replay-Nonce and no-store",
                     not wrong, sample(wrong) or f"{2 * len(junk)} problem documents")
        getpost = self.h.req("GET", Acme.path(test.kid))
        dirr = self.h.req("GET", test.dir_path)
        nn = self.h.req("GET", Acme.path(test.dir["newNonce"]))
        self.r.check("12 a GET on a POST-as-GET resource -> 405 problem with Replay-Nonce and no-store; successful GET directory carries neither; GET new-nonce 204 with both",
                     getpost.status == 405 and getpost.problem() and getpost.headers.get("replay-nonce") and getpost.headers.get("cache-control") == "no-store"
                     and dirr.status == 200 and "replay-nonce" not in dirr.headers and nn.status == 204 and nn.headers.get("replay-nonce")
                     and nn.headers.get("cache-control") == "no-store",
                     f"GET account {getpost.status} nonce={bool(getpost.headers.get('replay-nonce'))}; directory nonce={dirr.headers.get('replay-nonce')}; new-nonce {nn.status}")
        # hostile JWS.
        wrong = []
        for raw in [b"{", b"null", b'{"protected":"","payload":"","signature":""}', b'{"protected":"eyJhbGciOiJub25lIn0","payload":"","signature":""}',
                    json.dumps({"protected": b64u(b'{"alg":"HS256","nonce":"x","url":"x"}'), "payload": "", "signature": "AA"}).encode(),
                    b'{"protected":"' + b"A" * 100000 + b'","payload":"","signature":""}']:
            for url in (test.dir["newAccount"], test.dir["newOrder"], test.kid, test.dir["revokeCert"]):
                a = self.h.req("POST", Acme.path(url), raw=raw, ctype="application/jose+json")
                if not (400 <= a.status < 500 and a.problem()):
                    wrong.append(f"{Acme.path(url)} {raw[:20]!r} -> {a}")
        a = test.post(test.dir["newOrder"], None, raw_payload="!!!")
        if not (400 <= a.status < 500 and a.problem()):
            wrong.append(f"bad payload encoding -> {a}")
        a = self.h.req("POST", Acme.path(test.dir["newOrder"]), raw=b"{}", ctype="application/json")
        if not (400 <= a.status < 500 and a.problem()):
            wrong.append(f"wrong content type -> {a}")
        self.r.check("+ ACME: garbled JWS, alg none/HS256, bad encodings, 100 KB protected header, wrong content type -> 4xx problem documents",
                     not wrong, sample(wrong) or "all refused")

    def acme_crl(self, leaf):
        t0 = time.time()
        while time.time() - t0 < 20:
            r = self.h.req("GET", "/.well-known/pki/crl/iss-local")
            if r.status == 200 and x509.load_der_x509_crl(r.body).get_revoked_certificate_by_serial_number(leaf.serial_number):
                return self.r.check("11 an ACME revocation reaches the CRL within seconds", True, f"after {time.time() - t0:.2f} s")
            time.sleep(0.25)
        return self.r.check("11 an ACME revocation reaches the CRL within seconds", False, "not in the CRL after 20 s")

    def huge_window_ari(self):
        """A renewal policy with a 2147483647-day window on an ACME certificate: renewal-info must still answer."""
        if not self.huge_window_policy:
            return self.r.check("1 a renewal policy window of 2147483647 days is refused or harmless", True, "refused at write time")
        acct = Acme(self.h, "prof-test").register()
        leaf, order, _ = acct.issue(["window.probe.example"])
        certs = self.api("GET", "/api/v1/certificates?per_page=500&sort=-created_at").json.get("data", [])
        mc = next((c for c in certs if c.get("common_name") == "window.probe.example"), None)
        upd = self.api("PUT", f"/api/v1/certificates/{mc['id']}", {"renewal_policy_id": self.huge_window_policy}) if mc else None
        ri = self.h.req("GET", Acme.path(acct.dir["renewalInfo"]) + "/" + cert_id(leaf))
        return self.r.check("1 a renewal policy window of 2147483647 days (accepted at write time) on an issued certificate: renewal-info answers, no 5xx",
                            ri.status == 200 and (upd is None or upd.status < 500), f"policy assign {upd.status if upd else None}; renewal-info {ri}")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
    ap.add_argument("--bin", default=os.path.join(target, "release", "certctl-dev"), help="the certctl-dev binary (default target/release/certctl-dev)")
    ap.add_argument("--url", help="probe a running server on this machine's loopback instead (needs --admin-key and "
                                  "--reader-key; skips the server-keygen instance; its demo seed must be loaded)")
    ap.add_argument("--admin-key", help="with --url: an admin API key")
    ap.add_argument("--reader-key", help="with --url: a non-admin API key")
    ap.add_argument("--job-wait", type=float, default=20,
                    help="seconds to wait for the job processor (certctl-dev here runs it every 1 s; with --url use "
                         "more than the server's CERTCTL_JOB_PROCESSOR_INTERVAL)")
    ap.add_argument("--server-log", help="with --url: the server's log, searched for 'panicked'")
    ap.add_argument("--header-read-timeout", type=float, default=10, help="documented header-read timeout to hold the server to (s)")
    ap.add_argument("--idle-timeout", type=float, default=60, help="documented idle timeout (s)")
    ap.add_argument("--out", default=os.path.join(target, "probe"), help="where the server logs go (default target/probe)")
    args = ap.parse_args()
    if args.url and not (args.admin_key and args.reader_key):
        ap.error("--url needs --admin-key and --reader-key")
    return args


def run_all(p, args, env, run_dir, servers, logs, clients):
    """Every check, in an order where each finds the state it needs."""
    h, report = p.h, p.r
    p.doc = h.req("GET", "/api/v1/openapi.json").json
    ops = list(operations(p.doc))
    report.check("0 the OpenAPI document is served at /api/v1/openapi.json", len(ops) > 40, f"{len(ops)} operations")
    conn_results = {}
    threads = p.connection_limits(conn_results)
    p.numbers()
    p.names_api()
    p.agent_flow()
    p.retired_agent()
    p.role_matrix()
    p.long_values()
    p.hostile()
    p.revocation_and_crl(p.cert_with_version)
    leaf = p.acme()
    p.acme_crl(leaf)
    p.huge_window_ari()
    p.auth_failures()
    if not args.url:
        kg = DevServer(args.bin, os.path.join(run_dir, "server-keygen.log"), dict(env, CERTCTL_KEYGEN_MODE="server"))
        servers.append(kg)
        logs.append(kg.log_path)
        h2 = Http("127.0.0.1", kg.port)
        h2.valid_keys = set(h.valid_keys)
        clients.append(h2)
        p.server_keygen(h2)
        kg.stop()
    for t in threads:
        t.join(150)
    p.report_connections(conn_results, args.header_read_timeout, args.idle_timeout)
    after = h.req("GET", "/ready")
    report.check("+ the server is still ready after the probe", after.status == 200, repr(after))


def summarize(report, clients, logs, probe, run_dir, started):
    """The whole-run checks (5xx, request ids, ACME index links, panics) and the summary line."""
    total = sum(c.sent for c in clients)
    five = [x for c in clients for x in c.five_xx]
    report.check("no 5xx answer to any tracked request", not five, sample(five, 6) or f"0 of {total}")
    missing = [x for c in clients for x in c.no_request_id]
    report.check("every tracked response carries X-Request-ID (README: Errors)", not missing, sample(missing) or f"all {total}")
    no_index = [x for c in clients for x in c.acme_no_index]
    report.check("every /acme/ response carries Link: <directory>;rel=\"index\" (docs/operator/acme.md)", not no_index,
                 sample(no_index) or "all of them")
    panics = []
    for path in logs:
        with open(path, "rb") as f:
            panics += [ln.decode("utf-8", "replace").strip()[:200] for ln in f if b"panicked" in ln]
    if logs:
        report.check("no panic in the server log", not panics, sample(panics) or f"searched {', '.join(logs)}")
    failed = report.failed()
    statuses = {}
    for c in clients:
        for k, v in c.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
    statuses = dict(sorted(statuses.items()))
    print(f"\nprobe: {len(report.results) - len(failed)}/{len(report.results)} checks passed; {total} requests, "
          f"{len(five)} 5xx, {len(panics)} panics; statuses {statuses} "
          f"({sum(c.waited for c in clients)} per-key 429s waited out and retried); "
          f"header-read close {getattr(probe, 'header_read', None)} s; {time.time() - started:.0f} s; logs in {run_dir}")
    return 1 if failed else 0


def main():
    args = parse_args()
    report = Report()
    servers = []
    clients = []
    os.makedirs(args.out, exist_ok=True)
    run_dir = tempfile.mkdtemp(prefix=datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-"), dir=args.out)
    logs = []
    started = time.time()
    probe = None
    env = {}
    try:
        if args.url:
            u = urllib.parse.urlsplit(args.url)
            host, port, admin, reader = u.hostname, u.port or 80, args.admin_key, args.reader_key
            if args.server_log:
                logs.append(args.server_log)
        else:
            if not os.access(args.bin, os.X_OK):
                print(f"probe: no certctl-dev at {args.bin} (make probe builds it: cargo build --workspace --release --all-targets --locked)", file=sys.stderr)
                return 2
            admin, reader = "probe-admin-" + secrets.token_hex(12), "probe-reader-" + secrets.token_hex(12)
            env = {"CERTCTL_API_KEYS_NAMED": f"probe-admin:{admin}:admin,probe-reader:{reader}",
                   "CERTCTL_JOB_PROCESSOR_INTERVAL": "1s", "CERTCTL_KEYGEN_MODE": "agent",
                   # The per-key limit (50/s) would turn this probe's own valid traffic into 429s;
                   # the failed-authentication limit stays at its default (20 per minute).
                   "CERTCTL_RATE_LIMIT_RPS": "5000", "CERTCTL_RATE_LIMIT_BURST": "10000"}
            print(f"probe: starting {args.bin} (logs in {run_dir})", flush=True)
            main_srv = DevServer(args.bin, os.path.join(run_dir, "server.log"), env)
            servers.append(main_srv)
            logs.append(main_srv.log_path)
            host, port = "127.0.0.1", main_srv.port
        h = Http(host, port)
        h.valid_keys = {admin, reader}
        clients.append(h)
        probe = Probe(h, admin, reader, report, args)
        run_all(probe, args, env, run_dir, servers, logs, clients)
    except Exception as e:  # noqa: BLE001 - the probe reports what stopped it
        import traceback
        traceback.print_exc()
        report.check("probe ran to the end", False, f"{type(e).__name__}: {e}")
    finally:
        for s in servers:
            s.stop()
    return summarize(report, clients, logs, probe, run_dir, started)


if __name__ == "__main__":
    sys.exit(main())
