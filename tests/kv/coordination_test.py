#!/usr/bin/python3
"""etcd coordination commands against driftwood-kv (examples/kv), run by ctest.

    coordination_test.py DRIFTWOOD_KV [--etcd PATH] [--etcdctl PATH]

Starts a 3-process driftwood-kv cluster and a real 3-member etcd cluster on
free 127.0.0.1 ports (the Cluster class of etcd_compat_test.py), runs the
same etcdctl coordination commands against both at the same time, one thread
per cluster, and compares what etcdctl printed:

 1. watch:    `watch KEY`, `watch --prefix`, `watch --prev-kv`, `watch -w
              json`, `watch --rev=N` replaying history, interactive `watch -i`
              with `progress`, and `watch --rev=1` after a compaction.
 2. lease:    grant, timetolive (--keys, -w json), list, keep-alive (--once
              and the long-running form), revoke, and the errors for unknown
              lease IDs.
 3. expiry:   a lease of TTL 2 that is not kept alive: its keys disappear from
              every member, at one revision, no sooner than the TTL.
 4. lock:     two `etcdctl lock` contenders, the second in exec mode.
 5. elect:    two `etcdctl elect` candidates and an observer (`elect -l`).
 6. snapshot: `snapshot save` from one member (the file is not inspected: it
              is etcd's bbolt file on etcd only).

Lease IDs differ between the clusters: they are replaced by names given when
they first appear ("<lease A>", "<lease session 1>"). Revisions in the output
are written relative to a revision read just before each step's writes
("watch+2"), because the watch steps write a few extra `ready` keys until the
watcher shows them (etcdctl prints nothing when a watch is set up).
cluster_id, member_id and raft_term are ignored.

A check that fails prints what both clusters answered and the commands. Every
process started here is killed and every folder removed at the end, also on
failure. Only the Python 3 standard library is used; the reusable parts come
from etcd_compat_test.py (in this folder).

--self-test-etcd-only (for working on this test) runs a second etcd cluster in
the place of driftwood-kv: every check must pass then.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import etcd_compat_test as compat
from etcd_compat_test import (Checks, Cluster, ClusterDied, Etcdctl, Result,
                              TestFailure, _indent, error_signature, log,
                              pretty)

# Differences from etcd that have been looked at and accepted: the name of a
# check here turns its failure into a printed warning (Checks reads the set
# of etcd_compat_test, which this one is added to). Empty on purpose.
ACCEPTED_DIFFERENCES = set()
compat.ACCEPTED_DIFFERENCES |= ACCEPTED_DIFFERENCES

OUTPUT_DEADLINE = 8.0     # seconds for a running etcdctl to print what it must
READY_DEADLINE = 8.0      # seconds for a new watcher to show its first event
EXIT_DEADLINE = 8.0       # seconds for an etcdctl to exit by itself
STOP_DEADLINE = 5.0       # seconds for an etcdctl to exit after SIGTERM
EXPIRY_SLACK = 10.0       # seconds after the TTL for an expired lease's keys
REMAINING_SLACK = 5       # a TTL's `remaining` may be this much below granted
SNAPSHOT_DEADLINE = 20.0  # seconds for `snapshot save` of a small store
QUIET_WINDOW = 0.3        # seconds a waiting contender is watched for output
UNKNOWN_LEASE = "1234abcd"


class StepFailed(Exception):
    """A step of a scenario could not go on (on one cluster)."""


def parsed(result):
    """The JSON that a successful `-w json` command printed."""
    try:
        return json.loads(result.out)
    except ValueError:
        raise StepFailed("output that is not JSON:\n" + result.describe(2000))


def count_kvs(result):
    """How many keys a successful `get -w json` printed; None if it
    failed."""
    if result.rc != 0:
        return None
    body = parsed(result)
    return len(body.get("kvs") or []) if isinstance(body, dict) else None


# --------------------------------------------------------------------------
# Long-running etcdctl processes


class Background:
    """An etcdctl that keeps running (watch, keep-alive, lock, elect, elect
    -l). Its stdout and stderr go to files, which are read while polling."""

    started = []                 # every one, for the final cleanup
    started_lock = threading.Lock()
    counter = 0

    def __init__(self, ctl, endpoints, args, folder, stdin=False):
        with Background.started_lock:
            Background.counter += 1
            number = Background.counter
        self.argv = [ctl.path, "--endpoints=" + ",".join(endpoints)] + list(
            args)
        self.out_path = os.path.join(folder, "bg%03d.out" % number)
        self.err_path = os.path.join(folder, "bg%03d.err" % number)
        self.sent = b"" if stdin else None
        self.start = time.monotonic()
        self.seconds = None
        with open(self.out_path, "wb") as out, open(self.err_path,
                                                     "wb") as err:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE if stdin else
                subprocess.DEVNULL, stdout=out, stderr=err, env=ctl.env,
                preexec_fn=compat._die_with_parent)
        with Background.started_lock:
            Background.started.append(self)

    def _read(self, path):
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def out(self):
        return self._read(self.out_path)

    def err(self):
        return self._read(self.err_path)

    def running(self):
        return self.proc.poll() is None

    def send(self, text):
        self.sent += text.encode()
        try:
            self.proc.stdin.write(text.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def close_stdin(self):
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def poll(self, predicate, seconds):
        """Polls the output until predicate(stdout) holds (True), the process
        exits without it, or `seconds` pass (False)."""
        end = time.monotonic() + seconds
        while True:
            if predicate(self.out()):
                return True
            if not self.running():
                return predicate(self.out())
            if time.monotonic() > end:
                return False
            time.sleep(0.02)

    def expect(self, predicate, what, seconds=OUTPUT_DEADLINE):
        if not self.poll(predicate, seconds):
            raise StepFailed("%s within %.0f s: %s\n%s" % (
                what, seconds, "it exited" if not self.running() else
                "it is still running", self.result().describe(2000)))

    def wait_exit(self, seconds):
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return None
        return self._rc()

    def _rc(self):
        if self.seconds is None:
            self.seconds = time.monotonic() - self.start
        return self.proc.returncode

    def stop(self, sig=signal.SIGTERM):
        """Sends `sig` and waits; SIGKILL if it is still running after
        STOP_DEADLINE. Returns the exit code (negative: the signal)."""
        if self.running():
            try:
                self.proc.send_signal(sig)
            except OSError:
                pass
            if self.wait_exit(STOP_DEADLINE) is None:
                self.proc.kill()
                self.proc.wait()
        if self.sent is not None:
            self.close_stdin()
        return self._rc()

    def result(self):
        rc = self.proc.poll()
        seconds = self.seconds if self.seconds is not None else (
            time.monotonic() - self.start)
        return Result(self.argv, self.sent, "still running" if rc is None
                      else rc, self.out(), self.err(), seconds)

    @classmethod
    def kill_all(cls):
        with cls.started_lock:
            procs = list(cls.started)
        for bg in procs:
            if bg.proc.poll() is None:
                bg.proc.kill()
            try:
                bg.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log("warning: %s did not die on SIGKILL" % bg.argv)
            if bg.sent is not None:
                bg.close_stdin()


# --------------------------------------------------------------------------
# One cluster's side of the comparison


REVISION_FIELDS = ("revision", "create_revision", "mod_revision",
                   "compact_revision", "CompactRevision")
LEASE_FIELDS = ("lease", "id", "ID")
IGNORED_FIELDS = ("cluster_id", "member_id", "raft_term")


class Side:
    """One cluster, as seen by the scenarios: runs etcdctl against it,
    remembers lease IDs and revision marks, normalises output and records
    observations (compared with the other side's afterwards)."""

    def __init__(self, label, cluster, ctl, folder):
        self.label = label
        self.cluster = cluster
        self.ctl = ctl
        self.folder = folder
        self.leases = {}         # name -> ID
        self.granted = {}        # name -> granted TTL
        self.sessions = 0
        self.marks = []          # (revision, name), in the order taken
        self.info = []           # lines printed after the scenario
        self.reset()

    def reset(self):
        self.records = []        # (name, observation, [Result])
        self.expects = []        # (name, ok, detail)
        self.commands = []       # every Result of the current scenario
        self.procs = []          # Background of the current scenario
        self.stopped = None      # why the scenario stopped early

    # ---- running etcdctl
    def run(self, args, members=None, stdin=None):
        result = self.ctl.run(self.cluster.endpoints(members), args,
                              stdin=stdin, quiet=True)
        self.commands.append(result)
        return result

    def must(self, args, members=None, stdin=None):
        result = self.run(args, members, stdin)
        if result.rc != 0:
            raise StepFailed("a command the scenario needs failed:\n" +
                             result.describe(2000))
        return result

    def bg(self, args, members=None, stdin=False):
        proc = Background(self.ctl, self.cluster.endpoints(members), args,
                          self.folder, stdin)
        self.procs.append(proc)
        return proc

    def revision(self):
        result = self.must(["get", "-w", "json", "coordination-test-probe"])
        try:
            return int(parsed(result)["header"]["revision"])
        except (KeyError, TypeError, ValueError):
            raise StepFailed("no header.revision in the output of:\n" +
                             result.describe(2000))

    def mark(self, name):
        """Reads the current revision; later revisions print as name+N."""
        revision = self.revision()
        self.marks.append((revision, name))
        return revision

    def rel(self, revision):
        if not isinstance(revision, int) or isinstance(revision, bool) or \
                revision <= 0:
            return revision
        best = None
        for value, name in self.marks:       # the last mark wins a tie
            if value <= revision and (best is None or value >= best[0]):
                best = (value, name)
        if best is None:
            return "%d (before any mark)" % revision
        return "%s+%d" % (best[1], revision - best[0])

    # ---- leases
    def grant(self, name, ttl):
        result = self.run(["lease", "grant", str(ttl)])
        match = re.match(r"lease ([0-9a-f]+) granted with TTL\((-?\d+)s\)",
                         result.out)
        if result.rc == 0 and match:
            self.leases[name] = int(match.group(1), 16)
            self.granted[name] = int(match.group(2))
        return result

    def lease(self, name):
        if name not in self.leases:
            raise StepFailed("lease %s was not granted (see `lease grant` "
                             "above); the scenario cannot go on" % name)
        return "%016x" % self.leases[name]

    def lease_name(self, lease_id):
        for name, value in self.leases.items():
            if value == lease_id:
                return "<lease %s>" % name
        return "<lease not granted by this test: %s>" % (
            "0" if lease_id == 0 else "seen")

    def session(self, hex_id):
        """The name of a lock or election session's lease, by its hex ID as
        it appears in the key (`name/%x`); new ones get the next number."""
        lease_id = int(hex_id, 16)
        for name, value in self.leases.items():
            if value == lease_id:
                return name
        self.sessions += 1
        name = "session %d" % self.sessions
        self.leases[name] = lease_id
        return name

    # ---- normalising
    def norm_text(self, text, revisions=(), prefixes=()):
        """Lease IDs (%016x) by name, `PREFIX/%x` keys of lock and election
        sessions by name, and the revision in group 1 of each regex in
        `revisions` relative to the marks."""
        for prefix in prefixes:
            text = re.sub(re.escape(prefix) + r"/([0-9a-f]+)\b",
                          lambda m: "%s/<lease %s>" % (
                              prefix, self.session(m.group(1))), text)
        for name, lease_id in sorted(self.leases.items()):
            text = text.replace("%016x" % lease_id, "<lease %s>" % name)
        for pattern in revisions:
            text = re.sub(pattern, lambda m: m.group(0).replace(
                m.group(1), str(self.rel(int(m.group(1)))), 1), text)
        return text

    def norm_json(self, value, prefixes=()):
        """Parsed etcdctl JSON: header ids dropped, keys and values decoded,
        revisions relative to the marks, lease IDs by name."""
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if key in IGNORED_FIELDS:
                    continue
                if key in REVISION_FIELDS and isinstance(item, int):
                    out[key] = self.rel(item)
                elif key in LEASE_FIELDS and isinstance(item, int):
                    out[key] = self.lease_name(item) if item else 0
                elif key in ("key", "value") and isinstance(item, str):
                    out[key] = self.norm_text(compat._decode(item),
                                              prefixes=prefixes)
                elif key == "keys" and isinstance(item, list):
                    out[key] = [self.norm_text(compat._decode(k),
                                               prefixes=prefixes)
                                if isinstance(k, str) else k for k in item]
                else:
                    out[key] = self.norm_json(item, prefixes)
            return out
        if isinstance(value, list):
            return [self.norm_json(item, prefixes) for item in value]
        return value

    def text_obs(self, result, revisions=(), prefixes=()):
        """What a one-shot command showed: exit code, stdout, and for a
        failure the gRPC codes and messages and the `Error:` lines."""
        obs = {"exit code": result.rc,
               "stdout": self.norm_text(result.out, revisions, prefixes)}
        if result.rc != 0:
            signature = error_signature(result)
            obs["rpc"] = [[code, self.norm_text(desc)]
                          for code, desc in signature["rpc"]]
            obs["error"] = [self.norm_text(line)
                            for line in signature["error"]]
        return obs

    def json_obs(self, result, prefixes=()):
        obs = {"exit code": result.rc}
        if result.rc == 0:
            try:
                obs["json"] = self.norm_json(compat.parse_json(result.out),
                                             prefixes)
            except ValueError as error:
                obs["unparsable output"] = "%s: %r" % (error,
                                                       result.out[:300])
        else:
            obs.update(self.text_obs(result))
        return obs

    # ---- observations
    def record(self, name, observation, *results):
        self.records.append((name, observation, list(results)))

    def expect(self, name, ok, detail=""):
        self.expects.append((name, bool(ok), detail))
        return ok


# --------------------------------------------------------------------------
# Running a scenario on both clusters and comparing


SHOW_OBSERVATIONS = False   # --show-observations


def run_scenario(checks, sides, title, function):
    """Runs function(side) on every side at once (one thread each), then
    compares the sides' records by name and reports their expectations."""
    def body(side):
        side.reset()
        try:
            function(side)
        except StepFailed as error:
            side.stopped = str(error)
        except Exception:       # a bug in this test: say where
            side.stopped = "the test itself failed:\n" + \
                traceback.format_exc()
        finally:
            for proc in side.procs:
                proc.stop()

    threads = [threading.Thread(target=body, args=(side,), daemon=True)
               for side in sides]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=0.5)

    drift, etcd = sides
    ran = {}
    for side in sides:
        ran[side.label] = "%s: the scenario '%s' runs to the end" % (
            side.label, title)
        detail = "it stopped: %s" % side.stopped
        earlier = [r.describe(1500) for r in side.commands[-3:]]
        if side.stopped and not any(text in side.stopped for text in earlier):
            detail += "\nits last commands:\n" + "\n".join(
                _indent(text) for text in earlier)
        checks.ok(ran[side.label], side.stopped is None, detail)
    names = [name for name, _, _ in etcd.records]
    names += [name for name, _, _ in drift.records if name not in names]
    by_side = [{name: (obs, results) for name, obs, results in s.records}
               for s in sides]
    for name in names:
        got, want = by_side[0].get(name), by_side[1].get(name)
        if got is None or want is None:
            missing = drift if got is None else etcd
            checks.ok(name, False, "%s did not get to this step (see "
                      "\"%s\" for why)" % (missing.label,
                                           ran[missing.label]))
            continue
        if checks.ok(name, got[0] == want[0], report(drift, etcd, got,
                                                     want)):
            log("ok    %s" % name)
            if SHOW_OBSERVATIONS:
                log(_indent(pretty(want[0]), "          "))
    for side in sides:
        for name, ok, detail in side.expects:
            if checks.ok("%s: %s" % (side.label, name), ok, detail):
                log("ok    %s: %s" % (side.label, name))
        for line in side.info:
            log("      %s: %s" % (side.label, line))
        side.info = []


