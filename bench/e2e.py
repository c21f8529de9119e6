#!/usr/bin/env python3
"""End-to-end benchmark of mailtriage on a real, private Dovecot + Postfix on loopback.

    python3 bench/e2e.py [--count 1000] [--quick] [--out FILE] [--only PHASES] [--no-build]
                         [--idle-seconds 600] [--year-state DIR]

Needs root (scripts/mailstack starts Postfix and Dovecot) and Python 3 (stdlib only). It starts
its own stack with scripts/mailstack (own port base, state dir under /tmp, purged at the end),
builds target/dist/mailtriage, the tuned build (unless --no-build or --binary), and measures, with the peers
in the same run so that ratios hold on a noisy machine:

  accuracy   `mailtriage triage --json` on the generated corpus: recall and precision of the
             shipped rules' `technical` category against the generator's ground truth
             (category "outage"); beside it an imapfilter-style client regex on the raw,
             undecoded subject and body
  footprint  50 watched idle mailboxes: time from start until every mailbox logged
             "Mailbox connected." (READY), and RSS after 5 s of IDLE
  flow       N messages sent by SMTP to monitoring@: time until the last forward is in
             support@/billing@/sales@ and the last acknowledgement in the customers'
             INBOXes; the same flow through Dovecot Sieve (redirect + vacation at delivery);
             the ratio ours / Sieve; and the mail server's own floor for our flow: the same
             incoming plus the very mails the daemon sent (bytes from the Maildirs), submitted
             as the incoming goes in, with no IMAP and no processing. In --rounds rounds
             (Sieve first in odd ones, the daemon first in even ones); the figure is the
             median of the rounds' ratios; CPU used by the machine and by each program
  latency    messages sent one by one 1.5 s apart: SMTP accepted -> forward accepted by SMTP
             (daemon log) and -> forward in the queue's INBOX; beside it the server's own IDLE
             push delay for the same messages (sent to a second, untouched mailbox too, where
             a client idles)
  backlog    N messages APPENDed before the daemon starts: time until every forward and
             acknowledgement was accepted by SMTP, and the RSS peak (VmHWM); beside it the raw
             limit of the same run: one UID FETCH of all N plus the same number of SMTP
             submissions on one connection, over the same TLS; the ratio
  bigbacklog (only with --only) --big-count (50) messages of --big-mb (8) MB, each an outage
             request with a log attached, APPENDed before the daemon starts: the RSS peak
             (VmHWM) while all are forwarded, and the state directory's size on disk once
             the outbox drained and the daemon stopped, against the input's size
  idle       4 watched mailboxes, no mail, --idle-seconds (600; --quick: 60) after READY:
             the daemon's CPU time (target under 1 s per 600 s) and the log lines it wrote
             after "Ready." (target 0); then the same with a fresh daemon while a reader
             opens and reads rules.toml and mailtriage.toml every second (figures *_reading)
  year       the daemon started on a year of a busy desk (60,000 tickets, ~200,000 messages,
             made by `cargo bench --bench year`, run first when --year-state holds no state):
             READY and RSS when idle, beside the bench's own state size / raw mail and
             follow-up scan. Not in --quick
  firststart a first start (start = "new") on a mailbox of 50,000 messages written into
             its Maildir and indexed by Dovecot: READY, and no mail sent. Not in --quick

Every figure is one JSON line in --out (default target/e2e-bench.jsonl, overwritten); a table
with the issue's targets is printed at the end. Mail arrival is seen by counting files in the
users' Maildirs (no IMAP polling load); the daemon's events come from its log timestamps.
"""
import argparse
import datetime as dt
import imaplib
import json
import os
import queue
import re
import shutil
import signal
import smtplib
import socket
import statistics
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MAILSTACK = os.path.join(ROOT, "scripts", "mailstack")
SHIPPED_RULES = os.path.join(ROOT, "rules.toml")
# The shipped rules with the per-domain and hourly caps on mail to customers raised (set
# in main): the bench's 20 customers share one domain, which the shipped caps would treat
# as a flood; the per-address daily cap stays as shipped.
RULES = SHIPPED_RULES


def bench_rules(work):
    with open(SHIPPED_RULES) as f:
        text = f.read()
    old = "acks_per_sender_per_day = 5"
    assert old in text, "the shipped rules changed: adapt bench_rules"
    text = text.replace(old, old + "\nacks_per_domain_per_hour = 1000000\nacks_per_hour = 1000000", 1)
    path = os.path.join(work, "bench-rules.toml")
    with open(path, "w") as f:
        f.write(text)
    return path
SIEVE = os.path.join(HERE, "monitoring.sieve")
sys.path.insert(0, HERE)
from gen_mail import generate  # noqa: E402

QUEUES = ["support", "billing", "sales"]
CUSTOMERS = ["customer%d" % i for i in range(1, 21)]
USERS = ["monitoring"] + QUEUES + CUSTOMERS  # every mailbox a flow touches
# The testbed's outage regex, as imapfilter's `match_subject`/`match_body` would run it.
RAW_RE = re.compile(r"(?i)(не работает|ошибка|error|down|500)")
# Ports of a stack: base + these (LMTP, SMTP, IMAP, SMTPS, submission, IMAPS).
PORT_OFFSETS = (24, 25, 143, 465, 587, 993)
IDLE_USERS = 46  # plus the 4 mailboxes of rules.toml: 50 watched mailboxes


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


class Results:
    """One JSON line per figure, plus the rows of the final table."""

    def __init__(self, path, meta):
        self.path = path
        self.meta = meta
        self.rows = []
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        open(path, "w").close()

    def add(self, phase, figure, value, unit, target=None, met=None, **extra):
        rec = dict(self.meta, phase=phase, figure=figure, value=value, unit=unit)
        if target is not None:
            rec["target"] = target
            rec["met"] = met
        rec.update(extra)
        with open(self.path, "a") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.rows.append((phase, figure, value, unit, target, met))
        log("  %-10s %-34s %s %s" % (phase, figure, value, unit))

    def table(self):
        out = ["| phase | figure | value | target | met |", "| --- | --- | --- | --- | --- |"]
        for phase, figure, value, unit, target, met in self.rows:
            v = "%s %s" % (value, unit) if unit else str(value)
            out.append("| %s | %s | %s | %s | %s |" % (phase, figure, v, target or "",
                                                       "" if met is None else ("yes" if met else "**no**")))
        return "\n".join(out)


