#!/usr/bin/python3
"""etcd compatibility test for driftwood-kv (examples/kv), run by ctest.

    etcd_compat_test.py DRIFTWOOD_KV [--etcd PATH] [--etcdctl PATH]

Starts a 3-process driftwood-kv cluster and a real 3-member etcd cluster on
free 127.0.0.1 ports, each in a fresh temporary folder, and then:

 1. compat:   runs the same etcdctl (API 3) commands against both, on the same
              data (both start empty, so revisions line up), and compares the
              output: values, revisions, versions, counts, `more`, errors.
              cluster_id, member_id and raft_term are ignored; hash values
              are compared only within each cluster.
 2. errors:   every row of etcd's error table (statemachine/mvcc/mvcc_store.h)
              that etcdctl can produce gets the same exit code, gRPC code and
              message from both.
 3. failover: SIGKILLs the driftwood leader during a stream of puts; every
              acknowledged put must then be readable from every member, and
              HashKV must agree. Prints the failover time.
 4. restart:  SIGTERMs the whole driftwood cluster and starts it again on the
              same data: the data, the revision and HashKV are unchanged.

Every etcdctl command that fails is printed with its output. The exit code is
non-zero when any check fails; the summary at the end lists them. Every
process started here is killed and every folder removed at the end, also on
failure. Only the Python 3 standard library is used.
"""

import argparse
import base64
import ctypes
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

# Differences from etcd that have been looked at and accepted: the name of a
# check here turns its failure into a printed warning. Empty on purpose; add a
# name only after deciding that the difference is fine.
ACCEPTED_DIFFERENCES = set()

LEADER_DEADLINE = 30.0       # seconds for a cluster to elect a leader
CATCH_UP_DEADLINE = 20.0     # seconds for members to agree on a revision
FAILOVER_DEADLINE = 30.0     # seconds for the first put after the kill
STOP_DEADLINE = 20.0         # seconds for a SIGTERMed member to exit
ETCDCTL_TIMEOUT = 60.0       # hard limit on one etcdctl process
PUT_TIMEOUT = 1              # --command-timeout (s) of the failover puts

HEADER_IGNORED = ("cluster_id", "member_id", "raft_term")


def log(message=""):
    print(message, flush=True)