def report(drift, etcd, got, want):
    parts = ["%s answered:" % drift.label, _indent(pretty(got[0])),
             "%s answered:" % etcd.label, _indent(pretty(want[0]))]
    for side, (_, results) in ((drift, got), (etcd, want)):
        if results:
            parts.append("%s commands:" % side.label)
            parts += [_indent(r.describe(1500)) for r in results]
    return "\n".join(parts)


# --------------------------------------------------------------------------
# Watch output


def simple_events(text):
    """etcdctl's simple watch output as events, each the list of its lines:
    [type, (prev key, prev value,) key, value]. Only whole lines count."""
    events = []
    for line in text.split("\n")[:-1]:
        if line in ("PUT", "DELETE"):
            events.append([line])
        elif events:
            events[-1].append(line)
        else:
            events.append(["(not an event)", line])
    return events


def simple_text(events):
    return "".join(line + "\n" for event in events for line in event)


def has_simple_value(value):
    return lambda out: any(len(e) >= 3 and e[-1] == value
                           for e in simple_events(out))


def json_lines(text):
    """Each whole line of etcdctl's `-w json` watch output, parsed."""
    out = []
    for line in text.split("\n")[:-1]:
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"unparsable line": line[:300]})
    return out


def json_event_keys(text):
    keys = []
    for response in json_lines(text):
        for event in (response.get("Events") or []) if isinstance(
                response, dict) else []:
            keys.append(compat._decode(event.get("kv", {}).get("key", "")))
    return keys