# ------------------------------------------------------------------------------ the stack
class Stack:
    """A private Dovecot + Postfix started by scripts/mailstack; purged by close()."""

    def __init__(self, base, extra_users):
        self.dir = tempfile.mkdtemp(prefix="mt-bench-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.base = base
        self.extra_users = extra_users
        out = self._run("up", self.dir).stdout
        env = {}
        for line in out.splitlines():
            if line.startswith("export "):
                k, _, v = line[7:].partition("=")
                env[k] = v.strip("'")
        self.env = env
        self.host = env["MAILSTACK_HOST"]
        self.domain = env["MAILSTACK_DOMAIN"]
        self.imap_port = int(env["MAILSTACK_IMAP_PORT"])
        self.imaps_port = int(env["MAILSTACK_IMAPS_PORT"])
        self.smtp_port = int(env["MAILSTACK_SMTP_PORT"])
        self.password = env["MAILSTACK_PASSWORD"]
        self.ca = env["MAILSTACK_CA_CERT"]

    def _run(self, *args):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSTACK_")}
        env.update(MAILSTACK_PORT_BASE=str(self.base), MAILSTACK_DIR=self.dir,
                   MAILSTACK_EXTRA_USERS=" ".join(self.extra_users))
        p = subprocess.run(["bash", MAILSTACK] + list(args), env=env, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("mailstack %s failed:\n%s" % (" ".join(args), p.stderr[-3000:]))
        return p

    def close(self):
        try:
            self._run("purge", self.dir)
        except Exception as e:  # leave the dir for a look rather than hide the error
            log("warning: %s" % e)

    def addr(self, user):
        return user if "@" in user else "%s@%s" % (user, self.domain)

    def tls(self):
        return ssl.create_default_context(cafile=self.ca)

    def imap(self, user, tls=False):
        if tls:
            c = imaplib.IMAP4_SSL("localhost", self.imaps_port, ssl_context=self.tls())
        else:
            c = imaplib.IMAP4(self.host, self.imap_port)
        c.login(self.addr(user), self.password)
        return c

    def smtp(self):
        return smtplib.SMTP(self.host, self.smtp_port, local_hostname="client.test")

    def maildir(self, user):
        return os.path.join(self.dir, "mail", self.domain, user, "Maildir")

    def count(self, user):
        """Messages in user's INBOX, from the Maildir (delivery renames into new/ atomically)."""
        return len(maildir_files(self, user))

    def clear(self, users):
        for u in users:
            c = self.imap(u)
            typ, d = c.select("INBOX")
            if typ == "OK" and int(d[0]) > 0:
                c.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
                c.expunge()
            c.logout()

    def queue_len(self):
        n = 0
        spool = os.path.join(self.dir, "postfix", "spool")
        for d in ("incoming", "active", "deferred", "maildrop"):
            n += sum(len(f) for _, _, f in os.walk(os.path.join(spool, d)))
        return n

    def sieve(self, user, path):
        self._run("sieve", self.addr(user), path)

    def remove_sieve(self, user):
        p = os.path.join(self.dir, "mail", self.domain, user, ".dovecot.sieve")
        if os.path.lexists(p):
            os.unlink(p)


def free_base(first):
    """First port base from `first` on, in steps of 1000, whose six ports are free."""
    for base in range(first, 61000, 1000):
        ok = True
        for off in PORT_OFFSETS:
            s = socket.socket()
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", base + off))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return base
    raise RuntimeError("no free port base from %d on" % first)


# ------------------------------------------------------------------------------ the daemon
LOG_LINE = re.compile(r"^(\S+)\s+(\w+)\s+(.*)$")
SPAN_AND_TARGET = re.compile(r"^(?:\w+\{[^}]*\}:)*\s*[\w:]+: ")
RUNNING = []  # daemons started and not yet stopped: stopped on the way out, whatever happens


class Daemon:
    """`mailtriage run` with its own state dir; its log is read incrementally for events."""

    def __init__(self, binary, stack, work, mailboxes, rules=None, name="daemon", start="all"):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.state = os.path.join(self.dir, "state")
        self.log_path = os.path.join(self.dir, "daemon.log")
        pw = os.path.join(self.dir, "password")
        fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, (stack.password + "\n").encode())
        os.close(fd)
        cfg = [
            'state_dir = "%s"' % self.state,
            "[imap]", 'host = "%s"' % stack.host, "port = %d" % stack.imaps_port, 'tls = "implicit"',
            'ca_file = "%s"' % stack.ca, 'tls_server_name = "localhost"', 'timeout = "30s"',
            "[imap_options]", 'idle_refresh = "5m"', 'max_backoff = "2s"',
            "[smtp]", 'host = "%s"' % stack.host, "port = %d" % stack.smtp_port, 'tls = "starttls"',
            'ca_file = "%s"' % stack.ca, 'tls_server_name = "localhost"', 'timeout = "30s"',
        ]
        # start = "all": the backlog phase fills the mailbox before the daemon first starts,
        # and that mail is what it measures (the default, "new", would leave it alone); the
        # year phase's first start takes the default.
        for m in mailboxes:
            cfg += ["[mailboxes.%s]" % m, 'user = "%s"' % stack.addr(m), 'password_file = "%s"' % pw,
                    'start = "%s"' % start]
        # The daemon watches the config's folder for edits: its own log, written there,
        # would wake that watcher on every line (a systemd install logs to the journal).
        os.makedirs(os.path.join(self.dir, "etc"), exist_ok=True)
        self.config = os.path.join(self.dir, "etc", "mailtriage.toml")
        with open(self.config, "w") as f:
            f.write("\n".join(cfg) + "\n")
        self.cmd = [binary, "run", "--rules", rules or RULES, "--config", self.config]
        self.proc = None
        self._off = 0
        self._part = b""
        self.events = []  # (wall time, message, fields)

    def start(self):
        logf = open(self.log_path, "ab")
        self.t0 = time.time()
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=logf,
                                     env=dict(os.environ, RUST_LOG="info"))
        RUNNING.append(self)
        logf.close()
        return self.t0

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self in RUNNING:
            RUNNING.remove(self)

    def status(self, key):
        """A field of /proc/PID/status in kB (VmRSS, VmHWM)."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return None

    def poll(self):
        """Reads new log lines into self.events; returns how many were added."""
        if self.proc is not None and self.proc.poll() is not None:
            with open(self.log_path, "rb") as f:
                tail = f.read()[-3000:].decode("utf-8", "replace")
            raise RuntimeError("mailtriage exited with %s; end of its log:\n%s" % (self.proc.returncode, tail))
        with open(self.log_path, "rb") as f:
            f.seek(self._off)
            data = f.read()
        self._off += len(data)
        data = self._part + data
        lines = data.split(b"\n")
        self._part = lines.pop()
        added = 0
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            m = LOG_LINE.match(line)
            if not m:
                continue
            try:
                ts = dt.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
            rest = m.group(3)
            fields = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', rest))
            # "span{a=1 b=2}: target::path: Message. field=value ...": the message sits between
            # the target and the first field
            text = SPAN_AND_TARGET.sub("", rest, count=1)
            msg = re.split(r" \w+=", text, maxsplit=1)[0].strip()
            self.events.append((ts, msg, fields))
            added += 1
            if m.group(2) in ("ERROR", "WARN"):
                log("  daemon %s: %s" % (m.group(2), line[:300]))
        return added

    def find(self, msg, since=0.0, **want):
        return [(ts, f) for ts, m, f in self.events
                if m == msg and ts >= since and all(f.get(k) == v for k, v in want.items())]


def cpu_busy():
    """CPU seconds the whole machine spent busy so far (all cores, /proc/stat): the mail
    servers, the clients and the daemon share the cores, so a flow's cost shows here."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal: idle and iowait are not work
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def proc_stat(pid):
    """(program name, CPU seconds of the process itself, of its children waited for)."""
    with open("/proc/%s/stat" % pid) as f:
        raw = f.read()
    comm, rest = raw[raw.index("(") + 1:raw.rindex(")")], raw[raw.rindex(")") + 1:].split()
    tick = os.sysconf("SC_CLK_TCK")
    return comm, (int(rest[11]) + int(rest[12])) / tick, (int(rest[13]) + int(rest[14])) / tick


def proc_cpu(pid):
    """CPU seconds (user + system) one process used so far."""
    return proc_stat(pid)[1]


