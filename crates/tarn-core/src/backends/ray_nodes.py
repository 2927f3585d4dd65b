# The driver of a Tarn job on several nodes of a Ray cluster (see ray.rs): it reserves one
# bundle of CPUs on each of TARN_NODE_COUNT distinct nodes (a STRICT_SPREAD placement group,
# so the job starts only when every node is free: gang scheduling), then runs the node script
# (TARN_NODE_SCRIPT, the runner's launcher every engine uses) in a Ray task on each, with its
# rank. The tasks die with this driver (stopping the Ray job stops every node's runner), and
# the driver fails when any node's script does.
import ctypes
import os
import signal
import subprocess
import sys

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

count = int(os.environ["TARN_NODE_COUNT"])
cpus = float(os.environ["TARN_NODE_CPUS"])
script = os.environ.pop("TARN_NODE_SCRIPT")

ray.init()
print(f"tarn: waiting for {count} nodes with {cpus:g} free CPUs each", flush=True)
group = placement_group([{"CPU": cpus}] * count, strategy="STRICT_SPREAD")
ray.get(group.ready())


def die_with_parent():
    # SIGTERM when the Ray worker that started the script goes: the runner stops its
    # processes and reports, as on any engine's stop.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@ray.remote(num_cpus=cpus, max_retries=0)
def node(rank):
    node_id = ray.get_runtime_context().get_node_id()[:12]
    env = dict(os.environ, TARN_NODE_RANK=str(rank), TARN_RAY_NODE=node_id)
    return subprocess.run(["sh", "-c", script], env=env, preexec_fn=die_with_parent).returncode


codes = ray.get(
    [
        node.options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=group, placement_group_bundle_index=rank
            )
        ).remote(rank)
        for rank in range(count)
    ]
)
failed = [(rank, code) for rank, code in enumerate(codes) if code != 0]
for rank, code in failed:
    print(f"tarn: the runner of node {rank} exited with {code}", flush=True)
sys.exit(1 if failed else 0)