def watch_json_obs(side, text, drop_key=None):
    """The events of `watch -w json` (each with its response's header
    revision: batching into responses may differ) and the responses that
    carry no event."""
    events, other, fields = [], [], []
    for response in json_lines(text):
        if not isinstance(response, dict) or not response.get("Events"):
            other.append(side.norm_json(response))
            continue
        header = side.rel(response.get("Header", {}).get("revision", 0))
        for event in response["Events"]:
            item = side.norm_json(event)
            item["type"] = {0: "PUT", 1: "DELETE"}.get(
                event.get("type", 0), event.get("type"))
            if drop_key and item.get("kv", {}).get("key") == drop_key:
                continue
            item["header revision of its response"] = header
            events.append(item)
        rest = {k: v for k, v in response.items()
                if k not in ("Header", "Events")}
        if rest not in fields:
            fields.append(rest)
    return {"events": events, "responses without events": other,
            "other fields of the event responses": fields}


def await_watching(side, watcher, key, seen):
    """Puts key=ready until the watcher shows it (seen(stdout)): then its
    watch is set up. etcdctl prints nothing when a watch is created, so
    this is the only way to know; the extra events are dropped later."""
    end = time.monotonic() + READY_DEADLINE
    while True:
        side.must(["put", key, "ready"])
        if watcher.poll(seen, min(0.25, max(0.0, end - time.monotonic()))):
            return
        if not watcher.running() or time.monotonic() > end:
            raise StepFailed(
                "the watcher did not show a put of %s=ready within %.0f s "
                "(%s)\n%s" % (key, READY_DEADLINE, "it exited" if not
                              watcher.running() else "still running",
                              watcher.result().describe(2000)))


