#!/usr/bin/python3
"""jepsen/run.py: runs driftwood-kv clusters under faults, records what the
clients saw, and checks the history (jepsen/README.md).

  sudo /usr/bin/python3 jepsen/run.py                      one run, defaults
  /usr/bin/python3 jepsen/run.py --nemesis partition,kill --time-limit 120
  /usr/bin/python3 jepsen/run.py --suite ci                the CI short runs
  /usr/bin/python3 jepsen/run.py --suite full --time-limit 300

Needs root (network namespaces, iptables, FUSE) and the Release build
(scripts/test builds it). Standard library only; run with /usr/bin/python3.
"""

import argparse
import fcntl
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

# Run from a source checkout: no __pycache__ beside the sources.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import nemesis as nemesis_lib  # noqa: E402
import netns  # noqa: E402
import nodes as nodes_lib  # noqa: E402

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK_FILE = "/run/lock/driftwood-jepsen.lock"
STATE_FILE = "/run/driftwood-jepsen.state"


class RunFailed(Exception):
    pass


def log(message):
    print(message, flush=True)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Runs a driftwood-kv cluster in network namespaces under "
        "faults, records the clients' history and checks it for "
        "linearizability (jepsen/README.md).")
    parser.add_argument("--workload", default="both",
                        choices=["register", "append", "both"],
                        help="register: read/write/cas per key; append: "
                        "list append and read per key; both: half the keys "
                        "each (default)")
    parser.add_argument("--watchers", type=int, default=3,
                        help="watchers of the whole key space, checked "
                        "against the final history (default 3; 0: none)")
    parser.add_argument("--lock-processes", type=int, default=3,
                        help="processes taking turns on one lock with "
                        "fenced writes (default 3; 0: none)")
    parser.add_argument("--lease-ttl", type=int, default=2,
                        help="TTL of the lock processes' leases (default 2)")
    parser.add_argument("--nemesis", default="mixed",
                        help="comma-separated faults among %s, or mixed (all "
                        "of them) or none (default: mixed)" %
                        ",".join(nemesis_lib.PACKAGES))
    parser.add_argument("--nodes", type=int, default=3, choices=[3, 5])
    parser.add_argument("--time-limit", type=float, default=60,
                        help="seconds of the main phase (default 60)")
    parser.add_argument("--rate", type=float, default=200,
                        help="client operations a second (default 200)")
    parser.add_argument("--concurrency", type=int, default=0,
                        help="logical client processes (default 3n+1)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--hold", default="4,10",
                        help="min,max seconds a fault is held (default 4,10)")
    parser.add_argument("--quiet", default="2,6",
                        help="min,max seconds between faults (default 2,6)")
    parser.add_argument("--warmup", type=float, default=5,
                        help="seconds without faults at the start")
    parser.add_argument("--clock-max-step", type=int, default=10,
                        help="largest wall-clock step of the clock fault, in "
                        "seconds (default 10; a backward step stalls gRPC's "
                        "timers for its length, see jepsen/README.md)")
    parser.add_argument("--ops-per-key", type=int, default=200)
    parser.add_argument("--snapshot-count", type=int, default=500,
                        help="driftwood-kv --snapshot-count: small, so log "
                        "compaction and snapshot transfers happen under faults")
    parser.add_argument("--request-timeout-ms", type=int, default=1000)
    parser.add_argument("--serializable-reads", action="store_true",
                        help="clients read with serializable=true (local, "
                        "possibly stale): the negative control")
    parser.add_argument("--expect-invalid", action="store_true",
                        help="the run passes only if the checker finds the "
                        "history INVALID (for negative controls)")
    parser.add_argument("--min-ok", type=int, default=None,
                        help="fewest ok operations for a meaningful run "
                        "(default: a tenth of rate x time-limit)")
    parser.add_argument("--suite", choices=["ci", "full"],
                        help="ci: a mixed-fault run and the serializable "
                        "negative control; full: one run per fault, then "
                        "mixed faults on 5 nodes")
    parser.add_argument("--build", default=os.path.join(REPOSITORY, "build",
                                                       "release"),
                        help="the build folder (default build/release)")
    parser.add_argument("--store", default=os.path.join(REPOSITORY, "jepsen",
                                                       "store"),
                        help="where run folders go (default jepsen/store)")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the nodes' data folders of passing runs")
    args = parser.parse_args(argv)
    try:
        args.hold = tuple(float(x) for x in args.hold.split(","))
        args.quiet = tuple(float(x) for x in args.quiet.split(","))
        assert len(args.hold) == 2 and len(args.quiet) == 2
    except (ValueError, AssertionError):
        parser.error("--hold and --quiet take min,max seconds")
    if args.nemesis == "mixed":
        args.packages = list(nemesis_lib.PACKAGES)
    elif args.nemesis == "none":
        args.packages = []
    else:
        args.packages = args.nemesis.split(",")
        for package in args.packages:
            if package not in nemesis_lib.PACKAGES:
                parser.error("--nemesis: unknown fault '%s' (known: %s)" %
                             (package, ",".join(nemesis_lib.PACKAGES)))
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1 << 31)
    return args