def cpu_by_program():
    """{program: CPU seconds} over all processes, children that were waited for counted in
    their parent's program (Postfix's master reaps its services)."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm, own, children = proc_stat(pid)
        except OSError:  # ended meanwhile
            continue
        out[comm] = out.get(comm, 0) + own + children
    return out


def cpu_spent(before):
    """The programs that used CPU since `before` (a cpu_by_program()), most first."""
    now = cpu_by_program()
    d = {k: round(v - before.get(k, 0), 2) for k, v in now.items()}
    return dict(sorted(((k, v) for k, v in d.items() if v >= 0.05), key=lambda kv: -kv[1]))


def mail_bytes(stack, users):
    return sum(os.path.getsize(f) for u in users for f in maildir_files(stack, u))


def wait_for(cond, timeout, what, interval=0.01):
    end = time.time() + timeout
    while time.time() < end:
        r = cond()
        if r:
            return r
        time.sleep(interval)
    raise TimeoutError(what)


def send_all(stack, data, to):
    s = stack.smtp()
    for raw, m in data:
        s.sendmail(m["envelope_from"], [stack.addr(to)], raw, mail_options=["BODY=8BITMIME"])
    s.quit()


def corpus(count, to, tag):
    return list(generate(count, seed=1, to=to, tag=tag))


def tag():
    return ".b%d" % (time.time_ns() % 10 ** 9)


# ------------------------------------------------------------------------------ phases
def phase_accuracy(a, res, binary, work):
    data = corpus(a.count, "monitoring@example.test", "")
    d = os.path.join(work, "accuracy")
    os.makedirs(d, exist_ok=True)
    files = []
    truth = {}
    for raw, m in data:
        p = os.path.join(d, "%05d.eml" % m["n"])
        with open(p, "wb") as f:
            f.write(raw)
        files.append(p)
        truth[p] = m["category"] == "outage"
    t0 = time.perf_counter()
    out = subprocess.run([binary, "triage", "--rules", RULES, "--json", "--mailbox", "monitoring", "--outbox",
                          os.path.join(d, "out"), "--state", os.path.join(d, "state")] + files,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError("mailtriage triage failed: %s" % out.stderr[-2000:])
    # A follow-up joins its ticket and is not classified again (it goes where the ticket
    # lives): it counts as what its ticket was classified as, which is how it is handled.
    ours, ticket_category, joined = {}, {}, 0
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            category = r.get("category")
            if r.get("joined_by"):
                joined += 1
                category = ticket_category.get(r.get("ticket"))
            elif r.get("ticket"):
                ticket_category[r["ticket"]] = category
            ours[r["file"]] = category == "technical"

    def score(pred):
        tp = sum(1 for p in files if pred[p] and truth[p])
        fp = sum(1 for p in files if pred[p] and not truth[p])
        fn = sum(1 for p in files if not pred[p] and truth[p])
        return tp, fp, fn, tp / max(1, tp + fn), tp / max(1, tp + fp)

    # imapfilter's match_subject + match_body: a regex over the raw header line and the raw
    # body, with no MIME, RFC 2047 or charset decoding
    raw_pred = {}
    for (raw, _), p in zip(data, files):
        head, _, body = raw.partition(b"\r\n\r\n")
        subj = re.search(rb"(?im)^subject:(.*(?:\r\n[ \t].*)*)", head)
        text = (subj.group(1) if subj else b"") + b"\n" + body
        raw_pred[p] = bool(RAW_RE.search(text.decode("utf-8", "surrogateescape")))
    tp, fp, fn, rec, prec = score(ours)
    res.add("accuracy", "mailtriage technical: recall", round(rec * 100, 1), "%", "100 %", rec >= 1.0,
            tp=tp, fp=fp, fn=fn, truth=tp + fn, followups=joined)
    res.add("accuracy", "mailtriage technical: precision", round(prec * 100, 1), "%", ">= 98 %", prec >= 0.98)
    res.add("accuracy", "offline triage throughput", round(a.count / wall), "msg/s")
    tp, fp, fn, rec, prec = score(raw_pred)
    res.add("accuracy", "raw-text regex (imapfilter): recall", round(rec * 100, 1), "%", tp=tp, fp=fp, fn=fn)
    res.add("accuracy", "raw-text regex (imapfilter): precision", round(prec * 100, 1), "%")
    # against its own pattern run on decoded text (the testbed's ground truth, "match"): what
    # skipping MIME and charset decoding alone costs
    truth = {p: m["match"] for (_, m), p in zip(data, files)}
    tp, fp, fn, rec, prec = score(raw_pred)
    res.add("accuracy", "raw-text regex vs same regex decoded: recall", round(rec * 100, 1), "%",
            tp=tp, fp=fp, fn=fn)


def phase_footprint(a, res, binary, stack, work):
    idle = ["idle%02d" % i for i in range(1, IDLE_USERS + 1)]
    rules = os.path.join(work, "rules-50.toml")
    with open(RULES) as f:
        text = f.read()
    text += "".join('\n[mailboxes.%s]\naddress = "%s"\nqueue = "support"\n' % (u, stack.addr(u)) for u in idle)
    with open(rules, "w") as f:
        f.write(text)
    boxes = ["monitoring", "billing", "sales", "support"] + idle
    for u in boxes:  # the first login creates the Maildir: a real mailbox already has one
        stack.imap(u).logout()
    d = Daemon(binary, stack, work, boxes, rules=rules, name="footprint")
    t0 = d.start()
    try:
        def ready():
            d.poll()
            c = d.find("Mailbox connected.")
            return c if len(c) >= len(boxes) else None
        conn = wait_for(ready, 60, "50 mailboxes connected")
        ready_s = max(ts for ts, _ in conn) - t0
        time.sleep(5)
        rss = d.status("VmRSS") / 1024
        hwm = d.status("VmHWM") / 1024
    finally:
        d.stop()
    res.add("footprint", "READY, 50 mailboxes connected", round(ready_s, 3), "s", "<= 1 s", ready_s <= 1.0)
    res.add("footprint", "RSS, 50 idle mailboxes", round(rss, 1), "MB", "<= 25 MB", rss <= 25, peak_mb=round(hwm, 1))


IDLE_BOXES = ["monitoring", "billing", "sales", "support"]
IDLE_TARGET_CPU = 1.0  # s of CPU per 600 s with 4 idle mailboxes and no mail (the target)


def phase_idle(a, res, binary, stack, work):
    """What a daemon costs while nothing happens: 4 watched mailboxes, no mail, for
    --idle-seconds after READY (the "Ready." line, logged once every mailbox task logged
    "Mailbox connected."). Two windows, each with a fresh daemon and a fresh state, so that
    both begin right after a start and neither inherits anything from the other: first
    left alone, then with a reader that opens and reads rules.toml and mailtriage.toml
    every second (as `cat` does; reading used to wake the config file watcher into an
    endless reload loop). Figures: the daemon's CPU time over the window (utime + stime,
    /proc/PID/stat) against 1 s per 600 s, scaled to the window, and the log lines written
    after "Ready." against 0. Each daemon's rules.toml is a copy in the folder of its
    mailtriage.toml, which holds nothing else: the daemon watches the folders of both
    files, and the bench writes its log, the state and its results elsewhere."""
    stack.clear(USERS)
    for reading in (False, True):
        cpu, lines, extra = idle_window(a, binary, stack, work, reading)
        sfx = "_reading" if reading else ""
        target = IDLE_TARGET_CPU * a.idle_seconds / 600.0
        tgt = "< %g s in %d s" % (round(target, 3), a.idle_seconds)
        if a.idle_seconds != 600:
            tgt += " (1 s per 600 s, scaled)"
        res.add("idle", "cpu_s" + sfx, round(cpu, 3), "s", tgt, cpu < target, window_s=a.idle_seconds,
                target_s=round(target, 4), mailboxes=len(IDLE_BOXES), **extra)
        res.add("idle", "log_lines_after_start" + sfx, len(lines), "", "0", not lines,
                window_s=a.idle_seconds, lines=lines[:20])


class Reader:
    """Opens and reads files every `every` seconds, as `cat` would, until stop()."""

    def __init__(self, paths, every=1.0):
        self.paths, self.every, self.reads = paths, every, 0
        self.done = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.done.wait(self.every):
            for p in self.paths:
                with open(p, "rb") as f:
                    f.read()
                self.reads += 1

    def stop(self):
        self.done.set()
        self.t.join()


def threads_cpu(pid):
    """{thread id: (thread name, CPU seconds, context switches)} of a process."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            comm, cpu, _ = proc_stat("%d/task/%s" % (pid, tid))
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                sw = sum(int(l.split()[1]) for l in f if l.split(":")[0].endswith("ctxt_switches"))
        except OSError:  # ended meanwhile
            continue
        out[tid] = (comm, cpu, sw)
    return out