def not_ready(events):
    return [e for e in events if not (len(e) >= 3 and e[-1] == "ready")]


# --------------------------------------------------------------------------
# 1. watch


def watch_key(s):
    w = s.bg(["watch", "wk"])
    await_watching(s, w, "wk", has_simple_value("ready"))
    s.mark("watch")
    # The first del removes the ready key: how many ready puts were needed
    # does not show in versions and create revisions after it.
    for args in (["del", "wk"], ["put", "wk", "a"], ["put", "wk", "b"],
                 ["del", "wk"], ["del", "wk"], ["put", "wk", "end"]):
        s.must(args)
    w.expect(has_simple_value("end"), "the watcher shows the put wk=end")
    w.stop()
    s.record("watch wk: del (the ready key), put a, put b, del, del "
             "(nothing), put end",
             {"stdout": simple_text(not_ready(simple_events(w.out()))),
              "stderr": w.err()}, w.result())


def watch_prefix(s):
    w = s.bg(["watch", "--prefix", "wp/"])
    await_watching(s, w, "wp/ready", has_simple_value("ready"))
    s.mark("prefix")
    for args in (["put", "wp/a", "1"], ["put", "wp/b", "2"],
                 ["put", "wpx", "3"], ["put", "wp", "4"], ["put", "wp0", "5"],
                 ["del", "wp/a", "wp/c"], ["put", "wp/c", "end"]):
        s.must(args)
    w.expect(has_simple_value("end"), "the watcher shows the put wp/c=end")
    w.stop()
    s.record("watch --prefix wp/: keys under and beside the prefix, a "
             "range delete of two keys",
             {"stdout": simple_text(not_ready(simple_events(w.out()))),
              "stderr": w.err()}, w.result())


def watch_prev_kv(s):
    w = s.bg(["watch", "--prev-kv", "wv"])
    await_watching(s, w, "wv", has_simple_value("ready"))
    s.mark("prev")
    for args in (["put", "wv", "a"], ["put", "wv", "b"], ["del", "wv"],
                 ["put", "wv", "end"]):
        s.must(args)
    w.expect(has_simple_value("end"), "the watcher shows the put wv=end")
    w.stop()
    s.record("watch --prev-kv wv: previous values of puts and a delete",
             {"stdout": simple_text(not_ready(simple_events(w.out()))),
              "stderr": w.err()}, w.result())


def watch_json(s):
    w = s.bg(["watch", "-w", "json", "--prev-kv", "--prefix", "wj/"])
    await_watching(s, w, "wj/ready",
                   lambda out: "wj/ready" in json_event_keys(out))
    s.mark("json")
    for args in (["put", "wj/a", "1"], ["put", "wj/a", "2"],
                 ["put", "wj/b", "3"], ["del", "wj/a"]):
        s.must(args)
    s.must(["txn", "-i"], stdin=compat.txn_input(
        [], ["put wj/t1 x", "put wj/t2 y", "del wj/b"], []))
    s.must(["put", "wj/end", "end"])
    w.expect(lambda out: "wj/end" in json_event_keys(out),
             "the watcher shows the put of wj/end")
    w.stop()
    s.record("watch -w json --prev-kv --prefix wj/: events (type, key, "
             "value, create/mod revision, version, prev_kv; header revision)",
             watch_json_obs(s, w.out(), drop_key="wj/ready"), w.result())


def watch_history(s):
    """Replays the history written by watch_key and watch_prefix."""
    first = {name: value for value, name in s.marks}
    if "watch" not in first or "prefix" not in first:
        raise StepFailed("the earlier watch steps did not get to their "
                         "writes; nothing to replay")
    s.mark("history")
    watchers = [
        ("watch --rev=N wk (N in the past): the history replayed",
         s.bg(["watch", "--rev=%d" % (first["watch"] + 1), "wk"]), "simple"),
        ("watch -w json --rev=N wk: the history replayed as JSON",
         s.bg(["watch", "-w", "json", "--rev=%d" % (first["watch"] + 1),
               "wk"]), "json"),
        ("watch --prefix --rev=N wp/: the history replayed",
         s.bg(["watch", "--prefix", "--rev=%d" % (first["prefix"] + 1),
               "wp/"]), "simple"),
    ]
    for name, w, kind in watchers:
        if kind == "simple":
            w.expect(has_simple_value("end"), "the replay reaches the value "
                     "end")
        else:
            w.expect(lambda out: any(
                compat._decode(e.get("kv", {}).get("value", "")) == "end"
                for r in json_lines(out) if isinstance(r, dict)
                for e in (r.get("Events") or [])),
                     "the replay reaches the value end")
    for name, w, kind in watchers:
        w.stop()
        if kind == "simple":
            obs = {"stdout": simple_text(not_ready(simple_events(w.out()))),
                   "stderr": w.err()}
        else:
            obs = watch_json_obs(s, w.out())
        s.record(name, obs, w.result())


