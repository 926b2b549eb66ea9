"""Local 3-member clusters of etcd or driftwood-kv for the benchmarks
(bench/compare-etcd, bench/failover): started on free loopback ports in a
folder of their own, measured (CPU time from /proc), and always cleaned up.

Both systems take the same flags, so one class starts either. etcd runs with
its defaults (WAL fsync on, 100 ms heartbeat, 1000 ms election timeout,
snapshot-count 100000); driftwood-kv with its own defaults, which are the
same values.
"""

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(message=""):
    print(message, file=sys.stderr, flush=True)


def _die_with_parent():
    """preexec_fn: SIGKILL the child when the benchmark dies, so that an
    interrupted run leaves no servers behind."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_ports(count):
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


def process_cpu_seconds(pid):
    """User plus system CPU time of `pid` (all its threads), from /proc."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Cluster:
    """Three members of `kind` ("etcd" or "driftwood") under `root`."""

    def __init__(self, kind, binary, root, extra_args=()):
        self.kind = kind
        self.binary = binary
        self.root = root
        self.extra_args = list(extra_args)
        self.names = [kind[0] + str(i) for i in (1, 2, 3)]
        self.client_ports = []
        self.peer_ports = []
        self.procs = [None, None, None]

    def endpoint(self, i):
        return "127.0.0.1:%d" % self.client_ports[i]

    def endpoints(self):
        return [self.endpoint(i) for i in range(3)]

    def data_dir(self, i):
        return os.path.join(self.root, self.names[i] + ".data")

    def log_path(self, i):
        return os.path.join(self.root, self.names[i] + ".log")

    def argv(self, i):
        peer = lambda j: "http://127.0.0.1:%d" % self.peer_ports[j]
        client = "http://" + self.endpoint(i)
        argv = [
            self.binary, "--name", self.names[i],
            "--data-dir", self.data_dir(i),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer(i),
            "--initial-advertise-peer-urls", peer(i),
            "--initial-cluster", ",".join(
                "%s=%s" % (self.names[j], peer(j)) for j in range(3)),
            "--initial-cluster-state", "new",
            "--initial-cluster-token", "bench-" + self.kind,
        ]
        if self.kind == "etcd":
            argv += ["--logger", "zap", "--log-level", "warn"]
        else:
            argv += ["--log-level", "warn"]
        return argv + self.extra_args

    def start(self, attempts=5):
        for attempt in range(attempts):
            ports = free_ports(6)
            self.client_ports, self.peer_ports = ports[:3], ports[3:]
            for i in range(3):
                shutil.rmtree(self.data_dir(i), ignore_errors=True)
                with open(self.log_path(i), "ab") as log_file:
                    self.procs[i] = subprocess.Popen(
                        self.argv(i), stdin=subprocess.DEVNULL,
                        stdout=log_file, stderr=subprocess.STDOUT,
                        preexec_fn=_die_with_parent)
            if self.wait_leader(deadline=30):
                return
            log("%s: no leader within 30 s (attempt %d); logs in %s" %
                (self.kind, attempt + 1, self.root))
            self.stop()
        raise RuntimeError("%s: the cluster did not start; logs in %s" %
                           (self.kind, self.root))

    def statuses(self, members=None):
        """Maintenance.Status of each live member, via etcdctl."""
        members = range(3) if members is None else members
        result = {}
        for i in members:
            if self.procs[i] is None or self.procs[i].poll() is not None:
                continue
            try:
                out = subprocess.run(
                    ["etcdctl", "--endpoints", self.endpoint(i),
                     "--command-timeout=1s", "endpoint", "status", "-w",
                     "json"], capture_output=True, text=True, timeout=5,
                    env=dict(os.environ, ETCDCTL_API="3"))
            except subprocess.TimeoutExpired:
                continue
            if out.returncode != 0:
                continue
            try:
                status = json.loads(out.stdout)[0]["Status"]
            except (ValueError, KeyError, IndexError):
                continue
            result[i] = status
        return result

    def leader(self):
        """The index of the member that is leader, or None."""
        for i, status in self.statuses().items():
            if status.get("leader") and \
                    status["leader"] == status["header"]["member_id"]:
                return i
        return None

    def wait_leader(self, deadline=30):
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            for i, proc in enumerate(self.procs):
                if proc is not None and proc.poll() is not None:
                    log("%s: member %s exited with %s; the end of %s:\n%s" %
                        (self.kind, self.names[i], proc.returncode,
                         self.log_path(i), self.log_tail(i)))
                    return False
            if self.leader() is not None:
                return True
            time.sleep(0.1)
        return False

    def log_tail(self, i, lines=8):
        try:
            with open(self.log_path(i), errors="replace") as f:
                return "".join(f.readlines()[-lines:]).rstrip()
        except OSError as e:
            return "(unreadable: %s)" % e

    def cpu_seconds(self):
        return sum(process_cpu_seconds(p.pid) for p in self.procs
                   if p is not None and p.poll() is None)

    def kill(self, i):
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()

    def stop(self):
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        end = time.monotonic() + 10
        for proc in self.procs:
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = [None, None, None]


class Workspace:
    """A temporary folder that is removed on exit unless `keep`."""

    def __init__(self, keep=False, prefix="driftwood-bench-"):
        self.keep = keep
        self.path = tempfile.mkdtemp(prefix=prefix)
        self.clusters = []

    def cluster(self, kind, binary, extra_args=()):
        root = tempfile.mkdtemp(prefix=kind + "-", dir=self.path)
        cluster = Cluster(kind, binary, root, extra_args)
        self.clusters.append(cluster)
        return cluster

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for cluster in self.clusters:
            cluster.stop()
        if self.keep:
            log("kept %s" % self.path)
        else:
            shutil.rmtree(self.path, ignore_errors=True)
        return False


def find_binaries(build_dir):
    kvload = os.path.join(build_dir, "bench", "kvload")
    driftwood = os.path.join(build_dir, "examples", "kv", "driftwood-kv")
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    missing = [p for p in (kvload, driftwood, etcd) if not os.access(p, os.X_OK)]
    if missing:
        raise SystemExit(
            "missing %s: run scripts/test (or ninja -C %s kvload driftwood-kv) "
            "and scripts/setup first" % (", ".join(missing), build_dir))
    if not shutil.which("etcdctl"):
        raise SystemExit("etcdctl is missing: run scripts/setup")
    return kvload, driftwood, etcd


def median(values):
    values = sorted(values)
    n = len(values)
    if n == 0:
        return float("nan")
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