def idle_window(a, binary, stack, work, reading):
    """One daemon, idle for a.idle_seconds after READY; (CPU s, log lines after "Ready.",
    extra figures: CPU and wake-ups per thread name, threads started, reads done)."""
    name = "idle-reading" if reading else "idle"
    etc = os.path.join(work, name, "etc")
    os.makedirs(etc, exist_ok=True)
    rules = os.path.join(etc, "rules.toml")
    shutil.copyfile(RULES, rules)
    d = Daemon(binary, stack, work, IDLE_BOXES, rules=rules, name=name)
    assert os.path.dirname(d.log_path) != etc and not d.state.startswith(etc + os.sep)
    d.start()
    reader = None
    try:
        wait_for(lambda: d.poll() >= 0 and d.find("Ready.", all_connected="true"), 60, "daemon ready")
        ready_s = d.find("Ready.")[0][0] - d.t0
        if reading:
            reader = Reader([rules, d.config])
        pid = d.proc.pid
        c0, th0, t0 = proc_cpu(pid), threads_cpu(pid), time.time()
        end = t0 + a.idle_seconds
        while time.time() < end:
            time.sleep(min(5.0, max(0.0, end - time.time())))
            d.poll()  # also raises if the daemon ended
        c1, th1, window = proc_cpu(pid), threads_cpu(pid), time.time() - t0
        logged = os.path.getsize(d.log_path)  # the stop's own lines come after the window
    finally:
        if reader:
            reader.stop()
        d.stop()
    with open(d.log_path, "rb") as f:
        log_lines = f.read(logged).decode("utf-8", "replace").splitlines()
    i = next(k for k, l in enumerate(log_lines) if re.search(r"\bReady\.", l))
    after = [l for l in log_lines[i + 1:] if l.strip()]
    by_name = {}
    for tid, (comm, cpu, sw) in th1.items():
        _, cpu0, sw0 = th0.get(tid, (comm, 0.0, 0))
        c, w = by_name.get(comm, (0.0, 0))
        by_name[comm] = (c + cpu - cpu0, w + sw - sw0)
    extra = dict(ready_s=round(ready_s, 3), window_measured_s=round(window, 1),
                 threads_started=len(set(th1) - set(th0)),
                 cpu_by_thread={k: round(v[0], 3) for k, v in sorted(by_name.items()) if v[0] > 0},
                 switches_by_thread={k: v[1] for k, v in sorted(by_name.items()) if v[1] > 0},
                 switches=sum(v[1] for v in by_name.values()))
    if reader:
        extra["reads"] = reader.reads
    return c1 - c0, after, extra


def settle(stack, users_groups, expect, timeout, t0, stable=None):
    """Polls Maildir counts of each group of users; returns {group: (count, last change - t0)}.
    Done when every group reached `expect[group]` (when given) or, with `stable`, when the
    Postfix queue is empty and nothing changed for `stable` seconds."""
    last = {g: (sum(stack.count(u) for u in us), time.time()) for g, us in users_groups.items()}
    end = time.time() + timeout
    while time.time() < end:
        now = time.time()
        for g, us in users_groups.items():
            n = sum(stack.count(u) for u in us)
            if n != last[g][0]:
                last[g] = (n, now)
        if expect is not None and all(last[g][0] >= expect(g) for g in users_groups if expect(g) is not None):
            return {g: (n, t - t0) for g, (n, t) in last.items()}
        if stable and now - max(t for _, t in last.values()) > stable and stack.queue_len() == 0:
            return {g: (n, t - t0) for g, (n, t) in last.items()}
        time.sleep(0.01)
    raise TimeoutError("delivery did not settle: %s" % last)


def phase_flow(a, res, binary, stack, work):
    """Rounds of Sieve, mailtriage and the floor, one after the other: the machine's speed
    drifts by tens of percent within minutes, so each round's ratio compares runs made a
    few seconds apart, and the median of the rounds is the figure."""
    rounds = [flow_round(a, res, binary, stack, work, r + 1) for r in range(a.rounds)]

    def med(key):
        return statistics.median(r[key] for r in rounds)
    ratio = statistics.median(r["ours"] / r["sieve"] for r in rounds)
    each = ", ".join("%.2f" % (r["ours"] / r["sieve"]) for r in rounds)
    res.add("flow", "Sieve: last redirect and vacation in (median)", round(med("sieve"), 3), "s")
    res.add("flow", "mailtriage: last forward and ack in (median)", round(med("ours"), 3), "s")
    res.add("flow", "floor: same incoming + our mails (median)", round(med("floor"), 3), "s")
    res.add("flow", "ratio mailtriage / Sieve, median of %d rounds (%s)" % (len(rounds), each),
            round(ratio, 2), "", "<= 1.0", ratio <= 1.0)
    res.add("flow", "ratio mailtriage / floor; floor / Sieve (medians)", "%.2f; %.2f" % (
        statistics.median(r["ours"] / r["floor"] for r in rounds),
        statistics.median(r["floor"] / r["sieve"] for r in rounds)), "")
    res.add("flow", "CPU busy, whole machine: Sieve; mailtriage (daemon); floor (medians)",
            "%.1f; %.1f (%.2f); %.1f" % (med("sieve_cpu"), med("ours_cpu"), med("daemon_cpu"),
                                         med("floor_cpu")), "s")


FLOW_GROUPS = {"queues": QUEUES, "customers": CUSTOMERS, "monitoring": ["monitoring"]}


def flow_round(a, res, binary, stack, work, k):
    """One round: Sieve and mailtriage on the same kind of mail, in turns (Sieve first in
    odd rounds, mailtriage first in even ones: the machine is often fastest in the first
    seconds after a pause, and that must not always favour the same side), then the floor
    for the mails mailtriage sent."""
    r = {}
    sides = [flow_sieve, flow_ours] if k % 2 else [flow_ours, flow_sieve]
    for side in sides:
        side(a, res, binary, stack, work, k, r)

    # --- the mail server's own limit for this flow: the same incoming mail, and the very
    # mails the daemon sent (their bytes, from the Maildirs) submitted as the incoming goes
    # in, with no IMAP and no processing. What is left above it is the daemon's own cost.
    outgoing = r.pop("outgoing")
    n_fwd = r.pop("n_fwd")
    stack.clear(USERS)
    data = corpus(a.count, stack.addr("monitoring"), tag())
    t0, c0, p0 = time.time(), cpu_busy(), cpu_by_program()
    r["floor"] = replay(stack, data, outgoing, n_fwd, len(outgoing) - n_fwd, FLOW_GROUPS, t0)
    r["floor_cpu"] = cpu_busy() - c0
    res.add("flow", "round %d: floor: same incoming + our %d mails" % (k, len(outgoing)),
            round(r["floor"], 3), "s")
    res.add("flow", "round %d: floor: CPU busy, whole machine" % k, round(r["floor_cpu"], 2), "s",
            programs=cpu_spent(p0))
    res.add("flow", "round %d: ratio mailtriage / Sieve" % k, round(r["ours"] / r["sieve"], 2), "")
    return r