def watch_interactive(s):
    s.mark("interactive")
    w = s.bg(["watch", "-i"], stdin=True)
    w.send("watch wi\nprogress\n")
    w.expect(lambda out: "progress notify:" in out,
             "`progress` after `watch wi` prints a progress line")
    s.must(["put", "wi", "x"])
    w.expect(has_simple_value("x"), "the watcher shows the put wi=x")
    w.send("progress\n")
    w.expect(lambda out: out.count("progress notify:") >= 2,
             "a second `progress` prints a second line")
    w.send("watch --prefix wi\nprogress\n")
    w.expect(lambda out: out.count("progress notify:") >= 4,
             "with two watches `progress` prints a line for each")
    w.close_stdin()
    rc = w.wait_exit(EXIT_DEADLINE)
    s.record("watch -i: `watch wi`, progress, a put, progress, `watch "
             "--prefix wi`, progress, end of input",
             {"stdout": s.norm_text(w.out(), [r"progress notify: (\d+)"]),
              "exit code": rc if rc is not None else
              "still running %.0f s after the end of its input" %
              EXIT_DEADLINE,
              "stderr": [line for line in w.err().split("\n") if line]},
             w.result())


def watch_compacted(s):
    revision = s.mark("compaction")
    result = s.run(["compaction", str(revision)])
    s.record("compaction at the current revision",
             s.text_obs(result, [r"compacted revision (\d+)"]), result)
    if result.rc != 0:
        raise StepFailed("compaction failed:\n" + result.describe())
    watchers = [
        ("watch --rev=1 wk after a compaction: canceled, as etcd does",
         s.bg(["watch", "--rev=1", "wk"]), False),
        ("watch -w json --rev=1 wk after a compaction: the cancel response",
         s.bg(["watch", "-w", "json", "--rev=1", "wk"]), True),
    ]
    for name, w, as_json in watchers:
        rc = w.wait_exit(EXIT_DEADLINE)
        w.stop()
        obs = {"exit code": rc if rc is not None else
               "still running after %.0f s" % EXIT_DEADLINE,
               "stderr": [line for line in w.err().split("\n")
                          if line and not line.startswith("{")]}
        if as_json:
            obs["responses"] = [s.norm_json(r) for r in json_lines(w.out())]
        else:
            obs["stdout"] = w.out()
        s.record(name, obs, w.result())


# --------------------------------------------------------------------------
# 2. lease


def remaining_ok(side, text, granted):
    """`remaining(Ns)` replaced by whether N is within REMAINING_SLACK below
    the granted TTL (it counts down while the test runs)."""
    def repl(match):
        n = int(match.group(1))
        if granted - REMAINING_SLACK <= n <= granted:
            return "remaining(<within %ds of %ds>)" % (REMAINING_SLACK,
                                                        granted)
        return "remaining(%ds: not within %ds of %ds)" % (n, REMAINING_SLACK,
                                                           granted)
    return re.sub(r"remaining\((-?\d+)s\)", repl, text)


def sorted_attached(text):
    """`attached keys([k2 k1])` with the keys sorted: etcd lists them in Go
    map order, which changes from run to run."""
    return re.sub(r"attached keys\(\[([^\]]*)\]\)", lambda m: (
        "attached keys([%s])" % " ".join(sorted(m.group(1).split(" ")))),
        text)


def ttl_json_obs(side, result, granted):
    obs = side.json_obs(result)
    body = obs.get("json")
    if isinstance(body, dict) and isinstance(body.get("keys"), list):
        body["keys"] = sorted(body["keys"], key=str)     # Go map order
    if isinstance(body, dict) and isinstance(body.get("ttl"), int) and \
            body.get("granted-ttl", 0) > 0:
        n = body["ttl"]
        body["ttl"] = ("<within %ds of %ds>" % (REMAINING_SLACK, granted)
                       if granted - REMAINING_SLACK <= n <= granted else
                       "%d: not within %ds of %d" % (n, REMAINING_SLACK,
                                                     granted))
    return obs


def lease_commands(s):
    r = s.grant("A", 30)
    s.record("lease grant 30", s.text_obs(r), r)
    r = s.grant("M", 1)
    s.record("lease grant 1 (below etcd's minimum TTL, which it raises to)",
             s.text_obs(r), r)
    r = s.run(["lease", "revoke", s.lease("M")])
    s.record("lease revoke of the lease of TTL 1", s.text_obs(r), r)

    s.mark("lease")
    a = s.lease("A")
    for key, value in (("ls/k1", "v1"), ("ls/k2", "v2")):
        r = s.run(["put", "--lease=" + a, key, value])
        s.record("put --lease=A %s %s" % (key, value), s.text_obs(r), r)
    r = s.run(["lease", "timetolive", a])
    s.record("lease timetolive A",
             dict(s.text_obs(r), stdout=remaining_ok(
                 s, s.norm_text(r.out), 30)), r)
    r = s.run(["lease", "timetolive", "--keys", a])
    s.record("lease timetolive --keys A (attached keys)",
             dict(s.text_obs(r), stdout=sorted_attached(remaining_ok(
                 s, s.norm_text(r.out), 30))), r)
    r = s.run(["lease", "timetolive", "-w", "json", "--keys", a])
    s.record("lease timetolive -w json --keys A", ttl_json_obs(s, r, 30), r)
    r = s.run(["get", "-w", "json", "ls/k1"])
    s.record("get -w json ls/k1 (its lease field)", s.json_obs(r), r)
    r = s.run(["lease", "keep-alive", "--once", a])
    s.record("lease keep-alive --once A", s.text_obs(r), r)

    # keep-alive, long-running, on a lease of TTL 3 (a renewal each second)
    r = s.grant("K", 3)
    s.record("lease grant 3", s.text_obs(r), r)
    k = s.lease("K")
    keeper = s.bg(["lease", "keep-alive", k])
    keeper.expect(lambda out: out.count("keepalived with TTL") >= 2,
                  "lease keep-alive prints two renewals")
    # lease list while A and K exist (the order is by expiry in etcd, which
    # followers do not track: only the set is compared)
    r = s.run(["lease", "list"])
    lines = s.norm_text(r.out).split("\n")
    s.record("lease list (while A and K exist)",
             {"exit code": r.rc, "first line": lines[0],
              "leases": sorted(line for line in lines[1:] if line)}, r)
    r = s.run(["lease", "list", "-w", "json"])
    obs = s.json_obs(r)
    if isinstance(obs.get("json"), dict):
        obs["json"]["leases"] = sorted(
            obs["json"].get("leases") or [], key=json.dumps)
    s.record("lease list -w json", obs, r)
    r = s.run(["lease", "revoke", k])
    s.record("lease revoke K (kept alive meanwhile)", s.text_obs(r), r)
    rc = keeper.wait_exit(EXIT_DEADLINE)
    keeper.stop()
    renewals = [line for line in s.norm_text(keeper.out()).split("\n")
                if line]
    s.record("lease keep-alive K: renewals, then the end when K is revoked",
             {"distinct lines": sorted(set(renewals)),
              "last line": renewals[-1] if renewals else None,
              "exit code": rc if rc is not None else
              "still running %.0f s after the revoke" % EXIT_DEADLINE},
             keeper.result())

    r = s.run(["lease", "revoke", a])
    s.record("lease revoke A", s.text_obs(r), r)
    r = s.run(["get", "ls/", "--prefix"])
    s.record("get ls/ --prefix after the revoke (the keys are gone)",
             s.text_obs(r), r)
    r = s.run(["get", "-w", "json", "ls/", "--prefix"])
    s.record("get -w json ls/ --prefix after the revoke (one revision for "
             "both keys)", s.json_obs(r), r)
    r = s.run(["lease", "timetolive", a])
    s.record("lease timetolive of a revoked lease", s.text_obs(r), r)
    r = s.run(["lease", "timetolive", "-w", "json", "--keys", a])
    s.record("lease timetolive -w json --keys of a revoked lease",
             s.json_obs(r), r)
    r = s.run(["lease", "revoke", a])
    s.record("lease revoke of a revoked lease (error)", s.text_obs(r), r)
    r = s.run(["lease", "revoke", UNKNOWN_LEASE])
    s.record("lease revoke of an unknown lease (error)", s.text_obs(r), r)
    r = s.run(["put", "--lease=" + UNKNOWN_LEASE, "ls/k3", "v"])
    s.record("put --lease=<unknown lease> (error)", s.text_obs(r), r)
    r = s.run(["lease", "timetolive", UNKNOWN_LEASE])
    s.record("lease timetolive of an unknown lease", s.text_obs(r), r)
    r = s.run(["lease", "keep-alive", "--once", UNKNOWN_LEASE])
    s.record("lease keep-alive --once of an unknown lease (error)",
             s.text_obs(r), r)
    keeper = s.bg(["lease", "keep-alive", UNKNOWN_LEASE])
    rc = keeper.wait_exit(EXIT_DEADLINE)
    keeper.stop()
    s.record("lease keep-alive of an unknown lease",
             {"stdout": keeper.out(), "exit code": rc if rc is not None else
              "still running after %.0f s" % EXIT_DEADLINE},
             keeper.result())


