"""The run's driftwood-kv processes: start, kill -9, pause, clock control,
the lost-writes file system under each data folder, and status from each
node's /metrics endpoint."""

import os
import signal
import subprocess
import time
import urllib.request

CLIENT_PORT = 2379
PEER_PORT = 2380
METRICS_PORT = 2381
FAKETIME_LIBRARY = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"

# Lines in a node's log that mean it crashed by itself (the nemesis' own
# SIGKILLs leave no trace in the log).
CRASH_SIGNATURES = ("RAFT_CHECK failed", "terminate called", "AddressSanitizer",
                    "runtime error:", "Segmentation fault", "SIGSEGV",
                    "[critical]", "Aborted")


def wait_until(condition, timeout, interval=0.05):
    """Polls condition() until it returns a true value or the timeout passes;
    returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


class Node:
    def __init__(self, index, network, run_dir, binaries, options):
        self.index = index
        self.name = "n%d" % index
        self.network = network
        self.namespace = network.node_namespace(index)
        self.address = network.address(index)
        self.dir = os.path.join(run_dir, self.name)
        self.binaries = binaries
        self.options = options
        self.process = None
        self.paused = False
        self.started_once = False
        self.clock_rate = None
        self.lazyfs = None
        self.crashes = []
        os.makedirs(self.dir, exist_ok=True)
        self.log_path = os.path.join(self.dir, "node.log")
        self.faketime_file = os.path.join(self.dir, "faketime")
        self.set_clock_offset(0)
        if options.lazyfs:
            self.backing = os.path.join(self.dir, "backing")
            self.mount = os.path.join(self.dir, "data")
            self.control_file = os.path.join(self.dir, "lazyfs.drops")
            os.makedirs(self.backing, exist_ok=True)
            os.makedirs(self.mount, exist_ok=True)
            self.data_dir = os.path.join(self.mount, "member")
        else:
            self.data_dir = os.path.join(self.dir, "data")

    @property
    def client_address(self):
        return "%s:%d" % (self.address, CLIENT_PORT)

    def peer_url(self):
        return "http://%s:%d" % (self.address, PEER_PORT)

    # The lost-writes file system.
    def mount_lazyfs(self):
        log = open(os.path.join(self.dir, "lazyfs.log"), "ab")
        self.lazyfs = subprocess.Popen(
            [self.binaries["lazyfs"], self.backing, self.mount, "--control",
             self.control_file, "--foreground"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        if not wait_until(lambda: os.path.ismount(self.mount), 10):
            raise RuntimeError("driftwood-lazyfs did not mount %s (see %s)" %
                               (self.mount,
                                os.path.join(self.dir, "lazyfs.log")))

    def lazyfs_drops(self):
        try:
            with open(self.control_file) as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    def drop_unsynced(self):
        """Drops every write the node did not fsync. REQUIRES: the node is
        not running (it was just killed)."""
        before = self.lazyfs_drops()
        self.lazyfs.send_signal(signal.SIGUSR1)
        if not wait_until(lambda: self.lazyfs_drops() > before, 10):
            raise RuntimeError("driftwood-lazyfs of %s did not confirm the "
                               "drop" % self.name)

    def unmount_lazyfs(self):
        if self.lazyfs is None:
            return
        if self.lazyfs.poll() is None:
            self.lazyfs.terminate()
            try:
                self.lazyfs.wait(10)
            except subprocess.TimeoutExpired:
                self.lazyfs.kill()
                self.lazyfs.wait()
        if os.path.ismount(self.mount):
            subprocess.run(["fusermount3", "-u", "-z", self.mount],
                           capture_output=True)
        self.lazyfs = None

    # Clock: libfaketime in every node when the clock nemesis runs. Offsets
    # move the wall clock only (FAKETIME_DONT_FAKE_MONOTONIC); a rate change
    # restarts the node with every clock, monotonic included, running at that
    # rate from its start, so its monotonic clock never goes backwards.
    def set_clock_offset(self, seconds):
        temporary = self.faketime_file + ".tmp"
        with open(temporary, "w") as f:
            f.write("%+ds\n" % seconds)
        os.replace(temporary, self.faketime_file)

    def command(self):
        initial_cluster = ",".join(
            "n%d=http://%s:%d" % (i, self.network.address(i), PEER_PORT)
            for i in range(1, self.options.nodes + 1))
        command = ["ip", "netns", "exec", self.namespace]
        if self.options.faketime:
            command += ["env", "LD_PRELOAD=" + FAKETIME_LIBRARY,
                        "FAKETIME_CACHE_DURATION=1"]
            if self.clock_rate is None:
                command += ["FAKETIME_TIMESTAMP_FILE=" + self.faketime_file,
                            "FAKETIME_DONT_FAKE_MONOTONIC=1"]
            else:
                command += ["FAKETIME=+0 x%g" % self.clock_rate]
        command += [
            self.binaries["kv"], "--name", self.name, "--data-dir",
            self.data_dir,
            "--listen-client-urls", "http://%s:%d" % (self.address, CLIENT_PORT),
            "--listen-peer-urls", self.peer_url(),
            "--listen-metrics-urls",
            "http://%s:%d" % (self.address, METRICS_PORT),
            "--initial-cluster", initial_cluster,
            "--initial-cluster-state",
            "existing" if self.started_once else "new",
            "--initial-cluster-token", "jepsen-" + self.network.tag,
            "--heartbeat-interval", "100", "--election-timeout", "1000",
            "--snapshot-count", str(self.options.snapshot_count),
            "--experimental-snapshot-catchup-entries",
            str(self.options.snapshot_count // 4),
        ]
        return command

    def start(self):
        if self.process is not None:
            # Only kill() and stop() clear the process: one still set here
            # ended by itself.
            code = self.process.poll()
            assert code is not None, "%s is already running" % self.name
            self.crashes.append("%s exited by itself with code %d" %
                                (self.name, code))
            self.process = None
        log = open(self.log_path, "ab")
        log.write(("==== %s start %s\n" % (
            time.strftime("%H:%M:%S"),
            "(clock rate x%g)" % self.clock_rate if self.clock_rate else ""))
            .encode())
        log.flush()
        self.process = subprocess.Popen(self.command(), stdout=log,
                                        stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()
        self.started_once = True
        self.paused = False

    def running(self):
        return self.process is not None and self.process.poll() is None

    def check_alive(self):
        """Records the node as crashed when it ended without being killed."""
        if self.process is not None and self.process.poll() is not None:
            self.crashes.append("%s exited by itself with code %d" %
                                (self.name, self.process.returncode))
            self.process = None

    def kill(self):
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None
        self.paused = False

    def pause(self):
        if self.running():
            os.kill(self.process.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self):
        if self.process is not None and self.paused:
            os.kill(self.process.pid, signal.SIGCONT)
        self.paused = False

    def stop(self):
        """A clean stop (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None:
            return
        self.resume()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                if self.process.wait(10) != 0:
                    self.crashes.append("%s exited with code %d on SIGTERM" %
                                        (self.name, self.process.returncode))
            except subprocess.TimeoutExpired:
                self.crashes.append("%s did not stop within 10 s of SIGTERM"
                                    % self.name)
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        else:
            self.crashes.append("%s exited by itself with code %d" %
                                (self.name, self.process.returncode))
        self.process = None

    def metrics(self):
        """driftwood_raft_* gauges and counters, or None when unreachable."""
        if not self.running() or self.paused:
            return None
        try:
            with urllib.request.urlopen(
                    "http://%s:%d/metrics" % (self.address, METRICS_PORT),
                    timeout=0.5) as response:
                text = response.read().decode()
        except OSError:
            return None
        values = {}
        for line in text.splitlines():
            if line.startswith("driftwood_raft_"):
                name, _, value = line.partition(" ")
                try:
                    values[name[len("driftwood_raft_"):]] = float(value)
                except ValueError:
                    pass
        return values

    def crash_lines(self):
        found = []
        try:
            with open(self.log_path, errors="replace") as log:
                for number, line in enumerate(log, 1):
                    if any(s in line for s in CRASH_SIGNATURES):
                        found.append("%s:%d: %s" % (self.log_path, number,
                                                    line.strip()))
        except OSError:
            pass
        return found


def leader(nodes):
    """The node that leads at the highest term any node reports, or None."""
    best = None
    for node in nodes:
        m = node.metrics()
        if m and m.get("is_leader") == 1:
            if best is None or m.get("term", 0) > best[1]:
                best = (node, m.get("term", 0))
    return best[0] if best else None


def converged(nodes):
    """True when a leader exists and every node has applied its commit
    index."""
    lead = leader(nodes)
    if lead is None:
        return False
    lead_metrics = lead.metrics()
    if lead_metrics is None:
        return False
    commit = lead_metrics.get("commit_index", 0)
    for node in nodes:
        m = node.metrics()
        if m is None or m.get("applied_index", 0) < commit:
            return False
    return True