def flow_sieve(a, res, binary, stack, work, k, r):
    """Sieve at delivery: redirect :copy to support@ and vacation."""
    stack.clear(USERS)
    stack.sieve("monitoring", SIEVE)
    try:
        data = corpus(a.count, stack.addr("monitoring"), tag())
        t0, c0, p0 = time.time(), cpu_busy(), cpu_by_program()
        send_all(stack, data, "monitoring")
        accepted = time.time() - t0
        got = settle(stack, FLOW_GROUPS, None, 900, t0, stable=1.0)
        # CPU until settled includes the 1 s of quiet settle() waits for: a few ms of polling
        r["sieve_cpu"], progs = cpu_busy() - c0, cpu_spent(p0)
    finally:
        stack.remove_sieve("monitoring")
    r["sieve"] = max(got["queues"][1], got["customers"][1])
    res.add("flow", "round %d: Sieve: SMTP accepted all" % k, round(accepted, 3), "s")
    res.add("flow", "round %d: Sieve: last redirect and vacation in" % k, round(r["sieve"], 3), "s",
            redirected=got["queues"][0], vacations=got["customers"][0])
    res.add("flow", "round %d: Sieve: CPU busy, whole machine" % k, round(r["sieve_cpu"], 2), "s",
            sent_kb=round(mail_bytes(stack, QUEUES + CUSTOMERS) / 1024), programs=progs)


def flow_ours(a, res, binary, stack, work, k, r):
    """The same kind of messages (fresh Message-IDs) through a daemon with fresh state (no
    ticket of an earlier round is continued) watching the 4 mailboxes; leaves the mails it
    sent in r["outgoing"] for the floor."""
    stack.clear(USERS)
    d = Daemon(binary, stack, work, ["monitoring", "billing", "sales", "support"], name="flow%d" % k)
    d.start()
    try:
        wait_for(lambda: d.poll() >= 0 and len(d.find("Mailbox connected.")) >= 4, 60, "daemon connected")
        data = corpus(a.count, stack.addr("monitoring"), tag())
        t0, c0, d0, p0 = time.time(), cpu_busy(), proc_cpu(d.proc.pid), cpu_by_program()
        send_all(stack, data, "monitoring")
        accepted = time.time() - t0
        # Tallied as the log grows, not searched again every 10 ms: the harness shares the
        # two cores with what it measures, and Sieve's run has no log to read.
        tally = {"read": 0, "triaged": 0, "queues": 0, "customers": 0}

        def planned(g):
            d.poll()
            for _, m, f in d.events[tally["read"]:]:
                if m == "Message triaged." and f.get("mailbox") == "monitoring":
                    tally["triaged"] += 1
                    tally["queues"] += f.get("action") == "forward"
                    tally["customers"] += f.get("ack") == "true"
            tally["read"] = len(d.events)
            if tally["triaged"] < a.count:
                return 10 ** 9  # not all triaged yet: the planned mails are not known
            return tally.get(g, a.count)
        got = settle(stack, FLOW_GROUPS, planned, 900, t0)
        r["ours_cpu"], r["daemon_cpu"] = cpu_busy() - c0, proc_cpu(d.proc.pid) - d0
        progs = cpu_spent(p0)
    finally:
        d.stop()
    r["ours"] = max(got["queues"][1], got["customers"][1])
    res.add("flow", "round %d: mailtriage: SMTP accepted all" % k, round(accepted, 3), "s")
    res.add("flow", "round %d: mailtriage: last forward and ack in" % k, round(r["ours"], 3), "s",
            forwarded=got["queues"][0], acks=got["customers"][0])
    res.add("flow", "round %d: mailtriage: CPU busy, whole machine; daemon" % k,
            "%.2f; %.2f" % (r["ours_cpu"], r["daemon_cpu"]), "s",
            sent_kb=round(mail_bytes(stack, QUEUES + CUSTOMERS) / 1024), programs=progs)
    outgoing = [delivered(f) for u in QUEUES + CUSTOMERS for f in maildir_files(stack, u)]
    r["outgoing"] = sorted(outgoing, key=lambda x: x[0])
    r["n_fwd"] = sum(len(maildir_files(stack, u)) for u in QUEUES)


def maildir_files(stack, user):
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(stack.maildir(user), sub)
        out += [os.path.join(d, f) for f in os.listdir(d)] if os.path.isdir(d) else []
    return out


def delivered(path):
    """(delivery time, recipient, bytes as sent) of a delivered mail: the headers the
    delivery put on top (Return-Path, Delivered-To, Received) taken off."""
    with open(path, "rb") as f:
        raw = f.read()
    lines = raw.split(b"\n")
    i, rcpt = 0, None
    while i < len(lines):
        name = lines[i].split(b":", 1)[0].lower()
        if name not in (b"return-path", b"delivered-to", b"received"):
            break
        if name == b"delivered-to":
            rcpt = lines[i].split(b":", 1)[1].strip().decode()
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
    return os.path.getmtime(path), rcpt, b"\n".join(lines[i:])