# --------------------------------------------------------------------------
# 3. lease expiry


def lease_expiry(s):
    r = s.grant("X", 2)
    granted_at = time.monotonic()
    s.record("lease grant 2 (for the expiry)", s.text_obs(r), r)
    x = s.lease("X")
    ttl = s.granted["X"]
    base = s.mark("expiry")
    for key in ("ex/k1", "ex/k2"):
        s.must(["put", "--lease=" + x, key, "v"])
    r = s.run(["get", "ex/", "--prefix", "--keys-only"])
    s.record("get ex/ --prefix right after the puts (the keys are there)",
             s.text_obs(r), r)
    # One watcher per member, each on that member only, from the first put:
    # the revision of each member's DELETE events.
    watchers = [s.bg(["watch", "-w", "json", "--prefix", "--rev=%d" % (
        base + 1), "ex/"], members=[i]) for i in range(3)]
    # Serializable reads on each member until the keys are gone everywhere.
    deadline = granted_at + ttl + EXPIRY_SLACK
    gone = {}
    last = {}
    while len(gone) < 3:
        for i in range(3):
            if i in gone:
                continue
            r = s.run(["get", "ex/", "--prefix", "--consistency=s", "-w",
                       "json"], members=[i])
            last[i] = r
            if count_kvs(r) == 0:
                gone[i] = time.monotonic() - granted_at
        if len(gone) == 3:
            break
        if time.monotonic() > deadline:
            raise StepFailed(
                "the keys of lease X (TTL %d s, not kept alive) are still on "
                "members %s %.0f s after the grant; the last reads:\n%s" % (
                    ttl, [s.cluster.names[i] for i in range(3)
                          if i not in gone], ttl + EXPIRY_SLACK,
                    "\n".join(last[i].describe(1000) for i in range(3)
                              if i not in gone)))
        time.sleep(0.1)
    s.info.append("lease of TTL %d s: its keys gone after %s s (from the "
                  "grant, per member)" % (ttl, ", ".join(
                      "%.2f" % gone[i] for i in range(3))))
    s.expect("the keys of an expired lease are gone on every member within "
             "TTL + %.0f s" % EXPIRY_SLACK, True)
    s.expect("the keys of a lease stay at least its TTL (%d s)" % ttl,
             min(gone.values()) >= ttl - 0.25,
             "gone after %s s" % sorted(gone.values()))
    histories = {}
    for i, w in enumerate(watchers):
        w.expect(lambda out: out.count('"type":1') >= 2,
                 "the watcher on %s shows the two DELETE events" %
                 s.cluster.names[i])
        w.stop()
        events = []
        for response in json_lines(w.out()):
            for event in (response.get("Events") or []) if isinstance(
                    response, dict) else []:
                kv = event.get("kv") or {}
                events.append((event.get("type", 0), compat._decode(
                    kv.get("key", "")), kv.get("mod_revision")))
        histories[i] = events
    deletes = {i: {rev for kind, _, rev in events if kind == 1}
               for i, events in histories.items()}
    s.expect("every member has the same history of ex/ (puts and the "
             "deletes of the expiry)",
             len({json.dumps(h) for h in histories.values()}) == 1,
             "\n".join("%s: %s" % (s.cluster.names[i], histories[i])
                       for i in range(3)))
    s.expect("the keys of the expired lease are deleted at one revision",
             all(len(d) == 1 for d in deletes.values()),
             "DELETE revisions per member: %s" % deletes)
    s.record("the history of ex/ on member 1 (watch -w json --rev)",
             [[("PUT", "DELETE")[kind] if kind in (0, 1) else kind, key,
               s.rel(rev)] for kind, key, rev in histories[0]],
             watchers[0].result())
    r = s.run(["lease", "timetolive", x])
    s.record("lease timetolive of the expired lease", s.text_obs(r), r)


