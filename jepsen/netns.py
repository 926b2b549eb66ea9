"""The run's network: one namespace per node plus a control namespace for the
clients and the orchestrator, joined by a bridge in a namespace of its own.

Addresses come from the loopback range only (127.77.0.0/24, with
route_localnet set on the namespaces' interfaces); nothing is attached to the
host's own namespace, and the node namespaces have no default route, so no
packet can leave for any other address. Partitions are iptables INPUT DROP
rules by source address inside each node's namespace; the control address is
never dropped, so clients are never partitioned (jepsen/README.md).
"""

import ctypes
import os
import random
import subprocess

SUBNET_PREFIX = "127.77.0."
CONTROL_HOST = 254
NAMESPACE_PREFIX = "jt-"
CLONE_NEWNET = 0x40000000


def run(*args, stdin=None, check=True):
    result = subprocess.run(list(args), input=stdin, capture_output=True,
                            text=True)
    if check and result.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(args),
                                                   result.returncode,
                                                   result.stderr.strip()))
    return result


def existing_namespaces():
    names = []
    for line in run("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(NAMESPACE_PREFIX):
            names.append(name)
    return names


def delete_namespace(name):
    """Kills whatever runs in the namespace (except this process, which
    may have entered the control namespace), then deletes it."""
    pids = run("ip", "netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        try:
            if int(pid) != os.getpid():
                os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass
    run("ip", "netns", "del", name, check=False)


class Network:
    """Creates the namespaces on construction (create()), removes them in
    destroy(), which is safe to call more than once and after a partial
    create()."""

    def __init__(self, tag, node_count):
        self.tag = tag
        self.node_count = node_count
        self.bridge = "%s%s-br" % (NAMESPACE_PREFIX, tag)
        self.control = "%s%s-ctl" % (NAMESPACE_PREFIX, tag)
        self.created = []

    def node_namespace(self, index):
        return "%s%s-n%d" % (NAMESPACE_PREFIX, self.tag, index)

    @staticmethod
    def address(index):
        return SUBNET_PREFIX + str(index)

    @staticmethod
    def control_address():
        return SUBNET_PREFIX + str(CONTROL_HOST)

    def create(self):
        run("ip", "netns", "add", self.bridge)
        self.created.append(self.bridge)
        run("ip", "-n", self.bridge, "link", "add", "jtbr0", "type", "bridge")
        run("ip", "-n", self.bridge, "link", "set", "jtbr0", "up")
        run("ip", "-n", self.bridge, "link", "set", "lo", "up")
        members = [(self.node_namespace(i), i, str(i))
                   for i in range(1, self.node_count + 1)]
        members.append((self.control, CONTROL_HOST, "c"))
        for namespace, host, suffix in members:
            run("ip", "netns", "add", namespace)
            self.created.append(namespace)
            # The veth pair is made in the host namespace and both ends leave
            # it at once.
            inside = "jtv%s%s" % (self.tag, suffix)
            outside = "jtp%s%s" % (self.tag, suffix)
            run("ip", "link", "add", inside, "type", "veth", "peer", "name",
                outside)
            run("ip", "link", "set", inside, "netns", namespace)
            run("ip", "link", "set", outside, "netns", self.bridge)
            run("ip", "-n", namespace, "link", "set", inside, "name", "eth0")
            run("ip", "netns", "exec", namespace, "sysctl", "-qw",
                "net.ipv4.conf.all.route_localnet=1",
                "net.ipv4.conf.eth0.route_localnet=1")
            run("ip", "-n", namespace, "addr", "add",
                SUBNET_PREFIX + str(host) + "/24", "dev", "eth0")
            run("ip", "-n", namespace, "link", "set", "eth0", "up")
            run("ip", "-n", namespace, "link", "set", "lo", "up")
            run("ip", "-n", self.bridge, "link", "set", outside, "master",
                "jtbr0")
            run("ip", "-n", self.bridge, "link", "set", outside, "up")

    def enter_control(self):
        """Moves this process (its calling thread, and every thread and child
        started afterwards) into the control namespace. Call before starting
        threads."""
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open("/run/netns/" + self.control, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                error = ctypes.get_errno()
                raise OSError(error, "setns into %s: %s" %
                              (self.control, os.strerror(error)))
        finally:
            os.close(fd)

    def destroy(self):
        for namespace in reversed(self.created):
            delete_namespace(namespace)
        self.created = []

    # Partitions. A grudge maps each node (1-based) to the nodes whose packets
    # it drops.
    def apply_grudge(self, grudge):
        for index in range(1, self.node_count + 1):
            rules = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]",
                     ":OUTPUT ACCEPT [0:0]"]
            for other in sorted(grudge.get(index, ())):
                rules.append("-A INPUT -s %s/32 -j DROP" % self.address(other))
            rules.append("COMMIT")
            run("ip", "netns", "exec", self.node_namespace(index),
                "iptables-restore", stdin="\n".join(rules) + "\n")

    def heal(self):
        self.apply_grudge({})


def complete_grudge(components):
    """Each node drops every node outside its own component."""
    everyone = set().union(*components)
    grudge = {}
    for component in components:
        for node in component:
            grudge[node] = everyone - set(component)
    return grudge


def partition_grudge(kind, nodes, leader, rng):
    """Returns (description, grudge) for a partition of the given kind over
    the 1-based node list; `leader` may be None."""
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    if kind == "primaries":
        target = leader if leader is not None else shuffled[0]
        rest = [n for n in nodes if n != target]
        return ("isolate leader n%d" % target,
                complete_grudge([[target], rest]))
    if kind == "one":
        target = shuffled[0]
        rest = [n for n in nodes if n != target]
        return "isolate n%d" % target, complete_grudge([[target], rest])
    if kind == "majority":
        minority = sorted(shuffled[:len(nodes) // 2])
        majority = sorted(shuffled[len(nodes) // 2:])
        return ("halves %s | %s" % (names(minority), names(majority)),
                complete_grudge([minority, majority]))
    if kind == "ring":
        # Every node sees a majority (itself and its two ring neighbours), and
        # no two nodes see the same majority.
        grudge = {}
        count = len(shuffled)
        for position, node in enumerate(shuffled):
            seen = {node, shuffled[(position - 1) % count],
                    shuffled[(position + 1) % count]}
            grudge[node] = set(nodes) - seen
        return "majorities ring %s" % names(shuffled), grudge
    if kind == "bridge":
        # Two halves that see only themselves and one bridge node that sees
        # everyone.
        half = (len(shuffled) - 1) // 2
        left, middle, right = shuffled[:half], shuffled[half], shuffled[half + 1:]
        grudge = {node: set(right) for node in left}
        grudge.update({node: set(left) for node in right})
        grudge[middle] = set()
        return ("bridge n%d between %s and %s" %
                (middle, names(sorted(left)), names(sorted(right))), grudge)
    raise ValueError("unknown partition kind " + kind)


def names(nodes):
    return ",".join("n%d" % n for n in nodes)


def random_tag():
    return "%04x" % random.SystemRandom().randrange(0x10000)