def binaries(build):
    paths = {
        "kv": os.path.join(build, "examples", "kv", "driftwood-kv"),
        "client": os.path.join(build, "jepsen", "client",
                               "driftwood-jepsen-client"),
        "checker": os.path.join(build, "jepsen", "checker", "jepsen-check"),
        "lazyfs": os.path.join(build, "jepsen", "lazyfs", "driftwood-lazyfs"),
    }
    for name, path in paths.items():
        if not os.access(path, os.X_OK):
            raise SystemExit("jepsen/run.py: %s is not built (%s); run "
                             "scripts/test or ninja -C %s" % (name, path, build))
    return paths


def check_environment(args):
    if os.geteuid() != 0:
        raise SystemExit("jepsen/run.py: needs root (network namespaces, "
                         "iptables, FUSE); run it with sudo")
    needed = ["ip", "iptables-restore"]
    if "lazyfs" in args.packages:
        needed.append("fusermount3")
    for tool in needed:
        if shutil.which(tool) is None:
            raise SystemExit("jepsen/run.py: '%s' is missing; run scripts/setup"
                             % tool)
    if "clock" in args.packages and not os.path.exists(
            nodes_lib.FAKETIME_LIBRARY):
        raise SystemExit("jepsen/run.py: libfaketime is missing (%s); run "
                         "scripts/setup" % nodes_lib.FAKETIME_LIBRARY)
    if "lazyfs" in args.packages and not os.path.exists("/dev/fuse"):
        raise SystemExit("jepsen/run.py: /dev/fuse is missing")