# --------------------------------------------------------------------------
# 4. lock


def lock(s):
    s.mark("lock")
    first = s.bg(["lock", "mylock"])
    first.expect(lambda out: out.count("\n") >= 2,
                 "the first `lock mylock` prints its key")
    s.record("lock mylock: the first contender prints its key and holds it",
             s.norm_text(first.out(), prefixes=["mylock"]), first.result())
    key = first.out().split("\n")[0]
    match = re.match(r"mylock/([0-9a-f]+)$", key)
    if match:
        r = s.run(["lease", "timetolive", "--keys", "%016x" % int(
            match.group(1), 16)])
        s.record("lease timetolive --keys of the lock holder's session",
                 dict(s.text_obs(r), stdout=remaining_ok(s, s.norm_text(
                     r.out, prefixes=["mylock"]), 10)), r)
    second = s.bg(["lock", "mylock", "--", "sh", "-c",
                   'echo "acquired $ETCD_LOCK_KEY at $ETCD_LOCK_REV"'])
    # The second contender has put its key: it is now waiting.
    end = time.monotonic() + OUTPUT_DEADLINE
    while True:
        r = s.run(["get", "mylock", "--prefix", "-w", "json"])
        if (count_kvs(r) or 0) >= 2:
            break
        if time.monotonic() > end or not second.running():
            raise StepFailed("the second contender's key did not appear "
                             "under mylock/ within %.0f s\n%s\n%s" % (
                                 OUTPUT_DEADLINE, r.describe(1000),
                                 second.result().describe(1000)))
        time.sleep(0.05)
    obs = s.json_obs(r, prefixes=["mylock"])
    if isinstance(obs.get("json"), dict):
        obs["json"]["kvs"] = sorted(obs["json"].get("kvs") or [],
                                    key=json.dumps)
    s.record("get -w json mylock --prefix: both contenders' keys", obs, r)
    printed = second.poll(lambda out: out != "", QUIET_WINDOW)
    s.expect("the second `lock mylock` prints nothing while the first "
             "holds the lock", not printed and second.running(),
             second.result().describe())
    rc = first.stop()
    s.record("lock mylock: the first contender's exit code on SIGTERM (it "
             "unlocks)", rc, first.result())
    second.expect(lambda out: "acquired" in out,
                  "the second contender runs its command once the first "
                  "exited")
    rc = second.wait_exit(EXIT_DEADLINE)
    s.record("lock mylock -- sh -c 'echo ...': the second contender runs "
             "the command with ETCD_LOCK_KEY and ETCD_LOCK_REV, then exits",
             {"stdout": s.norm_text(second.out(), [r"at (\d+)"],
                                    ["mylock"]),
              "exit code": rc if rc is not None else
              "still running after %.0f s" % EXIT_DEADLINE},
             second.result())
    r = s.run(["get", "mylock", "--prefix"])
    s.record("get mylock --prefix after both contenders (unlocked)",
             s.text_obs(r), r)


# --------------------------------------------------------------------------
# 5. elect


def elect(s):
    s.mark("elect")
    one = s.bg(["elect", "myelection", "p1"])
    one.expect(lambda out: out.count("\n") >= 2,
               "the first candidate prints its key and proposal")
    s.record("elect myelection p1: the first candidate wins",
             s.norm_text(one.out(), prefixes=["myelection"]), one.result())
    two = s.bg(["elect", "myelection", "p2"])
    end = time.monotonic() + OUTPUT_DEADLINE
    while True:
        r = s.run(["get", "myelection", "--prefix", "-w", "json"])
        if (count_kvs(r) or 0) >= 2:
            break
        if time.monotonic() > end or not two.running():
            raise StepFailed("the second candidate's key did not appear "
                             "under myelection/ within %.0f s\n%s\n%s" % (
                                 OUTPUT_DEADLINE, r.describe(1000),
                                 two.result().describe(1000)))
        time.sleep(0.05)
    obs = s.json_obs(r, prefixes=["myelection"])
    if isinstance(obs.get("json"), dict):
        obs["json"]["kvs"] = sorted(obs["json"].get("kvs") or [],
                                    key=json.dumps)
    s.record("get -w json myelection --prefix: both candidates' keys", obs, r)
    observer = s.bg(["elect", "-l", "myelection"])
    observer.expect(lambda out: out.count("\n") >= 2,
                    "`elect -l` prints the current leader")
    s.record("elect -l myelection: the current leader",
             s.norm_text(observer.out(), prefixes=["myelection"]),
             observer.result())
    printed = two.poll(lambda out: out != "", QUIET_WINDOW)
    s.expect("the second candidate prints nothing while the first leads",
             not printed and two.running(), two.result().describe())
    rc = one.stop()
    s.record("elect myelection p1: exit code on SIGTERM (it resigns)", rc,
             one.result())
    two.expect(lambda out: out.count("\n") >= 2,
               "the second candidate wins once the first resigned")
    s.record("elect myelection p2: the second candidate wins after the "
             "first resigned", s.norm_text(two.out(), prefixes=[
                 "myelection"]), two.result())
    observer.expect(lambda out: out.count("\n") >= 4,
                    "`elect -l` prints the new leader")
    rc = two.stop()
    s.record("elect myelection p2: exit code on SIGTERM", rc, two.result())
    rc = observer.stop()
    s.record("elect -l myelection: both leaders, in order; exit code on "
             "SIGTERM", {"stdout": s.norm_text(observer.out(),
                                               prefixes=["myelection"]),
                         "exit code": rc}, observer.result())
    r = s.run(["get", "myelection", "--prefix"])
    s.record("get myelection --prefix after both resigned", s.text_obs(r), r)


# --------------------------------------------------------------------------
# 6. snapshot