# --------------------------------------------------------------------------
# Processes


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL when this driver dies
    (PR_SET_PDEATHSIG), so that a killed test leaves no servers behind."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_ports(count):
    """`count` distinct ports that were free a moment ago: bound to port 0 on
    127.0.0.1 together, then released. The caller retries on a collision."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Result:
    def __init__(self, argv, stdin, returncode, stdout, stderr, seconds):
        self.argv = argv
        self.stdin = stdin
        self.rc = returncode
        self.out = stdout
        self.err = stderr
        self.seconds = seconds

    def command(self):
        text = "ETCDCTL_API=3 " + show_args(self.argv)
        if self.stdin is not None:
            if len(self.stdin) > 300:
                text += " <<< (%d bytes on stdin, starting %r)" % (
                    len(self.stdin), self.stdin[:40])
            else:
                text += " <<< %r" % self.stdin.decode("utf-8", "replace")
        return text

    def describe(self, limit=4000):
        parts = ["$ " + self.command(), "  exit code %s after %.2fs" % (
            self.rc, self.seconds)]
        for name, text in (("stdout", self.out), ("stderr", self.err)):
            if text:
                if len(text) > limit:
                    text = text[:limit] + "... (%d more characters)" % (
                        len(text) - limit)
                parts.append("  %s:\n%s" % (name, _indent(text.rstrip("\n"))))
        return "\n".join(parts)


def show_args(args):
    """A shell-like command line; bytes arguments (binary keys) shown as
    $'...' with escapes."""
    parts = []
    for arg in args:
        if isinstance(arg, bytes):
            parts.append("$'" + "".join(
                chr(b) if 32 <= b < 127 and b not in (39, 92) else
                "\\x%02x" % b for b in arg) + "'")
        else:
            parts.append(shlex.quote(arg))
    return " ".join(parts)


def _indent(text, prefix="    "):
    return "\n".join(prefix + line for line in text.split("\n"))


class Etcdctl:
    def __init__(self, path):
        self.path = path
        self.env = dict(os.environ)
        self.env["ETCDCTL_API"] = "3"
        for name in list(self.env):
            # Settings of the caller's own etcdctl must not leak in.
            if name.startswith("ETCDCTL_") and name != "ETCDCTL_API":
                del self.env[name]

    def run(self, endpoints, args, stdin=None, quiet=False, note=""):
        """Runs etcdctl against `endpoints`. A failing command is printed with
        its output unless `quiet` (used only while polling)."""
        argv = [self.path, "--endpoints=" + ",".join(endpoints)] + list(args)
        if isinstance(stdin, str):
            stdin = stdin.encode()
        start = time.monotonic()
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True,
                                  env=self.env, timeout=ETCDCTL_TIMEOUT,
                                  preexec_fn=_die_with_parent)
            rc, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as timeout:
            rc, out, err = "timeout", timeout.stdout or b"", (
                timeout.stderr or b"") + b"\n(killed after %ds)" % int(
                    ETCDCTL_TIMEOUT)
        result = Result(argv, stdin, rc, out.decode("utf-8", "replace"),
                        err.decode("utf-8", "replace"),
                        time.monotonic() - start)
        if rc != 0 and not quiet:
            log("[command failed%s]\n%s" % (
                " (" + note + ")" if note else "", result.describe()))
        return result


class Cluster:
    """Three local members of driftwood-kv or etcd."""

    def __init__(self, kind, binary, root, etcdctl):
        self.kind = kind                      # "driftwood" or "etcd"
        self.binary = binary
        self.root = root
        self.ctl = etcdctl
        prefix = "n" if kind == "driftwood" else "e"
        self.names = [prefix + str(i) for i in (1, 2, 3)]
        self.client_ports = []
        self.peer_ports = []
        self.procs = [None, None, None]
        self.token = "compat-" + kind
        self.extra_args = {}                  # member index -> extra flags

    # ---- configuration
    def data_dir(self, i):
        return os.path.join(self.root, self.names[i] + ".data")

    def log_path(self, i):
        return os.path.join(self.root, self.names[i] + ".log")

    def endpoint(self, i):
        return "127.0.0.1:%d" % self.client_ports[i]

    def endpoints(self, members=None):
        members = range(3) if members is None else members
        return [self.endpoint(i) for i in members]

    def client_url(self, i):
        return "http://" + self.endpoint(i)

    def peer_url(self, i):
        return "http://127.0.0.1:%d" % self.peer_ports[i]

    def initial_cluster(self):
        return ",".join("%s=%s" % (self.names[i], self.peer_url(i))
                        for i in range(3))

    def argv(self, i, state):
        common = [
            "--name", self.names[i],
            "--data-dir", self.data_dir(i),
            "--listen-client-urls", self.client_url(i),
            "--advertise-client-urls", self.client_url(i),
            "--listen-peer-urls", self.peer_url(i),
            "--initial-advertise-peer-urls", self.peer_url(i),
            "--initial-cluster", self.initial_cluster(),
            "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
        ]
        if self.kind == "etcd":
            # fsync stays on (etcd's default); quieter logs.
            common += ["--log-level", "warn", "--logger", "zap"]
        return [self.binary] + common + self.extra_args.get(i, [])

    # ---- processes
    def start_member(self, i, state):
        log_file = open(self.log_path(i), "ab")
        log_file.write(b"\n=== start (%s) %s\n" % (
            state.encode(), shlex.join(self.argv(i, state)).encode()))
        log_file.flush()
        self.procs[i] = subprocess.Popen(
            self.argv(i, state), stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        log_file.close()

    def launch(self, attempts=5):
        """First start on free ports; on a port collision, new ports."""
        for attempt in range(1, attempts + 1):
            ports = free_ports(6)
            self.client_ports, self.peer_ports = ports[:3], ports[3:]
            for i in range(3):
                shutil.rmtree(self.data_dir(i), ignore_errors=True)
                self.start_member(i, "new")
            try:
                return self.wait_leader([0, 1, 2])
            except ClusterDied as died:
                if not died.port_in_use or attempt == attempts:
                    raise
                log("%s: a port was taken meanwhile (%s); new ports, attempt "
                    "%d" % (self.kind, died, attempt + 1))
                self.kill_all()

    def restart_all(self, state):
        for i in range(3):
            self.start_member(i, state)
        return self.wait_leader([0, 1, 2])

    def alive(self, i):
        return self.procs[i] is not None and self.procs[i].poll() is None

    def live_members(self):
        return [i for i in range(3) if self.alive(i)]

    def check_running(self, members):
        for i in members:
            proc = self.procs[i]
            if proc is None or proc.poll() is not None:
                tail = self.log_tail(i)
                raise ClusterDied(
                    "%s member %s exited with code %s; its log ends:\n%s" % (
                        self.kind, self.names[i],
                        None if proc is None else proc.returncode,
                        _indent(tail)),
                    port_in_use=bool(re.search(
                        r"address already in use|cannot listen|"
                        r"Address already in use|bind", tail)))

    def log_tail(self, i, lines=25):
        try:
            with open(self.log_path(i), "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.rstrip("\n").split("\n")[-lines:])

    def status(self, members=None, quiet=True):
        """`endpoint status -w json` as {member index: Status}, or None."""
        members = self.live_members() if members is None else members
        result = self.ctl.run(self.endpoints(members),
                              ["endpoint", "status", "-w", "json"],
                              quiet=quiet)
        if result.rc != 0:
            return None, result
        try:
            rows = json.loads(result.out)
        except ValueError:
            return None, result
        by_endpoint = {row["Endpoint"]: row["Status"] for row in rows}
        out = {}
        for i in members:
            if self.endpoint(i) not in by_endpoint:
                return None, result
            out[i] = by_endpoint[self.endpoint(i)]
        return out, result

    def wait_leader(self, members=None, deadline=LEADER_DEADLINE):
        """Polls `endpoint status` until every member in `members` (default:
        the live ones) answers and all name the same leader among them.
        Returns (statuses, the leader's index, seconds waited)."""
        members = self.live_members() if members is None else members
        start = time.monotonic()
        last = None
        while True:
            self.check_running(members)
            statuses, last = self.status(members)
            if statuses:
                ids = {i: int(s["header"]["member_id"])
                       for i, s in statuses.items()}
                leaders = {int(s.get("leader", 0)) for s in statuses.values()}
                if len(leaders) == 1:
                    leader = leaders.pop()
                    owner = [i for i, member in ids.items()
                             if member == leader]
                    if leader != 0 and owner:
                        return statuses, owner[0], time.monotonic() - start
            if time.monotonic() - start > deadline:
                raise TestFailure(
                    "%s: no leader among members %s within %.0fs; the last "
                    "`endpoint status`:\n%s\n%s" % (
                        self.kind, [self.names[i] for i in members], deadline,
                        last.describe() if last else "(none)",
                        "\n".join("--- log of %s:\n%s" % (
                            self.names[i], _indent(self.log_tail(i)))
                            for i in members)))
            time.sleep(0.1)

    def signal_member(self, i, sig):
        if self.alive(i):
            self.procs[i].send_signal(sig)

    def wait_exit(self, i, deadline):
        try:
            return self.procs[i].wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            return None

    def kill_all(self):
        for i in range(3):
            proc = self.procs[i]
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    log("warning: %s member %s did not die on SIGKILL" % (
                        self.kind, self.names[i]))


class TestFailure(Exception):
    pass


class ClusterDied(TestFailure):
    def __init__(self, message, port_in_use=False):
        super().__init__(message)
        self.port_in_use = port_in_use


# --------------------------------------------------------------------------
# Normalising etcdctl output


RPC_ERROR = re.compile(r'rpc error: code = (\w+) desc = ((?:[^"\\]|\\.)*)')


def error_signature(result):
    """What a failing command tells a user: the gRPC code and message of the
    client's warning lines and the `Error:` line."""
    codes = []
    for code, desc in RPC_ERROR.findall(result.err):
        if (code, desc) not in codes:
            codes.append((code, desc))
    errors = [line for line in result.err.split("\n")
              if line.startswith("Error:")]
    return {"rpc": codes, "error": errors}


def _decode(text):
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        return text
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return repr(raw)


def normalize_json(value, strip_header=True):
    """Parsed etcdctl JSON with the ignored header fields dropped and keys and
    values decoded from base64 (for readable differences)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "header" and isinstance(item, dict) and strip_header:
                item = {k: v for k, v in item.items()
                        if k not in HEADER_IGNORED}
            elif key in ("key", "value") and isinstance(item, str):
                item = _decode(item)
            else:
                item = normalize_json(item, strip_header)
            out[key] = item
        return out
    if isinstance(value, list):
        return [normalize_json(item, strip_header) for item in value]
    return value


def parse_json(text):
    """etcdctl's JSON output; txn -i prints its prompts first."""
    start = text.find("{")
    start_list = text.find("[")
    if start_list != -1 and (start == -1 or start_list < start):
        start = start_list
    if start == -1:
        raise ValueError("no JSON in %r" % text[:200])
    return json.loads(text[start:])


def shorten_big(obj):
    """Long strings (the 1.6 MiB value) shortened for printing."""
    if isinstance(obj, str) and len(obj) > 200:
        return obj[:60] + "...(%d characters)" % len(obj)
    if isinstance(obj, dict):
        return {k: shorten_big(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [shorten_big(v) for v in obj]
    return obj


def pretty(obj):
    return json.dumps(shorten_big(obj), indent=1, sort_keys=True,
                      ensure_ascii=False)


# --------------------------------------------------------------------------
# Checks


class Checks:
    def __init__(self):
        self.passed = []
        self.failed = []      # (section, name, detail)
        self.accepted = []
        self.section = ""

    def begin(self, section):
        self.section = section
        log("\n==== %s" % section)

    def ok(self, name, condition, detail=""):
        if condition:
            self.passed.append((self.section, name))
            return True
        if name in ACCEPTED_DIFFERENCES:
            self.accepted.append((self.section, name, detail))
            log("ACCEPTED DIFFERENCE [%s] %s\n%s" % (
                self.section, name, _indent(detail)))
            return False
        self.failed.append((self.section, name, detail))
        log("MISMATCH [%s] %s\n%s" % (self.section, name, _indent(detail)))
        return False


class Compare:
    """Runs the same etcdctl command on both clusters and compares."""

    def __init__(self, ctl, drift, etcd, checks):
        self.ctl = ctl
        self.drift = drift
        self.etcd = etcd
        self.checks = checks

    def both(self, args, stdin=None, members=None, expect_fail=False):
        note = "expected to fail" if expect_fail else ""
        a = self.ctl.run(self.drift.endpoints(members), args, stdin,
                         note=("driftwood, " + note) if note else "driftwood")
        b = self.ctl.run(self.etcd.endpoints(members), args, stdin,
                         note=("etcd, " + note) if note else "etcd")
        return a, b

    def _endpoints_to_names(self, text, cluster):
        for i in range(3):
            text = text.replace(cluster.endpoint(i), "<endpoint %d>" % i)
        return text

    def text(self, args, stdin=None, members=None, name=None,
             expect_fail=False):
        """stdout and exit code equal (endpoints replaced), and for a failure
        the same gRPC code and messages."""
        a, b = self.both(args, stdin, members, expect_fail)
        name = name or "etcdctl " + show_args(args)
        got = {"exit code": a.rc,
               "stdout": self._endpoints_to_names(a.out, self.drift)}
        want = {"exit code": b.rc,
                "stdout": self._endpoints_to_names(b.out, self.etcd)}
        if a.rc != 0 or b.rc != 0:
            got.update(error_signature(a))
            want.update(error_signature(b))
        self._report(name, got, want, a, b)
        return a, b

    def json(self, args, stdin=None, members=None, name=None, note=""):
        """-w json output equal after normalize_json."""
        args = list(args)
        if "-w" not in args:
            args = ["-w", "json"] + args
        a, b = self.both(args, stdin, members)
        name = name or "etcdctl " + show_args(args)
        got, want = {"exit code": a.rc}, {"exit code": b.rc}
        for result, into in ((a, got), (b, want)):
            if result.rc == 0:
                try:
                    into["json"] = normalize_json(parse_json(result.out))
                except ValueError as error:
                    into["unparsable output"] = "%s: %r" % (error,
                                                            result.out[:500])
            else:
                into.update(error_signature(result))
        self._report(name, got, want, a, b, note)
        return a, b

    def error(self, args, stdin=None, name=None):
        """Both refuse with the same exit code, gRPC code and message."""
        a, b = self.both(args, stdin, expect_fail=True)
        name = name or "etcdctl " + show_args(args)
        got = dict(error_signature(a), **{"exit code": a.rc})
        want = dict(error_signature(b), **{"exit code": b.rc})
        self._report(name, got, want, a, b)
        if b.rc == 0:
            self.checks.ok(name + " (etcd refuses it)", False,
                           "etcd accepted the command; the test's "
                           "expectation is wrong:\n" + b.describe())
        return a, b

    def hashkv_fields(self):
        """endpoint hashkv -w json: compact_revision and header.revision
        equal (the hash itself differs from etcd's by design)."""
        args = ["endpoint", "hashkv", "-w", "json"]
        a, b = self.both(args, members=[0])
        got, want = {"exit code": a.rc}, {"exit code": b.rc}
        for result, into in ((a, got), (b, want)):
            if result.rc == 0:
                row = normalize_json(parse_json(result.out))[0]["HashKV"]
                row.pop("hash", None)
                into["json"] = row
        self._report("endpoint hashkv on one member: revision and "
                     "compact_revision", got, want, a, b)

    def _report(self, name, got, want, a, b, note=""):
        if got == want:
            self.checks.ok(name, True)
            log("ok    %s" % name)
            return
        self.checks.ok(name, False, (note + "\n" if note else "") + (
            "driftwood-kv answered:\n%s\netcd %s answered:\n%s\n"
            "driftwood command:\n%s\netcd command:\n%s") % (
                _indent(pretty(got)), "3.4", _indent(pretty(want)),
                _indent(a.describe(1500)), _indent(b.describe(1500))))


# --------------------------------------------------------------------------
# Sections


def txn_input(compares=(), success=(), failure=()):
    """The stdin of `etcdctl txn -i`: compares, an empty line, success
    operations, an empty line, failure operations, an empty line."""
    lines = list(compares) + [""] + list(success) + [""] + list(failure) + [""]
    return "\n".join(lines) + "\n"


def current_revision(ctl, cluster):
    result = ctl.run(cluster.endpoints(), ["get", "-w", "json", "health"])
    if result.rc != 0:
        raise TestFailure("cannot read the revision of " + cluster.kind)
    return int(json.loads(result.out)["header"]["revision"])


def section_compat(ctl, drift, etcd, checks, cmp):
    checks.begin("compat: the same etcdctl commands on driftwood-kv and etcd")

    # put and get
    for key, value in [("foo", "bar"), ("foo/a", "1"), ("foo/b", "2"),
                       ("foo/c", "3"), ("zz", "9"), ("foo/b", "2b"),
                       ("key with space", "hello world"),
                       ("ключ", "значение"), ("foo/d", "0"), ("foo/e", "2b"),
                       ("foo/a", "1")]:
        cmp.text(["put", key, value])
    cmp.json(["put", "foo/f", "f"])
    cmp.text(["get", "foo"])
    cmp.json(["get", "foo"])
    cmp.json(["get", "missing"])
    cmp.text(["get", "foo", "--prefix"])
    cmp.json(["get", "foo", "--prefix"])
    cmp.json(["get", "", "--prefix"])
    cmp.text(["get", "foo/b", "--from-key"])
    cmp.json(["get", "foo/b", "--from-key"])
    cmp.json(["get", "", "--from-key"])
    cmp.json(["get", "foo/a", "foo/c"])
    cmp.json(["get", "zz", "foo"], name="get with range_end before key")
    cmp.json(["get", "foo", "--prefix", "--limit", "2"])
    cmp.json(["get", "foo", "--prefix", "--limit", "7"])
    cmp.json(["get", "foo", "--prefix", "--limit=-1"])
    cmp.text(["get", "foo", "--prefix", "--keys-only"])
    cmp.json(["get", "foo", "--prefix", "--keys-only"])
    cmp.json(["get", "foo", "--prefix", "--keys-only", "--limit", "3"])
    cmp.text(["get", "foo", "--prefix", "--print-value-only"])
    cmp.text(["get", "foo", "--rev", "2"])
    cmp.json(["get", "foo", "--rev", "2"])
    cmp.json(["get", "foo/b", "--rev", "5"])
    cmp.json(["get", "foo/b", "--rev", "7"])
    cmp.json(["get", "foo", "--prefix", "--rev", "4"])
    cmp.json(["get", "foo", "--prefix", "--rev=-1"])
    cmp.json(["get", "foo", "--prefix", "--rev", "0"])
    # A serializable read on one member, after a linearizable read there.
    cmp.json(["get", "foo", "--prefix"], members=[0])
    cmp.json(["get", "foo", "--prefix", "--consistency=s"], members=[0])
    for target in ("KEY", "VERSION", "CREATE", "MODIFY", "VALUE"):
        for order in ("ASCEND", "DESCEND"):
            cmp.json(["get", "foo", "--prefix", "--sort-by=" + target,
                      "--order=" + order])
    cmp.text(["get", "foo", "--prefix", "--sort-by=MODIFY",
              "--order=DESCEND"])
    cmp.json(["get", "foo", "--prefix", "--sort-by=VALUE", "--order=DESCEND",
              "--limit", "3"])
    cmp.json(["get", "foo", "--prefix", "--sort-by=VERSION", "--limit", "2"],
             note="A sort target other than KEY without --order sends "
                  "sort_order NONE: etcd then reads only the first limit+1 "
                  "keys in key order and sorts those (rangeLimit in etcd's "
                  "apply.go); it sorts everything before the limit only when "
                  "sort_order != NONE or a min/max filter is set.")
    cmp.json(["get", "foo", "--prefix", "--sort-by=VALUE"])
    cmp.json(["get", "foo", "--prefix", "--order=DESCEND"])
    cmp.json(["get", "foo", "--prefix", "--order=DESCEND", "--limit", "2"])
    # Binary keys: the prefix end of a key ending in 0xff, and of 0xff only.
    cmp.text(["put", b"bin\xff\xfe", "b1"])
    cmp.text(["put", b"bin\xff", "b2"])
    cmp.text(["put", b"bio", "b3"])
    cmp.text(["put", b"\xff\xff", "b4"])
    cmp.json(["get", b"bin\xff", "--prefix"])
    cmp.json(["get", b"\xff", "--prefix"])
    cmp.json(["get", b"bin", "--prefix", "--sort-by=KEY", "--order=DESCEND"])

    # put variants
    cmp.text(["put", "foo", "bar2", "--prev-kv"])
    cmp.json(["put", "foo", "bar3", "--prev-kv"])
    cmp.text(["put", "new1", "v", "--prev-kv"])
    cmp.json(["put", "foo", "--ignore-value"])
    cmp.json(["get", "foo"], name="get foo after put --ignore-value")
    cmp.json(["put", "foo", "bar4", "--ignore-lease"])
    cmp.json(["put", "foo", "bar4"], name="put of an unchanged value")
    cmp.json(["get", "foo"], name="get foo after an unchanged put")

    # del
    cmp.text(["del", "foo/", "--prefix", "--prev-kv"])
    cmp.json(["get", "foo", "--prefix"], name="get foo --prefix after del")
    cmp.json(["del", "missing"], name="del of a missing key (no revision)")
    cmp.json(["get", "foo"], name="revision after a del of nothing")
    cmp.json(["del", "zz", "foo"], name="del with range_end before key")
    cmp.json(["del", "key with space", "--prev-kv"])
    for key in ("r1", "r2", "r3", "r4"):
        cmp.text(["put", key, "v" + key])
    cmp.json(["del", "r1", "r3"])
    cmp.json(["del", "r3", "--from-key", "--prev-kv"])
    cmp.text(["del", "foo"])
    cmp.json(["put", "foo", "again"], name="put after delete (version 1)")

    # txn -i
    cmp.text(["put", "t/a", "1"])
    cmp.text(["put", "t/b", "2"])
    cmp.text(["txn", "-i"], stdin=txn_input(
        ['val("t/a") = "1"', 'ver("t/a") = "1"', 'create("t/b") > "0"',
         'mod("t/b") > "0"'],
        ["put t/c 3", "get t/ --prefix"], ["put t/fail x"]),
        name="txn -i: value/version/create/mod compares hold (SUCCESS)")
    cmp.json(["txn", "-i"], stdin=txn_input(
        ['val("t/a") != "1"'],
        ["put t/never x"], ["put t/a 11", "del t/b", "get t/a"]),
        name="txn -i -w json: value compare fails (FAILURE)")
    cmp.text(["txn", "-i"], stdin=txn_input(
        ['ver("t/a") = "1"'], ["put t/never x"], ["get t/a"]),
        name="txn -i: version compare fails")
    cmp.text(["txn", "-i"], stdin=txn_input(
        ['mod("t/a") < "3"'], ["put t/never x"], ["get t/a"]),
        name="txn -i: mod compare fails")
    cmp.text(["txn", "-i"], stdin=txn_input(
        ['create("t/a") = "1"'], ["put t/never x"], ["get t/a"]),
        name="txn -i: create compare fails")
    cmp.json(["txn", "-i"], stdin=txn_input(
        ['create("t/none") = "0"', 'ver("t/none") = "0"',
         'mod("t/none") = "0"'], ["put t/d 4"], ["put t/never x"]),
        name="txn -i: compares on a missing key against 0 hold")
    cmp.json(["txn", "-i"], stdin=txn_input(
        ['val("t/none") = ""'], ["put t/never x"], ["get t/none"]),
        name="txn -i: value compare on a missing key is false")
    cmp.json(["txn", "-i"], stdin=txn_input(
        ['val("t/a") > "10"', 'mod("t/a") > "1"', 'ver("t/a") < "3"'],
        ["get t/a", "put t/a 12", "get t/a"], ["put t/never x"]),
        name="txn -i: get and put of one key in a branch (allowed)",
        note="In etcd each operation's header.revision inside a Txn is the "
             "revision as of that operation: a get or a del that comes "
             "before the first change reports the old revision, later ones "
             "the new one.")
    cmp.json(["txn", "-i"], stdin=txn_input(
        [], ["del t/missing", "get t/b", "put t/b 3", "del t/missing2",
             "get t/b"], []),
        name="txn -i: header revisions of a del of nothing and a get, before "
             "and after a put",
        note="In etcd each operation's header.revision inside a Txn is the "
             "revision as of that operation: a get or a del of nothing "
             "before the first change reports the old revision.")
    cmp.json(["txn", "-i"], stdin=txn_input(
        [], ["get t/a", "get t/b"], []),
        name="txn -i: a read-only txn")
    cmp.json(["txn", "-i"], stdin=txn_input(
        [], ["put t/e 5"], ["put t/e 6"]),
        name="txn -i: the same key in both branches (allowed)")
    cmp.json(["txn", "-i"], stdin=txn_input(
        ['val("t/a") = "12"'], ["del t/ --prefix", "put u/1 x"],
        ["put t/never x"]),
        name="txn -i: del --prefix and a put outside its range")
    cmp.json(["get", "", "--prefix"], name="everything after the txns")
    cmp.text(["txn", "-i"], stdin=txn_input(
        [], ["put m/%03d v" % i for i in range(128)], []),
        name="txn -i with 128 puts (the limit, accepted)")
    cmp.json(["get", "m/", "--prefix", "--limit", "3"],
             name="get after the 128-put txn")

    # compaction
    rev = current_revision(ctl, etcd)
    compact_at = rev - 3
    cmp.text(["compaction", str(compact_at)])
    cmp.json(["get", "foo", "--rev", str(compact_at)],
             name="get at exactly the compaction revision")
    cmp.json(["get", "", "--prefix", "--rev", str(compact_at), "--limit",
              "2"], name="get --prefix at the compaction revision")
    cmp.text(["compaction", "--physical", str(compact_at + 1)])
    settle(ctl, drift, [0, 1, 2])
    settle(ctl, etcd, [0, 1, 2])
    cmp.hashkv_fields()

    # Maintenance and cluster
    section_maintenance(ctl, drift, etcd, checks, cmp)


def settle(ctl, cluster, members):
    """Polls `endpoint status` until `members` report the same store revision
    and applied index (followers apply a moment after the leader)."""
    start = time.monotonic()
    while True:
        cluster.check_running(members)
        statuses, result = cluster.status(members)
        if statuses:
            revisions = {int(s["header"].get("revision", 0))
                         for s in statuses.values()}
            applied = {int(s.get("raftAppliedIndex", 0))
                       for s in statuses.values()}
            if len(revisions) == 1 and len(applied) == 1:
                return statuses
        if time.monotonic() - start > CATCH_UP_DEADLINE:
            raise TestFailure(
                "%s: members %s do not agree on revision and applied index "
                "within %.0fs; the last `endpoint status`:\n%s" % (
                    cluster.kind, [cluster.names[i] for i in members],
                    CATCH_UP_DEADLINE, result.describe()))
        time.sleep(0.05)


def hashes(cluster, ctl, members, rev=None):
    args = ["endpoint", "hashkv", "-w", "json"]
    if rev is not None:
        args += ["--rev", str(rev)]
    result = ctl.run(cluster.endpoints(members), args)
    if result.rc != 0:
        return None, result
    rows = parse_json(result.out)
    return {row["Endpoint"]: row["HashKV"] for row in rows}, result


def check_hash_agreement(checks, cluster, ctl, members, what, rev=None):
    settle(ctl, cluster, members)
    by_endpoint, result = hashes(cluster, ctl, members, rev)
    name = "%s: endpoint hashkv%s agrees on %s" % (
        cluster.kind, "" if rev is None else " --rev %d" % rev,
        ", ".join(cluster.names[i] for i in members))
    if by_endpoint is None:
        checks.ok(name, False, "the command failed:\n" + result.describe())
        return None
    values = {(row.get("hash", 0), row.get("compact_revision", 0),
               row["header"].get("revision", 0))
              for row in by_endpoint.values()}
    checks.ok(name + " (" + what + ")", len(values) == 1 and len(
        by_endpoint) == len(members),
              "hash, compact_revision and revision per member differ:\n" +
              _indent(result.out))
    if len(values) == 1:
        log("ok    %s: hash %d" % (name, next(iter(values))[0]))
        return next(iter(values))
    return None


def section_maintenance(ctl, drift, etcd, checks, cmp):
    checks.begin("compat: maintenance and cluster commands")
    # endpoint status: succeeds and reports one leader; revisions line up.
    revisions = {}
    for cluster in (drift, etcd):
        settle(ctl, cluster, [0, 1, 2])
        result = ctl.run(cluster.endpoints(), ["endpoint", "status", "-w",
                                               "json"])
        name = "%s: endpoint status succeeds and names a leader" % (
            cluster.kind)
        if not checks.ok(name, result.rc == 0, result.describe()):
            continue
        rows = parse_json(result.out)
        ids = [int(row["Status"]["header"]["member_id"]) for row in rows]
        leaders = {int(row["Status"].get("leader", 0)) for row in rows}
        version = rows[0]["Status"].get("version", "")
        match = re.match(r"^3\.(\d+)", version)
        checks.ok(name, len(rows) == 3 and len(leaders) == 1 and
                  leaders.pop() in ids, result.out)
        checks.ok("%s: endpoint status version %r is 3.x with x >= 2" % (
            cluster.kind, version), bool(match) and int(match.group(1)) >= 2,
                  result.out)
        revisions[cluster.kind] = sorted(
            {int(row["Status"]["header"].get("revision", 0)) for row in rows})
        log("ok    %s: endpoint status (leader %x, revisions %s)" % (
            cluster.kind, int(rows[0]["Status"]["leader"]),
            revisions[cluster.kind]))
    checks.ok("endpoint status: header revisions equal on both clusters",
              revisions.get("driftwood") == revisions.get("etcd"),
              "driftwood %s, etcd %s" % (revisions.get("driftwood"),
                                         revisions.get("etcd")))
    # endpoint health prints to stderr.
    for cluster in (drift, etcd):
        result = ctl.run(cluster.endpoints(), ["endpoint", "health"])
        healthy = [ep for ep in cluster.endpoints()
                   if re.search(re.escape(ep) + r" is healthy", result.err)]
        checks.ok("%s: endpoint health: every member healthy" % cluster.kind,
                  result.rc == 0 and len(healthy) == 3, result.describe())
    # endpoint hashkv: agreement within each cluster; compact_revision and
    # revision equal across the clusters.
    agreed = {}
    for cluster in (drift, etcd):
        agreed[cluster.kind] = check_hash_agreement(
            checks, cluster, ctl, [0, 1, 2], "all members")
        check_hash_agreement(checks, cluster, ctl, [0, 1, 2],
                             "at a past revision", rev=current_revision(
                                 ctl, cluster) - 1)
    if agreed["driftwood"] and agreed["etcd"]:
        checks.ok("endpoint hashkv: compact_revision and revision equal on "
                  "both clusters",
                  agreed["driftwood"][1:] == agreed["etcd"][1:],
                  "driftwood (compact_revision, revision) = %s, etcd = %s" % (
                      agreed["driftwood"][1:], agreed["etcd"][1:]))
    # member list
    for cluster in (drift, etcd):
        result = ctl.run(cluster.endpoints(), ["member", "list", "-w",
                                               "json"])
        kind = cluster.kind
        if not checks.ok("%s: member list succeeds" % kind, result.rc == 0,
                         result.describe()):
            continue
        members = parse_json(result.out).get("members", [])
        names = sorted(m.get("name", "") for m in members)
        checks.ok("%s: member list has the 3 members by name" % kind,
                  names == sorted(cluster.names), result.out)
        ids = [int(m["ID"]) for m in members]
        checks.ok("%s: member list is sorted by member ID (as etcd's is)" %
                  kind, ids == sorted(ids), result.out)
        want_peers = {cluster.names[i]: [cluster.peer_url(i)]
                      for i in range(3)}
        got_peers = {m.get("name"): m.get("peerURLs") for m in members}
        checks.ok("%s: member list peerURLs" % kind, got_peers == want_peers,
                  "expected %s\ngot %s" % (want_peers, got_peers))
        want_clients = {cluster.names[i]: [cluster.client_url(i)]
                        for i in range(3)}
        got_clients = {m.get("name"): m.get("clientURLs") for m in members}
        checks.ok("%s: member list clientURLs of every member (needed by "
                  "--cluster)" % kind, got_clients == want_clients,
                  "expected %s\ngot %s\n%s" % (want_clients, got_clients,
                                               result.describe()))
        checks.ok("%s: member list: no learners" % kind,
                  not any(m.get("isLearner") for m in members), result.out)
        # The text form: "ID, started, name, peer URLs, client URLs, false".
        text = ctl.run(cluster.endpoints(), ["member", "list"])
        lines = [line for line in text.out.split("\n") if line]
        expected = {cluster.names[i]: "%s, %s, false" % (
            cluster.peer_url(i), cluster.client_url(i)) for i in range(3)}
        got = {}
        for line in lines:
            fields = line.split(", ", 3)
            if len(fields) == 4 and re.match(r"^[0-9a-f]+$", fields[0]) and \
                    fields[1] == "started":
                got[fields[2]] = fields[3]
        ok = text.rc == 0 and len(lines) == 3 and got == expected
        checks.ok("%s: member list (table) names each member with its URLs"
                  % kind, ok, text.describe())
    # defrag, alarm list, --user without auth
    cmp.text(["defrag"])
    cmp.text(["alarm", "list"])
    cmp.json(["alarm", "list"])
    cmp.text(["--user", "root:secret", "get", "foo"],
             name="--user root:secret get foo (authentication not enabled)")
    # The whole store once more, on every member.
    for i in range(3):
        cmp.json(["get", "", "--prefix"], members=[i],
                 name="everything, linearizable, member %d" % (i + 1))


def section_errors(ctl, drift, etcd, checks, cmp):
    checks.begin("errors: etcd's error table (statemachine/mvcc/mvcc_store.h)")
    # empty key
    cmp.error(["put", "", "v"])
    cmp.error(["get", ""])
    cmp.error(["del", ""])
    cmp.error(["txn", "-i"], stdin=txn_input([], ['put "" v'], []),
              name="txn -i with an empty key")
    # ignore_value / ignore_lease on a missing key
    cmp.error(["put", "missing", "--ignore-value"])
    cmp.error(["put", "missing", "v", "--ignore-lease"])
    # too many operations
    cmp.error(["txn", "-i"], stdin=txn_input(
        [], ["put many/%03d v" % i for i in range(129)], []),
        name="txn -i with 129 puts")
    cmp.error(["txn", "-i"], stdin=txn_input(
        ['ver("x%03d") = "0"' % i for i in range(129)], ["put x v"], []),
        name="txn -i with 129 compares")
    cmp.error(["txn", "-i"], stdin=txn_input(
        [], [], ["put many/%03d v" % i for i in range(129)]),
        name="txn -i with 129 puts in the failure branch")
    # duplicate keys
    cmp.error(["txn", "-i"], stdin=txn_input([], ["put d x", "put d y"], []),
              name="txn -i: the same key put twice")
    cmp.error(["txn", "-i"], stdin=txn_input([], ["put d x", "del d"], []),
              name="txn -i: put and del of one key")
    cmp.error(["txn", "-i"], stdin=txn_input(
        [], ["del d --prefix", "put d/1 x"], []),
        name="txn -i: a put inside a deleted range")
    cmp.error(["txn", "-i"], stdin=txn_input(
        [], [], ["put d x", "put d y"]),
        name="txn -i: the same key put twice in the failure branch")
    # request too large: 1.6 MiB through stdin (too long for an argument)
    big = b"a" * (1677722)
    cmp.error(["put", "big"], stdin=big, name="put of a 1.6 MiB value")
    # compacted and future revisions
    rev = current_revision(ctl, etcd)
    hashkv, _ = hashes(etcd, ctl, [0])
    compacted = int(next(iter(hashkv.values()))["compact_revision"])
    cmp.error(["get", "foo", "--rev", str(compacted - 1)],
              name="get --rev below the compaction point")
    cmp.error(["compaction", str(compacted)],
              name="compaction at the compaction point")
    cmp.error(["compaction", str(compacted - 1)],
              name="compaction below the compaction point")
    cmp.error(["compaction", "0"])
    cmp.error(["get", "foo", "--rev", str(rev + 1)],
              name="get --rev current+1 (future)")
    cmp.error(["get", "foo", "--rev", "100000"], name="get --rev 100000")
    cmp.error(["compaction", str(rev + 1)],
              name="compaction current+1 (future)")
    cmp.error(["txn", "-i"], stdin=txn_input(
        [], ["get foo --rev=%d" % (rev + 5)], []),
        name="txn -i with a get at a future revision")
    # lease not found (leases are not built yet, but a put naming one is
    # refused with etcd's error)
    cmp.error(["put", "leased", "v", "--lease=1234abcd"])
    # Nothing above changed the store.
    cmp.json(["get", "", "--prefix", "--keys-only"],
             name="the store after the refused requests")
    for cluster in (drift, etcd):
        check_hash_agreement(checks, cluster, ctl, [0, 1, 2],
                             "after the errors")


# --------------------------------------------------------------------------
# Failover and restart (driftwood only)


def get_prefix(ctl, cluster, members, prefix, serializable, quiet=False):
    args = ["get", prefix, "--prefix", "-w", "json"]
    if serializable:
        args.append("--consistency=s")
    result = ctl.run(cluster.endpoints(members), args, quiet=quiet)
    if result.rc != 0:
        return None, result
    data = parse_json(result.out)
    kvs = {_decode(kv["key"]): (_decode(kv.get("value", "")),
                                 int(kv.get("version", 0)),
                                 int(kv.get("mod_revision", 0)))
           for kv in data.get("kvs", [])}
    return (int(data["header"]["revision"]), kvs), result


def wait_revisions_agree(ctl, cluster, members, prefix):
    """Serializable reads on each member until their header revisions agree;
    returns {member: (revision, kvs)}."""
    start = time.monotonic()
    while True:
        reads = {}
        for i in members:
            got, result = get_prefix(ctl, cluster, [i], prefix, True,
                                     quiet=True)
            if got is None:
                break
            reads[i] = got
        if len(reads) == len(members) and len(
                {rev for rev, _ in reads.values()}) == 1:
            return reads
        if time.monotonic() - start > CATCH_UP_DEADLINE:
            raise TestFailure(
                "driftwood: members %s do not agree on a revision within "
                "%.0fs: %s" % ([cluster.names[i] for i in members],
                               CATCH_UP_DEADLINE,
                               {cluster.names[i]: r[0]
                                for i, r in reads.items()}))
        time.sleep(0.1)


def check_acknowledged(checks, cluster, reads, acked, attempted, what):
    for i, (revision, kvs) in sorted(reads.items()):
        missing = [key for key in acked if key not in kvs]
        wrong = [key for key in attempted
                 if key in kvs and kvs[key][0] != attempted[key]]
        checks.ok("%s: every acknowledged put readable on %s (%s)" % (
            cluster.kind, cluster.names[i], what), not missing and not wrong,
            "at revision %d: %d acknowledged keys missing: %s; wrong values: "
            "%s" % (revision, len(missing), missing[:20], wrong[:20]))


def section_failover(ctl, drift, checks):
    checks.begin("failover: SIGKILL the driftwood leader during a stream of "
                 "puts")
    drift.wait_leader()
    prefix = "stream/"
    records = []            # (index, ok, start, end, result)
    stop = threading.Event()
    lock = threading.Lock()

    def stream():
        i = 0
        while not stop.is_set():
            key = "%s%05d" % (prefix, i)
            start = time.monotonic()
            # A short timeout: a put stuck on the killed member gives up
            # soon, so that the failover time is the cluster's, not the
            # client's 5 s default.
            result = ctl.run(drift.endpoints(), [
                "--command-timeout=%ds" % PUT_TIMEOUT, "put", key,
                "v%d" % i], quiet=True)
            end = time.monotonic()
            ok = result.rc == 0 and result.out.strip() == "OK"
            with lock:
                records.append((i, ok, start, end, result))
            i += 1

    def count_ok(after=None):
        with lock:
            return sum(1 for r in records if r[1] and (
                after is None or r[2] >= after))

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while count_ok() < 25:
            if time.monotonic() > deadline or not thread.is_alive():
                raise TestFailure("driftwood: fewer than 25 puts succeeded in "
                                  "30 s before the kill")
            time.sleep(0.02)
        # The leader now (it may have changed since wait_leader).
        _, leader, _ = drift.wait_leader()
        kill_time = time.monotonic()
        drift.procs[leader].kill()
        drift.procs[leader].wait()
        log("killed the leader %s (pid %d) with SIGKILL after %d "
            "acknowledged puts" % (drift.names[leader],
                                   drift.procs[leader].pid, count_ok()))
        deadline = kill_time + FAILOVER_DEADLINE
        survivors = drift.live_members()
        elected = None
        while count_ok(after=kill_time) < 25:
            if time.monotonic() > deadline:
                break
            if elected is None:
                statuses, _ = drift.status(survivors)
                leaders = {int(st.get("leader", 0))
                           for st in (statuses or {}).values()}
                ids = {int(st["header"]["member_id"])
                       for st in (statuses or {}).values()}
                if len(leaders) == 1 and leaders <= ids:
                    elected = time.monotonic() - kill_time
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(timeout=ETCDCTL_TIMEOUT + 5)

    failed = [r for r in records if not r[1]]
    for r in failed:
        log("[put not acknowledged] started %+.2fs from the kill\n%s" % (
            r[2] - kill_time, r[4].describe(800)))
    after = [r for r in records if r[1] and r[2] >= kill_time]
    any_after = [r for r in records if r[1] and r[3] >= kill_time]
    if not checks.ok("driftwood: a put succeeds within %.0fs of killing the "
                     "leader" % FAILOVER_DEADLINE, bool(after),
                     "no put started after the kill succeeded; logs:\n" +
                     "\n".join(drift.log_tail(i) for i in
                               drift.live_members())):
        return None
    failover = min(r[3] for r in any_after) - kill_time
    first_started = min(r[3] for r in after) - kill_time
    log("FAILOVER TIME: %.3f s from the SIGKILL of the leader to the first "
        "acknowledged put (the first put started after the kill was "
        "acknowledged at %.3f s; `endpoint status` of the survivors showed "
        "a new leader at %s); %d puts (--command-timeout=%ds), %d "
        "acknowledged, %d not" % (
            failover, first_started,
            "%.3f s" % elected if elected is not None else "(not seen)",
            len(records), PUT_TIMEOUT, len(records) - len(failed),
            len(failed)))

    acked = {"%s%05d" % (prefix, r[0]) for r in records if r[1]}
    attempted = {"%s%05d" % (prefix, r[0]): "v%d" % r[0] for r in records}
    live = drift.live_members()
    drift.wait_leader(live)
    reads = wait_revisions_agree(ctl, drift, live, prefix)
    check_acknowledged(checks, drift, reads, acked, attempted,
                       "the 2 live members")
    check_hash_agreement(checks, drift, ctl, live, "the 2 live members")

    # The killed member comes back on its data and catches up.
    drift.start_member(leader, "existing")
    drift.wait_leader([0, 1, 2])
    reads = wait_revisions_agree(ctl, drift, [0, 1, 2], prefix)
    check_acknowledged(checks, drift, reads, acked, attempted,
                       "after the killed member restarted")
    check_hash_agreement(checks, drift, ctl, [0, 1, 2],
                         "with the restarted member")
    return failover


SCHED_OTHER, SCHED_BATCH = 0, 3


def thread_policies(pid):
    """{scheduling policy: thread names} of a running process (/proc)."""
    policies = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                stat = f.read()
        except OSError:
            continue                          # the thread ended meanwhile
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        policy = int(stat.rsplit(")", 1)[1].split()[38])   # field 41
        policies.setdefault(policy, []).append(name)
    return policies


def check_scheduling(checks, drift, members, policy, what):
    for i in members:
        policies = thread_policies(drift.procs[i].pid)
        checks.ok("driftwood: every thread of %s runs under %s" % (
                      drift.names[i], what),
                  set(policies) == {policy},
                  "threads by policy (0 SCHED_OTHER, 3 SCHED_BATCH): %s" %
                  policies)


def section_restart(ctl, drift, checks):
    checks.begin("restart: SIGTERM the whole driftwood cluster and start it "
                 "again on the same data")
    drift.wait_leader()
    check_scheduling(checks, drift, [0, 1, 2], SCHED_BATCH,
                     "SCHED_BATCH (--scheduling batch, the default)")
    wait_revisions_agree(ctl, drift, [0, 1, 2], "")
    before = ctl.run(drift.endpoints(), ["get", "", "--prefix", "-w", "json"])
    hash_before = check_hash_agreement(checks, drift, ctl, [0, 1, 2],
                                       "before the stop")
    if before.rc != 0 or hash_before is None:
        checks.ok("driftwood: read everything before the stop", False,
                  before.describe())
        return
    data_before = normalize_json(parse_json(before.out))
    applied_before = {i: int(st.get("raftAppliedIndex", 0)) for i, st in
                      settle(ctl, drift, [0, 1, 2]).items()}
    start = time.monotonic()
    for i in range(3):
        drift.signal_member(i, signal.SIGTERM)
    codes = [drift.wait_exit(i, STOP_DEADLINE) for i in range(3)]
    log("SIGTERM: members exited with codes %s in %.2f s" % (
        codes, time.monotonic() - start))
    checks.ok("driftwood: every member exits with code 0 on SIGTERM",
              codes == [0, 0, 0],
              "exit codes %s (None: still running after %.0fs)\n%s" % (
                  codes, STOP_DEADLINE, "\n".join(
                      "--- log of %s:\n%s" % (drift.names[i],
                                              _indent(drift.log_tail(i)))
                      for i in range(3))))
    drift.kill_all()
    drift.extra_args[2] = ["--scheduling", "normal"]
    _, _, waited = drift.restart_all("existing")
    log("restarted; a leader after %.2f s" % waited)
    check_scheduling(checks, drift, [2], SCHED_OTHER,
                     "the normal policy when started with --scheduling normal")
    # Nothing already applied is applied again: each member's state machine
    # comes back at (at least) the index it had applied before the stop, as
    # its start line says ("node N started in cluster C: term T, log [F, L],
    # commit C, applied A").
    for i in range(3):
        starts = re.findall(r"started in cluster \S+: term \d+, log \[\d+, "
                            r"(\d+)\], commit \d+, applied (\d+)",
                            drift.log_tail(i, 400))
        name = ("driftwood: %s restarts with its state machine at the applied "
                "index it had (%d), so nothing is applied twice" % (
                    drift.names[i], applied_before[i]))
        if not starts:
            checks.ok(name, False, "no 'started in cluster ... applied N' "
                      "line in the log:\n" + _indent(drift.log_tail(i)))
            continue
        last_index, applied = (int(x) for x in starts[-1])
        checks.ok(name, applied >= applied_before[i],
                  "applied %d at the restart, %d before the stop" % (
                      applied, applied_before[i]))
        log("      %s: applied %d at the restart (log ends at %d; %d "
            "before the stop)" % (drift.names[i], applied, last_index,
                                  applied_before[i]))
    wait_revisions_agree(ctl, drift, [0, 1, 2], "")
    after = ctl.run(drift.endpoints(), ["get", "", "--prefix", "-w", "json"])
    if not checks.ok("driftwood: read everything after the restart",
                     after.rc == 0, after.describe()):
        return
    data_after = normalize_json(parse_json(after.out))
    checks.ok("driftwood: get --prefix \"\" identical before and after the "
              "restart (keys, values, versions, revisions, count)",
              data_before == data_after,
              "before:\n%s\nafter:\n%s" % (
                  _indent(pretty(data_before)[:3000]),
                  _indent(pretty(data_after)[:3000])))
    checks.ok("driftwood: the revision is unchanged by the restart",
              data_before["header"].get("revision") ==
              data_after["header"].get("revision"),
              "before %s, after %s (a change means entries were applied "
              "twice)" % (data_before["header"].get("revision"),
                          data_after["header"].get("revision")))
    hash_after = check_hash_agreement(checks, drift, ctl, [0, 1, 2],
                                      "after the restart")
    checks.ok("driftwood: hashkv unchanged by the restart",
              hash_after == hash_before,
              "(hash, compact_revision, revision) before %s, after %s" % (
                  hash_before, hash_after))
    # And the cluster still takes writes, at the next revision.
    put = ctl.run(drift.endpoints(), ["put", "-w", "json", "after-restart",
                                      "x"])
    if checks.ok("driftwood: a put after the restart", put.rc == 0,
                 put.describe()):
        revision = int(json.loads(put.out)["header"]["revision"])
        checks.ok("driftwood: the first put after the restart gets the next "
                  "revision", revision == int(
                      data_before["header"]["revision"]) + 1,
                  "got %d, expected %d" % (
                      revision, int(data_before["header"]["revision"]) + 1))


# --------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("driftwood_kv", help="the driftwood-kv binary")
    parser.add_argument("--etcd", default="/usr/bin/etcd")
    parser.add_argument("--etcdctl", default="/usr/bin/etcdctl")
    args = parser.parse_args()
    for path in (args.driftwood_kv, args.etcd, args.etcdctl):
        if not os.access(path, os.X_OK):
            log("FAIL: %s is not an executable (etcd and etcdctl come from "
                "Debian's etcd-server and etcd-client; scripts/setup installs "
                "them)" % path)
            return 2

    # ctest's timeout sends SIGTERM on some platforms: clean up then too.
    def on_term(signum, _frame):
        raise SystemExit("stopped by signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)

    started = time.monotonic()
    timings = {}
    root = tempfile.mkdtemp(prefix="driftwood-etcd-compat-")
    ctl = Etcdctl(args.etcdctl)
    drift = Cluster("driftwood", args.driftwood_kv,
                    os.path.join(root, "driftwood"), ctl)
    etcd = Cluster("etcd", args.etcd, os.path.join(root, "etcd"), ctl)
    os.makedirs(drift.root)
    os.makedirs(etcd.root)
    checks = Checks()
    failover = None
    fatal = None
    try:
        log("data in %s" % root)
        t = time.monotonic()
        _, leader, waited = drift.launch()
        log("driftwood-kv: 3 members on %s; leader %s after %.2f s" % (
            ",".join(drift.endpoints()), drift.names[leader], waited))
        _, leader, waited = etcd.launch()
        log("etcd (%s): 3 members on %s; leader %s after %.2f s" % (
            subprocess.run([args.etcd, "--version"], capture_output=True,
                           text=True).stdout.split("\n")[0],
            ",".join(etcd.endpoints()), etcd.names[leader], waited))
        timings["start"] = time.monotonic() - t

        t = time.monotonic()
        cmp = Compare(ctl, drift, etcd, checks)
        section_compat(ctl, drift, etcd, checks, cmp)
        section_errors(ctl, drift, etcd, checks, cmp)
        timings["compat+errors"] = time.monotonic() - t
        etcd.kill_all()       # not needed any more; frees the CPU

        t = time.monotonic()
        failover = section_failover(ctl, drift, checks)
        timings["failover"] = time.monotonic() - t

        t = time.monotonic()
        section_restart(ctl, drift, checks)
        timings["restart"] = time.monotonic() - t
    except TestFailure as error:
        fatal = str(error)
    except (KeyboardInterrupt, SystemExit) as error:
        fatal = "interrupted (%s)" % (error or type(error).__name__)
    except BaseException as error:   # a bug in this test: say where
        import traceback
        fatal = "%s: %s\n%s" % (type(error).__name__, error,
                                traceback.format_exc())
    finally:
        drift.kill_all()
        etcd.kill_all()
        if fatal:
            for cluster in (drift, etcd):
                for i in range(3):
                    log("--- end of the log of %s %s:\n%s" % (
                        cluster.kind, cluster.names[i],
                        _indent(cluster.log_tail(i, 15))))
        shutil.rmtree(root, ignore_errors=True)

    log("\n==== summary")
    log("checks passed: %d, failed: %d, accepted differences: %d" % (
        len(checks.passed), len(checks.failed), len(checks.accepted)))
    if failover is not None:
        log("failover time: %.3f s" % failover)
    log("time: %.1f s (%s)" % (time.monotonic() - started, ", ".join(
        "%s %.1f s" % item for item in timings.items())))
    for section, name, _ in checks.accepted:
        log("  accepted difference [%s] %s" % (section, name))
    for section, name, _ in checks.failed:
        log("  FAILED [%s] %s" % (section, name))
    if fatal:
        log("FAIL: the test stopped early:\n%s" % _indent(fatal))
        return 1
    if checks.failed:
        log("FAIL: %d checks failed (details above, under MISMATCH)" %
            len(checks.failed))
        return 1
    log("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
