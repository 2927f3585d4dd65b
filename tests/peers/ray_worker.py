"""A Ray worker node on this machine, joined to the head at GCS_ADDRESS, for the Ray backend's
tests (tests/peers/ray.rs). `ray start --address` refuses a second node on one machine unless
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1, and with that it moves the node to the machine's external
address; Ray's own node API (what `ray.cluster_utils.Cluster` uses for its tests) keeps it on
127.0.0.1. Every port is given, so that parallel tests' clusters never meet.

Usage: ray_worker.py GCS_ADDRESS NUM_CPUS NODE_MANAGER OBJECT_MANAGER AGENT_LISTEN AGENT_GRPC
       METRICS_EXPORT RUNTIME_ENV_AGENT MIN_WORKER_PORT MAX_WORKER_PORT
"""
import signal
import sys
import time

from ray._private.node import Node
from ray._private.parameter import RayParams

gcs, cpus, *ports = sys.argv[1:]
(node_manager, object_manager, agent_listen, agent_grpc, metrics_export, runtime_env_agent,
 min_worker, max_worker) = (int(p) for p in ports)
params = RayParams(
    gcs_address=gcs,
    node_ip_address="127.0.0.1",
    num_cpus=int(cpus),
    object_store_memory=100_000_000,
    node_manager_port=node_manager,
    object_manager_port=object_manager,
    dashboard_agent_listen_port=agent_listen,
    metrics_agent_port=agent_grpc,
    metrics_export_port=metrics_export,
    runtime_env_agent_port=runtime_env_agent,
    min_worker_port=min_worker,
    max_worker_port=max_worker,
)
# SIGTERM exits through atexit, where the node stops its raylet and agents.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
print("worker node", node.node_id, "up", flush=True)
while True:
    time.sleep(3600)