def snapshot(s):
    path = os.path.join(s.folder, "snapshot.db")
    # In the background: etcdctl gives `snapshot save` no command timeout.
    saver = s.bg(["snapshot", "save", path], members=[0])
    finished = saver.wait_exit(SNAPSHOT_DEADLINE) is not None
    saver.stop()
    r = saver.result()
    obs = s.text_obs(r)
    if not finished:
        obs["exit code"] = "still running after %.0f s" % SNAPSHOT_DEADLINE
    obs["stdout"] = obs["stdout"].replace(path, "<file>")
    s.record("snapshot save FILE (one member)", obs, r)
    size = os.path.getsize(path) if os.path.exists(path) else None
    s.expect("the snapshot file's size % 512 == 32 (a SHA-256 after the "
             "padded payload)", size is not None and size % 512 == 32,
             "size: %s\n%s" % (size, r.describe()))
    if size is not None:
        s.info.append("snapshot: %d bytes" % size)
        os.remove(path)


# --------------------------------------------------------------------------


class StandIn(Cluster):
    """etcd in the place of driftwood-kv (--self-test-etcd-only)."""

    def __init__(self, binary, root, etcdctl):
        super().__init__("etcd", binary, root, etcdctl)
        self.kind = "stand-in etcd"
        self.names = ["s1", "s2", "s3"]
        self.token = "coordination-stand-in"

    def argv(self, i, state):
        return super().argv(i, state) + ["--log-level", "warn",
                                          "--logger", "zap"]


def launch(clusters):
    """Starts every member of every cluster, then waits for the leaders (in
    this thread: PR_SET_PDEATHSIG ends a child with the thread that started
    it)."""
    ports = compat.free_ports(6 * len(clusters))
    for n, cluster in enumerate(clusters):
        mine = ports[6 * n:6 * n + 6]
        cluster.client_ports, cluster.peer_ports = mine[:3], mine[3:]
        for i in range(3):
            shutil.rmtree(cluster.data_dir(i), ignore_errors=True)
            cluster.start_member(i, "new")
    for cluster in clusters:
        try:
            _, leader, waited = cluster.wait_leader([0, 1, 2])
        except ClusterDied as died:
            if not died.port_in_use:
                raise
            log("%s: a port was taken meanwhile (%s); new ports" % (
                cluster.kind, died))
            cluster.kill_all()
            _, leader, waited = cluster.launch()
        log("%s: 3 members on %s; leader %s after %.2f s" % (
            cluster.kind, ",".join(cluster.endpoints()),
            cluster.names[leader], waited))


SECTIONS = [
    ("watch: watch KEY, --prefix, --prev-kv, -w json, --rev, -i with "
     "progress, after a compaction", [
         ("watch KEY", watch_key), ("watch --prefix", watch_prefix),
         ("watch --prev-kv", watch_prev_kv), ("watch -w json", watch_json),
         ("watch --rev (history)", watch_history),
         ("watch -i with progress", watch_interactive),
         ("watch after a compaction", watch_compacted)]),
    ("lease: grant, timetolive, list, keep-alive, revoke, unknown IDs", [
        ("the lease commands", lease_commands)]),
    ("expiry: a lease of TTL 2 that is not kept alive", [
        ("the lease expiry", lease_expiry)]),
    ("lock: two contenders for etcdctl lock", [("the lock", lock)]),
    ("elect: two candidates and an observer", [("the election", elect)]),
    ("snapshot: snapshot save from one member", [("snapshot save",
                                                   snapshot)]),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("driftwood_kv", nargs="?",
                        help="the driftwood-kv binary")
    parser.add_argument("--etcd", default="/usr/bin/etcd")
    parser.add_argument("--etcdctl", default="/usr/bin/etcdctl")
    parser.add_argument("--self-test-etcd-only", action="store_true",
                        help=argparse.SUPPRESS)
    parser.add_argument("--show-observations", action="store_true",
                        help="print what etcd answered for each check that "
                        "passed (normalised)")
    args = parser.parse_args()
    global SHOW_OBSERVATIONS
    SHOW_OBSERVATIONS = args.show_observations
    if not args.self_test_etcd_only and not args.driftwood_kv:
        parser.error("the driftwood-kv binary is needed")
    paths = [args.etcd, args.etcdctl]
    if not args.self_test_etcd_only:
        paths.append(args.driftwood_kv)
    for path in paths:
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
    root = tempfile.mkdtemp(prefix="driftwood-etcd-coordination-")
    ctl = Etcdctl(args.etcdctl)
    if args.self_test_etcd_only:
        log("SELF-TEST: a second etcd cluster stands in for driftwood-kv")
        drift = StandIn(args.etcd, os.path.join(root, "driftwood"), ctl)
    else:
        drift = Cluster("driftwood", args.driftwood_kv,
                        os.path.join(root, "driftwood"), ctl)
    etcd = Cluster("etcd", args.etcd, os.path.join(root, "etcd"), ctl)
    etcd.token = "coordination-etcd"
    for cluster in (drift, etcd):
        os.makedirs(os.path.join(cluster.root, "work"))
    checks = Checks()
    fatal = None
    try:
        log("data in %s" % root)
        t = time.monotonic()
        launch([drift, etcd])
        timings["start"] = time.monotonic() - t
        sides = [Side(drift.kind, drift, ctl, os.path.join(drift.root,
                                                           "work")),
                 Side("etcd", etcd, ctl, os.path.join(etcd.root, "work"))]
        for section, scenarios in SECTIONS:
            t = time.monotonic()
            checks.begin(section)
            for title, function in scenarios:
                run_scenario(checks, sides, title, function)
            timings[section.split(":")[0]] = time.monotonic() - t
    except TestFailure as error:
        fatal = str(error)
    except (KeyboardInterrupt, SystemExit) as error:
        fatal = "interrupted (%s)" % (error or type(error).__name__)
    except BaseException as error:   # a bug in this test: say where
        fatal = "%s: %s\n%s" % (type(error).__name__, error,
                                traceback.format_exc())
    finally:
        Background.kill_all()
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
    if args.self_test_etcd_only:
        log("SELF-TEST: etcd stood in for driftwood-kv")
    log("checks passed: %d, failed: %d, accepted differences: %d" % (
        len(checks.passed), len(checks.failed), len(checks.accepted)))
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
