"""Faults as start/stop pairs, and the schedule that combines them
(jepsen/README.md "Nemeses").

Every fault records a nemesis operation in the history when it starts
(`start-<package>`) and when it has been undone (`stop-<package>`); the
checker and the plot use these as fault windows.
"""

import time

import netns
import nodes as nodes_lib

PACKAGES = ("partition", "kill", "pause", "clock", "lazyfs")


class Nemesis:
    def __init__(self, network, nodes, rng, record, options):
        self.network = network
        self.nodes = nodes
        self.rng = rng
        self.record = record  # record(f, value): appends a nemesis op
        self.options = options
        self.applied = {}  # package -> count
        self.pending = {}  # cycle() name -> choices not yet taken this round

    def node(self, index):
        return self.nodes[index - 1]

    def leader_index(self):
        lead = nodes_lib.leader(self.nodes)
        return lead.index if lead is not None else None

    def pick(self, choices):
        return choices[self.rng.randrange(len(choices))]

    def cycle(self, name, choices):
        """The next of `choices` in a shuffled round robin kept per name, so
        every target kind of a fault runs once before any runs twice."""
        pending = self.pending.get(name)
        if not pending:
            pending = list(choices)
            self.rng.shuffle(pending)
            self.pending[name] = pending
        return pending.pop()

    def targets(self, spec):
        """1-based node indices for a target spec."""
        all_nodes = list(range(1, len(self.nodes) + 1))
        if spec == "one":
            return [self.pick(all_nodes)]
        if spec == "primaries":
            lead = self.leader_index()
            return [lead if lead is not None else self.pick(all_nodes)]
        if spec == "minority":
            shuffled = list(all_nodes)
            self.rng.shuffle(shuffled)
            return sorted(shuffled[:max(1, (len(all_nodes) - 1) // 2)])
        if spec == "all":
            return all_nodes
        raise ValueError(spec)

    def start(self, package):
        """Applies one fault of the package and returns the undo callable."""
        self.applied[package] = self.applied.get(package, 0) + 1
        return getattr(self, "start_" + package)()

    def start_partition(self):
        kinds = ["one", "primaries", "majority"]
        if len(self.nodes) >= 5:
            kinds += ["ring", "bridge"]
        kind = self.cycle("partition", kinds)
        description, grudge = netns.partition_grudge(
            kind, list(range(1, len(self.nodes) + 1)), self.leader_index(),
            self.rng)
        self.record("start-partition", {
            "kind": kind, "description": description,
            "grudge": {"n%d" % k: ["n%d" % v for v in sorted(vs)]
                       for k, vs in sorted(grudge.items())}})
        self.network.apply_grudge(grudge)

        def stop():
            self.network.heal()
            self.record("stop-partition", {"kind": kind})
        return stop

    def start_kill(self):
        spec = self.cycle("kill", ["one", "primaries", "minority", "all"])
        targets = self.targets(spec)
        self.record("start-kill", {"targets": spec,
                                   "nodes": ["n%d" % t for t in targets]})
        for t in targets:
            self.node(t).kill()

        def stop():
            for t in targets:
                if not self.node(t).running():
                    self.node(t).start()
            self.record("stop-kill", {"nodes": ["n%d" % t for t in targets]})
        return stop

    def start_lazyfs(self):
        spec = self.cycle("lazyfs", ["one", "minority", "all"])
        targets = self.targets(spec)
        self.record("start-lazyfs", {"targets": spec,
                                     "nodes": ["n%d" % t for t in targets]})
        for t in targets:
            self.node(t).kill()
            self.node(t).drop_unsynced()

        def stop():
            for t in targets:
                if not self.node(t).running():
                    self.node(t).start()
            self.record("stop-lazyfs", {"nodes": ["n%d" % t for t in targets]})
        return stop

    def start_pause(self):
        spec = self.cycle("pause", ["one", "primaries"])
        targets = self.targets(spec)
        self.record("start-pause", {"targets": spec,
                                    "nodes": ["n%d" % t for t in targets]})
        for t in targets:
            self.node(t).pause()

        def stop():
            for t in targets:
                self.node(t).resume()
            self.record("stop-pause", {"nodes": ["n%d" % t for t in targets]})
        return stop

    def start_clock(self):
        spec = self.cycle("clock target", ["one", "primaries"])
        targets = self.targets(spec)
        if self.cycle("clock kind", ["step", "rate"]) == "step":
            # Undoing a positive offset steps the wall clock back. gRPC 1.51
            # stalls its timers for as long as such a step (its condition
            # variables wait on the wall clock: grpc/grpc#32176), so the
            # node's links stay down that long; --clock-max-step bounds it.
            offset = self.rng.randint(1, self.options.clock_max_step) * \
                self.pick([-1, 1])
            self.record("start-clock", {"targets": spec, "offset_s": offset,
                                        "nodes": ["n%d" % t for t in targets]})
            for t in targets:
                self.node(t).set_clock_offset(offset)

            def stop():
                for t in targets:
                    self.node(t).set_clock_offset(0)
                self.record("stop-clock", {"nodes": ["n%d" % t
                                                     for t in targets]})
            return stop
        rate = self.pick([0.5, 0.7, 1.5, 2.0, 3.0])
        self.record("start-clock", {"targets": spec, "rate": rate,
                                    "nodes": ["n%d" % t for t in targets]})
        for t in targets:
            node = self.node(t)
            node.kill()
            node.clock_rate = rate
            node.start()

        def stop():
            for t in targets:
                node = self.node(t)
                node.kill()
                node.clock_rate = None
                node.start()
            self.record("stop-clock", {"nodes": ["n%d" % t for t in targets]})
        return stop

    def heal_all(self):
        """The final heal: no partition, nobody paused, every node running
        with a true clock."""
        self.network.heal()
        for node in self.nodes:
            node.resume()
            node.set_clock_offset(0)
            if node.clock_rate is not None:
                node.kill()
                node.clock_rate = None
            if not node.running():
                node.start()


def run_schedule(nemesis, packages, end_time, hold, quiet, rng, stopped):
    """Until end_time (time.monotonic()): a quiet gap, one fault of the next
    package (round robin over a shuffled order, reshuffled each round, so
    every package runs), held for U(hold), then undone. `stopped()` ends the
    loop early."""
    order = []
    while not stopped():
        if not order:
            order = list(packages)
            rng.shuffle(order)
        gap = rng.uniform(*quiet)
        held = rng.uniform(*hold)
        if time.monotonic() + gap + held + 1 > end_time:
            break
        sleep_until(time.monotonic() + gap, stopped)
        package = order.pop(0)
        undo = nemesis.start(package)
        try:
            sleep_until(time.monotonic() + held, stopped)
        finally:
            undo()


def sleep_until(deadline, stopped):
    while not stopped() and time.monotonic() < deadline:
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