def replay(stack, data, outgoing, n_queues, n_customers, groups, t0):
    """Sends `data` to monitoring@ on one connection and, on three more, each mail of
    `outgoing` once its share of the incoming is in; returns the time until all of it
    was delivered."""
    sent = [0]
    cond = threading.Condition()

    def incoming():
        s = stack.smtp()
        for raw, m in data:
            s.sendmail(m["envelope_from"], [stack.addr("monitoring")], raw, mail_options=["BODY=8BITMIME"])
            with cond:
                sent[0] += 1
                cond.notify_all()
        s.quit()

    def out(k0):
        s = stack.smtp()
        for k in range(k0, len(outgoing), 3):
            need = -(-(k + 1) * len(data) // len(outgoing))
            with cond:
                cond.wait_for(lambda: sent[0] >= need)
            _, rcpt, raw = outgoing[k]
            s.sendmail("", [rcpt], raw, mail_options=["BODY=8BITMIME"])
        s.quit()

    threads = [threading.Thread(target=incoming)] + [threading.Thread(target=out, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    expect = {"queues": n_queues, "customers": n_customers, "monitoring": len(data)}
    got = settle(stack, groups, expect.get, 900, t0)
    for t in threads:
        t.join()
    return max(got["queues"][1], got["customers"][1])


class Idler:
    """A client idling on a mailbox; each `* n EXISTS` goes to .events as (n, wall time)."""

    def __init__(self, stack, user):
        self.c = stack.imap(user, tls=True)
        self.c.select("INBOX")
        self.events = queue.Queue()
        self.tag = self.c._new_tag()
        self.c.send(self.tag + b" IDLE\r\n")
        while not self.c.readline().startswith(b"+"):
            pass
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            try:
                line = self.c.readline()
            except Exception:
                return
            if not line or line.startswith(self.tag):
                return
            t = time.time()
            m = re.match(rb"\* (\d+) EXISTS", line)
            if m:
                self.events.put((int(m.group(1)), t))

    def stop(self):
        try:
            self.c.send(b"DONE\r\n")
            time.sleep(0.1)
            self.c.logout()
        except Exception:
            pass


# Seconds between latency samples. Dovecot tells an idling client of a change 500 ms
# after it sees it (mailbox-watch.c, NOTIFY_DELAY_MSECS), and its own sync of the new
# mail starts that delay once more: a message that lands as the leftover delay ends is
# told at once. At 1 s apart every second sample did, and the server's "push delay"
# read 5 ms and 505 ms in turn (p50 256 ms), a figure no client can count on.
LATENCY_SPACING = 1.5


def phase_latency(a, res, binary, stack, work):
    stack.clear(USERS)
    d = Daemon(binary, stack, work, ["monitoring", "billing", "sales", "support"], name="latency")
    d.start()
    wait_for(lambda: d.poll() >= 0 and len(d.find("Mailbox connected.")) >= 4, 60, "daemon connected")
    # new requests from people, not replies: each one is forwarded at once
    pool = [x for x in corpus(400, stack.addr("monitoring"), tag())
            if x[1]["should_ack"] and not x[1]["in_reply_to"]][:a.lat_count]
    # The server's own push delay, for the same messages at the same moments, on a mailbox
    # nobody else touches: the daemon's flag changes on monitoring@ would wake an idler there
    # early and hide the delay.
    watch = "idle01"
    idler = Idler(stack, watch)
    s = stack.smtp()
    idle_ms, acc_ms, vis_ms = [], [], []
    try:
        time.sleep(1.0)
        for raw, m in pool:
            start = time.time()
            in_queues = sum(stack.count(u) for u in QUEUES)
            d.poll()
            seen = len(d.find("Mail accepted.", kind="Forward"))
            s.sendmail(m["envelope_from"], [stack.addr("monitoring"), stack.addr(watch)], raw,
                       mail_options=["BODY=8BITMIME"])
            t_acc = time.time()
            vis = wait_for(lambda: sum(stack.count(u) for u in QUEUES) > in_queues and time.time(),
                           30, "forward visible", interval=0.002)

            def fwd():
                d.poll()
                f = d.find("Mail accepted.", kind="Forward")
                return f[seen][0] if len(f) > seen else None
            t_fwd = wait_for(fwd, 30, "forward accepted")
            _, t_exists = idler.events.get(timeout=30)
            idle_ms.append((t_exists - t_acc) * 1000)
            acc_ms.append((t_fwd - t_acc) * 1000)
            vis_ms.append((vis - t_acc) * 1000)
            while not idler.events.empty():
                idler.events.get_nowait()
            time.sleep(max(0.0, start + LATENCY_SPACING - time.time()))
    finally:
        s.quit()
        idler.stop()
        d.stop()
    n = len(pool)
    ip50, ip95, ip99 = (round(percentile(idle_ms, p), 1) for p in (50, 95, 99))
    res.add("latency", "server IDLE push p50/p95/p99", "%s / %s / %s" % (ip50, ip95, ip99), "ms", n=n,
            samples=[round(x, 1) for x in idle_ms])
    p50, p95, p99 = (round(percentile(acc_ms, p), 1) for p in (50, 95, 99))
    res.add("latency", "forward accepted p50", p50, "ms", "<= IDLE p50 + 20 ms", p50 <= ip50 + 20, n=n)
    res.add("latency", "forward accepted p95", p95, "ms", "<= IDLE p50 + 60 ms", p95 <= ip50 + 60, n=n)
    res.add("latency", "forward accepted p99", p99, "ms", n=n)
    v50, v95, v99 = (round(percentile(vis_ms, p), 1) for p in (50, 95, 99))
    res.add("latency", "forward in queue INBOX p50/p95/p99", "%s / %s / %s" % (v50, v95, v99), "ms", n=n)


def phase_backlog(a, res, binary, stack, work):
    stack.clear(USERS)
    data = corpus(a.count, stack.addr("monitoring"), tag())
    c = stack.imap("monitoring")
    for raw, _ in data:
        c.append("INBOX", None, None, raw)
    c.logout()
    d = Daemon(binary, stack, work, ["monitoring", "billing", "sales", "support"], name="backlog")
    t0 = d.start()
    try:
        def done():
            d.poll()
            tri = d.find("Message triaged.", mailbox="monitoring")
            if len(tri) < a.count:
                return None
            want = sum(1 for _, f in tri if f.get("action") == "forward") + \
                sum(1 for _, f in tri if f.get("ack") == "true")
            acc = d.find("Mail accepted.")
            return (acc, want) if len(acc) >= want else None
        acc, want = wait_for(done, 900, "backlog sent", interval=0.02)
        ours_s = max(ts for ts, _ in acc) - t0
        ready_s = max(ts for ts, _ in d.find("Mailbox connected.")) - t0
        hwm = d.status("VmHWM") / 1024
    finally:
        d.stop()
    res.add("backlog", "READY, 4 mailboxes connected", round(ready_s, 3), "s", "<= 1 s", ready_s <= 1.0)
    res.add("backlog", "mailtriage: all %d mails accepted" % want, round(ours_s, 3), "s",
            msg_per_s=round(a.count / ours_s, 1))
    res.add("backlog", "RSS peak (VmHWM)", round(hwm, 1), "MB", "<= 60 MB", hwm <= 60)

    # raw limit: the protocol work alone, same TLS as the daemon, one connection each
    t0 = time.time()
    c = stack.imap("monitoring", tls=True)
    c.select("INBOX", readonly=True)
    typ, resp = c.uid("FETCH", "1:*", "(BODY.PEEK[])")
    raws = [x[1] for x in resp if isinstance(x, tuple)]
    c.logout()
    t_fetch = time.time() - t0
    assert len(raws) >= a.count, len(raws)
    s = stack.smtp()
    s.starttls(context=stack.tls())
    s.ehlo("client.test")
    for i in range(want):
        s.sendmail("", [stack.addr("support")], raws[i % len(raws)], mail_options=["BODY=8BITMIME"])
    s.quit()
    raw_s = time.time() - t0
    res.add("backlog", "raw: 1 UID FETCH + %d SMTP sends" % want, round(raw_s, 3), "s", fetch_s=round(t_fetch, 3))
    ratio = ours_s / raw_s
    res.add("backlog", "ratio mailtriage / raw", round(ratio, 2), "", "<= 1.25", ratio <= 1.25)


def big_mail(n, to, size):
    """A customer's outage request of about `size` bytes: a line of text and a log file
    attached (random bytes, base64, as a mail client sends it)."""
    import base64
    att = base64.encodebytes(os.urandom(size * 3 // 4 - 1024)).replace(b"\n", b"\r\n")
    head = ("From: Customer %d <customer%d@example.test>\r\nTo: %s\r\n"
            "Subject: Website is down, log attached (%d)\r\nMessage-ID: <big-%d-%s@client.test>\r\n"
            "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
            "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "Error 500 on every page since 9:00, the server log is attached.\r\n"
            "--b\r\nContent-Type: application/octet-stream; name=\"server.log.gz\"\r\n"
            "Content-Disposition: attachment; filename=\"server.log.gz\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n"
            % (n % 20 + 1, n % 20 + 1, to, n, n, tag())).encode()
    return head + att + b"\r\n--b--\r\n"


def dir_bytes(path):
    """Bytes the files under `path` take on disk (allocated blocks: sled's files are sparse)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def phase_bigbacklog(a, res, binary, stack, work):
    """50 messages of 8 MB in monitoring@ before the daemon starts: peak RSS while all of
    them are forwarded, and the state's size once the outbox drained (after a clean stop,
    so that what is on disk is all there is), against the input's size."""
    count, size = a.big_count, a.big_mb << 20
    stack.clear(USERS)
    c = stack.imap("monitoring")
    total = 0
    for n in range(count):
        raw = big_mail(n, stack.addr("monitoring"), size)
        total += len(raw)
        c.append("INBOX", None, None, raw)
    c.logout()
    rules = RULES
    if a.big_attached:
        # The cap on what a forward carries, changed in a copy of the bench's rules.
        with open(RULES) as f:
            text = f.read()
        old = 'max_original_attached = "10MB"'
        assert old in text, "the shipped rules changed: adapt phase_bigbacklog"
        rules = os.path.join(work, "bigbacklog-rules.toml")
        with open(rules, "w") as f:
            f.write(text.replace(old, 'max_original_attached = "%s"' % a.big_attached, 1))
    d = Daemon(binary, stack, work, ["monitoring", "billing", "sales", "support"], rules=rules,
               name="bigbacklog")
    t0 = d.start()
    try:
        def done():
            d.poll()
            tri = d.find("Message triaged.", mailbox="monitoring")
            if len(tri) < count:
                return None
            want = sum(1 for _, f in tri if f.get("action") == "forward") + \
                sum(1 for _, f in tri if f.get("ack") == "true")
            acc = d.find("Mail accepted.")
            return (acc, want, tri) if len(acc) >= want else None
        acc, want, tri = wait_for(done, 1800, "big backlog sent", interval=0.1)
        ours_s = max(ts for ts, _ in acc) - t0
        hwm = d.status("VmHWM") / 1024
    finally:
        d.stop()
    state = dir_bytes(d.state)
    forwards = sum(1 for _, f in tri if f.get("action") == "forward")
    mb = 1 << 20
    cap = a.big_attached or "10MB, the shipped"
    res.add("bigbacklog", "mailtriage: %d messages of %.1f MB (%.0f MB) -> %d forwards, %d mails accepted; "
            "max_original_attached %s" % (count, total / count / mb, total / mb, forwards, want, cap),
            round(ours_s, 1), "s")
    res.add("bigbacklog", "RSS peak (VmHWM)", round(hwm, 1), "MB", "<= 100 MB", hwm <= 100)
    share = state / total
    res.add("bigbacklog", "state after the outbox drained (stopped)", round(state / mb, 1), "MB",
            "<= 10 % of input", share <= 0.10, share=round(share, 3), input_mb=round(total / mb, 1))


YEAR_STATE = os.path.join(ROOT, "target", "year-state")
YEAR_FIGURES = os.path.join(ROOT, "target", "year-bench.json")
YEAR_IDLE_AFTER = 65  # s after READY: the first follow-up scan (every minute) and retention sweep are behind
FIRST_START_COUNT = 50000


def phase_year(a, res, binary, stack, work):
    """A year of a busy desk.

    The state of a year (60,000 tickets, about 200,000 messages) is made by the criterion
    bench `cargo bench --bench year` (run here when --year-state holds none), which also
    measures the state's size after retention against the raw mail and one follow-up
    scan (target/year-bench.json, reported here as it is). The daemon is started on a copy
    of that state with the 4 mailboxes of rules.toml: READY (its "Ready." line), then RSS
    once it is idle, after its first follow-up scan and retention sweep."""
    state = a.year_state or YEAR_STATE
    if not os.path.isdir(os.path.join(state, "db")):
        log("   no year state in %s: making it with `cargo bench --bench year` (some minutes)" % state)
        subprocess.run(["cargo", "bench", "--bench", "year"], cwd=ROOT, check=True,
                       env=dict(os.environ, YEAR_STATE=os.path.abspath(state)))
    year_figures(res, state)
    year_daemon(a, res, binary, stack, work, state)


def year_figures(res, state):
    """The year bench's own figures, when they are of this state."""
    if not os.path.exists(YEAR_FIGURES) or os.path.getmtime(YEAR_FIGURES) < os.path.getmtime(state):
        log("   %s is missing or older than the state: size and scan figures left out" % YEAR_FIGURES)
        return
    with open(YEAR_FIGURES) as f:
        y = json.load(f)
    ratio = y["state_over_raw"]
    res.add("year", "state after retention / raw mail seen (%d tickets, %d messages, %.0f MB)" % (
        y["tickets"], y["messages"], y["raw_mail_bytes"] / 1e6), round(ratio, 3), "",
        "<= 0.1", ratio <= 0.1, state_mb=round(y["state_bytes_after_retention"] / 1e6, 1))
    if "followup_scan_ms" in y:
        ms = y["followup_scan_ms"]
        res.add("year", "one follow-up scan of the clock (%d open tickets, %s read)" % (
            y["tickets_open"], y.get("followup_scan_read", "all")), round(ms, 2), "ms", "<= 20 ms", ms <= 20)
    if "followup_first_scan_ms" in y:
        ms = y["followup_first_scan_ms"]
        res.add("year", "the first follow-up scan after a start (every open ticket read)", round(ms, 2),
                "ms", "<= 20 ms", ms <= 20)


def dir_mb(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 1e6


def idle_memory(binary, stack, work, name, state=None):
    """Starts a daemon (4 mailboxes, the default start) on a copy of `state`, or on an
    empty one, and reads its memory YEAR_IDLE_AFTER seconds after READY: (READY s, RSS,
    peak, anonymous and file-backed RSS in MB, mails sent)."""
    d = Daemon(binary, stack, work, IDLE_BOXES, name=name, start="new")
    if state:
        shutil.copytree(state, d.state)
    t0 = d.start()
    try:
        ready = wait_for(lambda: d.poll() >= 0 and d.find("Ready.", all_connected="true"), 60, "daemon ready")
        ready_s = ready[0][0] - t0
        end = ready[0][0] + YEAR_IDLE_AFTER
        while time.time() < end:
            time.sleep(min(5.0, max(0.0, end - time.time())))
            d.poll()
        mb = {k: d.status(k) / 1024 for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}
        sent = len(d.find("Mail accepted."))
    finally:
        d.stop()
    return ready_s, mb, sent


def year_daemon(a, res, binary, stack, work, state):
    """READY and idle RSS of the daemon on the year's state, and the same daemon's RSS on
    an empty state: what the year adds to what the daemon takes anyway."""
    stack.clear(USERS)
    size = dir_mb(state)
    ready_s, mb, sent = idle_memory(binary, stack, work, "year", state)
    _, empty, _ = idle_memory(binary, stack, work, "year-empty")
    rss = mb["VmRSS"]
    res.add("year", "READY on a year of state (%.0f MB)" % size, round(ready_s, 3), "s", "<= 1 s",
            ready_s <= 1.0)
    res.add("year", "RSS idle on it, %d s after READY" % YEAR_IDLE_AFTER, round(rss, 1), "MB", "<= 30 MB",
            rss <= 30, peak_mb=round(mb["VmHWM"], 1), anon_mb=round(mb["RssAnon"], 1),
            file_mb=round(mb["RssFile"], 1), mails_sent=sent,
            empty_state_rss_mb=round(empty["VmRSS"], 1), empty_state_anon_mb=round(empty["RssAnon"], 1),
            empty_state_file_mb=round(empty["RssFile"], 1))


def fill_maildir(stack, user, count):
    """Writes `count` generated messages as files into user's Maildir/cur, as a mailbox
    with a history holds them (seen, dated over the past year), owned as Dovecot's are."""
    stack.imap(user).logout()  # the first login makes the Maildir
    cur = os.path.join(stack.maildir(user), "cur")
    st = os.stat(cur)
    now, pid = int(time.time()), os.getpid()
    for i, (raw, _) in enumerate(generate(count, seed=2, to=stack.addr(user), tag=tag())):
        when = now - 365 * 86400 + i * 365 * 86400 // count
        p = os.path.join(cur, "%d.M%dP%d.bench,S=%d:2,S" % (when, i, pid, len(raw)))
        with open(p, "wb") as f:
            f.write(raw)
        os.utime(p, (when, when))
        os.chown(p, st.st_uid, st.st_gid)


def phase_firststart(a, res, binary, stack, work):
    """A first start on a mailbox of 50,000 messages: they are written as files into
    monitoring@'s Maildir and indexed by Dovecot (one SELECT, as a live mailbox's index
    already is), and a daemon with a fresh state and the default start ("new") is
    started on it: READY, and no mail sent."""
    stack.clear(USERS)
    user = "monitoring"
    t = time.time()
    fill_maildir(stack, user, FIRST_START_COUNT)
    written_s = time.time() - t
    t = time.time()
    c = stack.imap(user)
    typ, n = c.select("INBOX", readonly=True)
    c.logout()
    index_s = time.time() - t
    assert typ == "OK" and int(n[0]) == FIRST_START_COUNT, (typ, n)
    before = {u: stack.count(u) for u in USERS}
    d = Daemon(binary, stack, work, IDLE_BOXES, name="first-start", start="new")
    t0 = d.start()
    try:
        ready = wait_for(lambda: d.poll() >= 0 and d.find("Ready.", all_connected="true"), 60, "daemon ready")
        ready_s = ready[0][0] - t0
        # Anything it would send would be on its way within these seconds (a backlog of
        # 1000 is sent in about 2 s).
        time.sleep(10)
        d.poll()
        accepted = len(d.find("Mail accepted."))
        triaged = len(d.find("Message triaged."))
        rss = d.status("VmRSS") / 1024
    finally:
        d.stop()
    delivered = sum(stack.count(u) - before[u] for u in USERS if u != user) + stack.queue_len()
    res.add("firststart", "first start on %d messages: READY" % FIRST_START_COUNT, round(ready_s, 3), "s",
            "<= 2 s", ready_s <= 2.0, written_s=round(written_s, 1), dovecot_index_s=round(index_s, 2),
            rss_mb=round(rss, 1))
    sent = accepted + delivered
    res.add("firststart", "first start: mails sent, messages triaged (10 s after READY)", "%d, %d" % (sent, triaged),
            "", "0", sent == 0 and triaged == 0)


def build(binary):
    if binary:
        return binary
    subprocess.run(["cargo", "build", "--profile", "dist", "--bin", "mailtriage"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "dist", "mailtriage")


PHASES = ["accuracy", "footprint", "flow", "latency", "backlog", "idle", "year", "firststart",
          "bigbacklog"]
# Not in a run without --only: it writes about 1 GB of mail and state under /tmp.
DEFAULT_PHASES = [p for p in PHASES if p != "bigbacklog"]
# --quick leaves these out too: making the year's state takes some minutes, and writing and
# indexing 50,000 messages about a minute.
QUICK_PHASES = [p for p in DEFAULT_PHASES if p not in ("year", "firststart")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, help="messages per flow/backlog/accuracy run (1000; --quick: 100)")
    ap.add_argument("--lat-count", type=int, help="latency samples, 1.5 s apart (100; --quick: 10)")
    ap.add_argument("--rounds", type=int, help="flow rounds (Sieve, mailtriage, floor each); the "
                    "median is the figure; Sieve goes first in odd rounds (6; --quick: 2)")
    ap.add_argument("--idle-seconds", type=int, help="length of each idle window, after READY "
                    "(600; --quick: 60); the CPU target scales with it (1 s per 600 s)")
    ap.add_argument("--big-count", type=int, default=50, help="bigbacklog: messages (50)")
    ap.add_argument("--big-mb", type=int, default=8, help="bigbacklog: size of each message in MB (8)")
    ap.add_argument("--big-attached", help="bigbacklog: company.max_original_attached (the shipped 10MB)")
    ap.add_argument("--quick", action="store_true", help="short run for CI")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "e2e-bench.jsonl"))
    ap.add_argument("--only", help="comma-separated phases: " + ",".join(PHASES))
    ap.add_argument("--year-state", help="the year's state, made by `cargo bench --bench year` "
                    "(target/year-state; made there when it holds none)")
    ap.add_argument("--binary", help="use this mailtriage binary instead of building target/dist")
    ap.add_argument("--no-build", action="store_true", help="use target/dist/mailtriage as it is")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (daemon logs, configs) for a look")
    ap.add_argument("--port-base", type=int, default=int(os.environ.get("MAILTRIAGE_BENCH_PORT_BASE", "40000")))
    a = ap.parse_args()
    a.count = a.count or (100 if a.quick else 1000)
    a.lat_count = a.lat_count or (10 if a.quick else 100)
    a.rounds = a.rounds or (2 if a.quick else 6)
    a.idle_seconds = a.idle_seconds or (60 if a.quick else 600)
    phases = a.only.split(",") if a.only else (QUICK_PHASES if a.quick else DEFAULT_PHASES)
    for p in phases:
        if p not in PHASES:
            ap.error("unknown phase %r" % p)
    if os.geteuid() != 0:
        ap.error("needs root: scripts/mailstack starts Postfix and Dovecot")
    binary = a.binary or (os.path.join(ROOT, "target", "dist", "mailtriage") if a.no_build else build(None))
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    res = Results(a.out, {"run": time.strftime("%Y-%m-%dT%H:%M:%S"), "count": a.count, "version": version})
    work = tempfile.mkdtemp(prefix="mt-bench-work-", dir="/tmp")
    global RULES
    RULES = bench_rules(work)
    stack = None
    try:
        if "accuracy" in phases:
            log("== accuracy (%d messages, offline)" % a.count)
            phase_accuracy(a, res, binary, work)
        if set(phases) - {"accuracy"}:
            base = free_base(a.port_base)
            log("== mail stack on port base %d" % base)
            stack = Stack(base, ["idle%02d" % i for i in range(1, IDLE_USERS + 1)])
        if "footprint" in phases:
            log("== footprint (50 mailboxes)")
            phase_footprint(a, res, binary, stack, work)
        if "flow" in phases:
            log("== flow (%d messages, %d rounds of Sieve, mailtriage, floor)" % (a.count, a.rounds))
            phase_flow(a, res, binary, stack, work)
        if "latency" in phases:
            log("== latency (%d messages, 1.5 s apart)" % a.lat_count)
            phase_latency(a, res, binary, stack, work)
        if "backlog" in phases:
            log("== backlog (%d messages)" % a.count)
            phase_backlog(a, res, binary, stack, work)
        if "idle" in phases:
            log("== idle (4 mailboxes, no mail, 2 windows of %d s)" % a.idle_seconds)
            phase_idle(a, res, binary, stack, work)
        if "year" in phases:
            log("== year (the daemon on a year of state)")
            phase_year(a, res, binary, stack, work)
        if "firststart" in phases:
            log("== firststart (a first start on a mailbox of %d messages)" % FIRST_START_COUNT)
            phase_firststart(a, res, binary, stack, work)
        if "bigbacklog" in phases:
            log("== bigbacklog (%d messages of %d MB)" % (a.big_count, a.big_mb))
            phase_bigbacklog(a, res, binary, stack, work)
    finally:
        for d in list(RUNNING):
            d.stop()
        if stack:
            stack.close()
        if a.keep:
            log("work dir kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(res.table())
    print("\n%d figures in %s" % (len(res.rows), a.out))


if __name__ == "__main__":
    main()