def save_state(state):
    with open(STATE_FILE + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(STATE_FILE + ".tmp", STATE_FILE)


def sweep_leftovers():
    """Removes what an earlier run killed before its teardown left behind:
    jt-* namespaces (and their processes) and lost-writes mounts. Runs under
    the run lock, so nothing found belongs to a live run."""
    swept = []
    for namespace in netns.existing_namespaces():
        netns.delete_namespace(namespace)
        swept.append(namespace)
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                source, mountpoint, fstype = line.split()[:3]
                if fstype.startswith("fuse") and "lazyfs" in (source + fstype):
                    subprocess.run(["fusermount3", "-u", "-z", mountpoint],
                                   capture_output=True)
                    swept.append(mountpoint)
    except OSError:
        pass
    if os.path.exists(STATE_FILE):
        os.remove(STATE_FILE)
    if swept:
        log("swept leftovers of an earlier run: " + ", ".join(swept))


class ClientProcess:
    """driftwood-jepsen-client, with its stdout lines on a queue."""

    def __init__(self, command, log_path):
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE,
                                        stderr=self.log, text=True)
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def expect(self, prefix, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline -
                                                  time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise RunFailed("the client exited (code %s) while waiting "
                                "for '%s'" % (self.process.wait(), prefix))
            if line.startswith(prefix):
                return line
        raise RunFailed("the client did not report '%s' within %.0f s" %
                        (prefix, timeout))

    def send(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def close(self):
        if self.process.poll() is None:
            try:
                self.send("quit")
                self.process.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.log.close()


def fields(line):
    """'word a=1 b=2' -> {'a': '1', 'b': '2'}"""
    return dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)


def run_one(args, paths, spec):
    """One run; returns True when it passed. `spec` overrides args."""
    options = argparse.Namespace(**vars(args))
    for key, value in spec.items():
        setattr(options, key, value)
    options.faketime = "clock" in options.packages
    options.lazyfs = "lazyfs" in options.packages
    concurrency = options.concurrency or 3 * options.nodes + 1
    nemesis_name = ",".join(options.packages) or "none"
    title = "%s nemesis=%s nodes=%d seed=%d time=%gs rate=%g%s" % (
        options.workload, nemesis_name, options.nodes, options.seed,
        options.time_limit, options.rate,
        " serializable-reads" if options.serializable_reads else "")
    run_name = "%s-%s-%dn%s" % (options.workload,
                                nemesis_name.replace(",", "+"), options.nodes,
                                "-serializable" if options.serializable_reads
                                else "")
    run_dir = os.path.join(options.store, run_name,
                           time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    os.makedirs(run_dir, exist_ok=True)
    log("")
    log("jepsen " + title)
    log("run folder: " + run_dir)

    rng = random.Random(options.seed)
    network = netns.Network(netns.random_tag(), options.nodes)
    cluster = []
    client = None
    nemesis = None
    nemesis_ops = []
    problems = []
    start_ns = time.monotonic_ns()
    final = {}
    stop_requested = [False]

    def record(f, value):
        nemesis_ops.append({"time": time.monotonic_ns() - start_ns,
                            "process": "nemesis", "type": "info", "f": f,
                            "value": value})
        log("  %7.1f s  %s %s" % ((time.monotonic_ns() - start_ns) / 1e9, f,
                                  json.dumps(value, sort_keys=True)))

    try:
        save_state({"namespaces": [network.bridge, network.control] +
                    [network.node_namespace(i)
                     for i in range(1, options.nodes + 1)],
                    "run_dir": run_dir})
        network.create()
        network.enter_control()
        for index in range(1, options.nodes + 1):
            node = nodes_lib.Node(index, network, run_dir, paths, options)
            if options.lazyfs:
                node.mount_lazyfs()
            cluster.append(node)
        for node in cluster:
            node.start()
        began = time.monotonic()
        lead = nodes_lib.wait_until(lambda: nodes_lib.leader(cluster), 30)
        if lead is None:
            raise RunFailed("no leader within 30 s of starting the cluster "
                            "(see the nodes' node.log; is route_localnet "
                            "working in this kernel?)")
        log("cluster up: leader %s after %.1f s" % (lead.name,
                                                     time.monotonic() - began))

        history_path = os.path.join(run_dir, "client-history.jsonl")
        start_ns = time.monotonic_ns()
        command = [
            paths["client"], "--workload", options.workload,
            "--nodes", ",".join("%s=%s" % (n.name, n.client_address)
                                for n in cluster),
            "--concurrency", str(concurrency), "--rate", str(options.rate),
            "--duration", str(options.time_limit), "--seed", str(options.seed),
            "--start-ns", str(start_ns), "--history", history_path,
            "--ops-per-key", str(options.ops_per_key),
            "--request-timeout-ms", str(options.request_timeout_ms),
        ]
        if options.serializable_reads:
            command.append("--serializable-reads")
        watch_log = os.path.join(run_dir, "watch.jsonl")
        if options.watchers > 0 or options.lock_processes > 0:
            command += ["--watchers", str(options.watchers),
                        "--lock-processes", str(options.lock_processes),
                        "--lease-ttl", str(options.lease_ttl),
                        "--watch-log", watch_log,
                        "--lock-log", os.path.join(run_dir, "lock.jsonl")]
        client = ClientProcess(command, os.path.join(run_dir, "client.log"))

        end_time = time.monotonic() + options.time_limit
        nemesis = nemesis_lib.Nemesis(network, cluster, rng, record, options)
        if options.packages:
            nemesis_lib.sleep_until(time.monotonic() + options.warmup,
                                    lambda: stop_requested[0])
            nemesis_lib.run_schedule(nemesis, options.packages, end_time,
                                     options.hold, options.quiet, rng,
                                     lambda: stop_requested[0])
        main_done = client.expect("main-done", options.time_limit + 60)
        log("main phase: " + main_done[len("main-done "):])

        for node in cluster:
            node.check_alive()
        record("start-heal", {})
        nemesis.heal_all()
        began = time.monotonic()
        if not nodes_lib.wait_until(lambda: nodes_lib.converged(cluster), 30,
                                    interval=0.2):
            problems.append("recovery: no converged cluster (a leader, and "
                            "every node applied its commit index) within 30 s "
                            "of the final heal")
        recovered_after = time.monotonic() - began
        lead = nodes_lib.leader(cluster)
        record("stop-heal", {"leader": lead.name if lead else None})
        client.send("final")
        final = fields(client.expect("final-done", 120))
        log("recovery: leader %s after %.1f s; final reads: %s ok, %s "
            "missing" % (lead.name if lead else "none", recovered_after,
                         final.get("ok"), final.get("missing")))
        if final.get("missing") != "0":
            problems.append("recovery: %s final reads never succeeded" %
                            final.get("missing"))
        if options.watchers > 0:
            log("watch: final revision %s, %s watchers synced, truth %s, "
                "%s events, %s reconnects" % (
                    final.get("final_revision"), final.get("synced"),
                    final.get("truth"), final.get("events"),
                    final.get("reconnects")))
        client.close()
        client = None
        for node in cluster:
            node.stop()
    except KeyboardInterrupt:
        stop_requested[0] = True
        problems.append("interrupted")
        log("interrupted: tearing down")
    except RunFailed as e:
        problems.append(str(e))
    finally:
        if client is not None:
            client.process.kill()
            client.process.wait()
            client.log.close()
        for node in cluster:
            node.resume()
            node.kill()
            node.unmount_lazyfs()
        network.destroy()
        if os.path.exists(STATE_FILE):
            os.remove(STATE_FILE)

    for node in cluster:
        problems.extend(node.crashes)
    leftovers = [n for n in netns.existing_namespaces()
                 if n.startswith("jt-" + network.tag)]
    if leftovers:
        problems.append("teardown left namespaces: " + ", ".join(leftovers))
    crashes = [line for node in cluster for line in node.crash_lines()]
    if crashes:
        problems.append("log-scan: crash signatures in node logs:\n    " +
                        "\n    ".join(crashes[:10]))
    else:
        log("log-scan: no crash signatures in %d node logs" % len(cluster))

    history_path = os.path.join(run_dir, "history.jsonl")
    checker_valid = None
    results = {}
    if "interrupted" not in problems:
        ops = merge_history(os.path.join(run_dir, "client-history.jsonl"),
                            nemesis_ops, history_path)
        check_command = [paths["checker"], "--history", history_path,
                         "--out", run_dir, "--title", title]
        if options.watchers > 0:
            check_command += ["--watch-log",
                              os.path.join(run_dir, "watch.jsonl")]
        checker = subprocess.run(check_command, capture_output=True,
                                 text=True)
        for line in checker.stdout.splitlines():
            log("  " + line)
        if checker.returncode == 2 or not os.path.exists(
                os.path.join(run_dir, "results.json")):
            problems.append("the checker could not run: " +
                            checker.stderr.strip())
        else:
            with open(os.path.join(run_dir, "results.json")) as f:
                results = json.load(f)
            checker_valid = results.get("valid") is True
        ok_ops = sum(1 for op in ops if op.get("type") == "ok")
        min_ok = options.min_ok if options.min_ok is not None else int(
            options.rate * options.time_limit / 10)
        if ok_ops < min_ok:
            problems.append("too few ok operations for a meaningful run: %d "
                            "< %d" % (ok_ops, min_ok))
        applied = nemesis.applied if nemesis is not None else {}
        for package in options.packages:
            if applied.get(package, 0) == 0:
                problems.append("fault '%s' never ran (lengthen --time-limit)"
                                % package)
        log("faults applied: " + (", ".join(
            "%s %d" % (p, applied.get(p, 0))
            for p in options.packages) or "none"))

    if options.expect_invalid:
        passed = not problems and checker_valid is False
        verdict = ("PASS (the checker found the history INVALID, as this "
                   "negative control requires)" if passed else
                   "FAIL (a negative control must come out INVALID)")
    else:
        passed = not problems and checker_valid is True
        verdict = "PASS" if passed else "FAIL"
    for problem in problems:
        log("problem: " + problem)
    if passed and not options.keep_data:
        for node in cluster:
            for folder in ("data", "backing"):
                shutil.rmtree(os.path.join(node.dir, folder),
                              ignore_errors=True)
    plot = os.path.join(run_dir, "latency.png")
    log("RESULT %s: %s   checked ops: %s   history: %s   plot: %s" % (
        run_name, verdict, results.get("checked_ops", 0), history_path,
        plot if os.path.exists(plot) else "none"))
    log("store: " + run_dir)
    return passed, stop_requested[0]


def merge_history(client_history, nemesis_ops, out_path):
    """The client's operations and the nemesis' in time order, numbered."""
    ops = []
    if os.path.exists(client_history):
        with open(client_history) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        ops.append(json.loads(line))
                    except ValueError:
                        # A line torn by a killed client: the history ends
                        # there.
                        break
    ops.extend(nemesis_ops)
    order = sorted(range(len(ops)), key=lambda i: (ops[i]["time"], i))
    with open(out_path, "w") as out:
        for index, position in enumerate(order):
            op = {"index": index}
            op.update(ops[position])
            out.write(json.dumps(op, separators=(",", ":")) + "\n")
        out.flush()
        os.fsync(out.fileno())
    return ops


def suite(name, args):
    if name == "ci":
        return [
            {"workload": "both", "packages": list(nemesis_lib.PACKAGES),
             "nodes": 3, "time_limit": args.time_limit},
            {"workload": "register", "packages": ["partition"], "nodes": 3,
             "time_limit": 30, "serializable_reads": True,
             "watchers": 0, "lock_processes": 0,
             "expect_invalid": True, "hold": (6, 8), "quiet": (1, 2),
             "min_ok": 500},
        ]
    runs = [{"workload": "both", "packages": [package], "nodes": 3}
            for package in nemesis_lib.PACKAGES]
    runs.append({"workload": "both", "packages": list(nemesis_lib.PACKAGES),
                 "nodes": 5})
    return runs


def main(argv):
    args = parse_args(argv)
    check_environment(args)
    paths = binaries(args.build)

    def interrupt(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, interrupt)

    os.makedirs(os.path.dirname(LOCK_FILE), exist_ok=True)
    lock = open(LOCK_FILE, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("waiting for another jepsen run to finish (%s)" % LOCK_FILE)
        fcntl.flock(lock, fcntl.LOCK_EX)
    sweep_leftovers()

    specs = suite(args.suite, args) if args.suite else [{}]
    passed = failed = 0
    interrupted = False
    for spec in specs:
        ok, interrupted = run_one(args, paths, spec)
        passed += ok
        failed += not ok
        if interrupted:
            break
    log("")
    log("jepsen: %d passed, %d failed%s" % (passed, failed,
                                           " (interrupted)" if interrupted
                                           else ""))
    if interrupted:
        return 130
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
