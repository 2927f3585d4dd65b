"""A FAKE Kubernetes API server, for the Kubernetes backend's tests only.

No real Kubernetes API server can be installed on the machines the tests run on (none is in
the package registries they reach), so this plays one: the subset of the API that Tarn uses
-- create / get / list / watch / replace / delete of Deployments, Jobs, Pods, Services,
Secrets and Events, pod logs, nodes,
`SelfSubjectAccessReview`, Azure ML's `InstanceType` resources, label and field selectors,
`AlreadyExists` / `NotFound` statuses, owner references (a Job's Secret goes with it) -- with
Kubernetes' own status semantics for Jobs and Pods. It also plays the job controller, the
scheduler and the kubelet: each Job gets its pods (one per index for an Indexed Job), each
pod is placed on a node whose free CPU and memory fit its requests and whose labels match its
`nodeSelector` (else it stays `Pending`, `Unschedulable`, with the scheduler's message), and
each placed pod's command runs as a local process, with the pod's environment (secrets and
the downward API resolved), so that a job really runs, logs to MLflow and completes. For
Deployments it plays the deployment controller (rolling updates with `maxSurge` /
`maxUnavailable`) and the kubelet of long-running pods: startup, readiness and liveness probes
(HTTP, with their delays, periods and thresholds), restarts with `CrashLoopBackOff`, graceful
deletion (`preStop` hook, SIGTERM, the grace period). Each pod gets its own loopback address
(127.x.y.z) as its pod IP, so replicas listen on the same port as on a cluster.

What it does NOT prove: images are not pulled (the command runs on this machine; an image
named under `unreachable.invalid/` fails to pull, to test the reason), no container isolation,
cgroups or memory limits (so no real `OOMKilled`), no admission, no real RBAC
(reviews are answered from the `deny` list), no ReplicaSets (a Deployment owns its pods), no
Service proxying (Tarn's router talks to pods' addresses), no networking beyond loopback.

Usage: fake_kube.py CONFIG.json -- prints `listening on PORT` once it serves. CONFIG has
`token` (the bearer token clients must send), `nodes` ([{name, cpu, memory, labels}]),
`instance_types` ({name: spec}, served as InstanceType resources; absent: the resource does
not exist), `deny` (["create secrets", ...]), `work_dir` (where pods' logs go) and
`image_path` ({image: PATH}: the only tools a pod of that image finds, to play an image
without, say, curl).
"""

import base64
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import urllib.request
from urllib.parse import parse_qs, urlparse

CONFIG = json.load(open(sys.argv[1]))
LOCK = threading.RLock()
OBJECTS = {}  # (plural, namespace, name) -> object
PROCESSES = {}  # pod uid -> Popen
STARTED = {}  # job uid -> when its pods were made (seconds)
VERSION = [0]

KINDS = {
    # plural: (apiVersion, kind)
    "deployments": ("apps/v1", "Deployment"),
    "jobs": ("batch/v1", "Job"),
    "pods": ("v1", "Pod"),
    "services": ("v1", "Service"),
    "secrets": ("v1", "Secret"),
    "events": ("v1", "Event"),
}


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def next_version():
    VERSION[0] += 1
    return str(VERSION[0])


def status(code, reason, message):
    return code, {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def quantity(q):
    q = str(q)
    for suffix, scale in [("Ki", 1024), ("Mi", 1024**2), ("Gi", 1024**3), ("m", 0.001),
                          ("k", 1e3), ("M", 1e6), ("G", 1e9)]:
        if q.endswith(suffix):
            return float(q[: -len(suffix)]) * scale
    return float(q)


def selected(obj, labels=None, fields=None):
    for term in filter(None, (labels or "").split(",")):
        key, _, value = term.partition("=")
        have = (obj["metadata"].get("labels") or {}).get(key)
        if have is None or ("=" in term and have != value):
            return False
    for term in filter(None, (fields or "").split(",")):
        key, _, value = term.partition("=")
        cur = obj
        for part in key.split("."):
            cur = (cur or {}).get(part) if isinstance(cur, dict) else None
        if cur != value:
            return False
    return True


def store(plural, namespace, obj):
    meta = obj.setdefault("metadata", {})
    meta.setdefault("uid", str(uuid.uuid4()))
    meta.setdefault("creationTimestamp", now())
    meta["namespace"] = namespace
    meta["resourceVersion"] = next_version()
    api_version, kind = KINDS[plural]
    obj["apiVersion"], obj["kind"] = api_version, kind
    OBJECTS[(plural, namespace, meta["name"])] = obj
    return obj


def event(namespace, kind, name, reason, message, type_="Warning"):
    key = ("events", namespace, f"{name}.{reason}")
    with LOCK:
        existing = OBJECTS.get(key)
        if existing:
            existing["count"] += 1
            existing["message"] = message
            existing["lastTimestamp"] = now()
            return
        store("events", namespace, {
            "metadata": {"name": f"{name}.{reason}"},
            "involvedObject": {"kind": kind, "name": name, "namespace": namespace},
            "reason": reason, "message": message, "type": type_, "count": 1,
            "firstTimestamp": now(), "lastTimestamp": now(),
        })


def kill(pod):
    proc = PROCESSES.pop(pod["metadata"]["uid"], None)
    if proc and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        threading.Timer(5, lambda: proc.poll() is None and os.killpg(proc.pid, signal.SIGKILL)).start()


def delete(plural, namespace, name):
    if plural == "pods":
        pod = OBJECTS.get((plural, namespace, name))
        if pod is not None and pod["spec"].get("restartPolicy", "Always") != "Never":
            return terminate(pod)
    obj = OBJECTS.pop((plural, namespace, name), None)
    if obj is None:
        return None
    if plural == "pods":
        kill(obj)
    uid = obj["metadata"]["uid"]
    # Garbage collection: what the object owns goes with it.
    for key, other in list(OBJECTS.items()):
        owners = other["metadata"].get("ownerReferences") or []
        if any(o.get("uid") == uid for o in owners):
            delete(key[0], key[1], key[2])
    return obj


# --- the job controller, the scheduler and the kubelet -------------------------------------

def pods_of(namespace, job_name):
    return [p for (pl, ns, _), p in OBJECTS.items()
            if pl == "pods" and ns == namespace and p["metadata"]["labels"].get("job-name") == job_name]


def make_pods(job):
    ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
    spec = job["spec"]
    indexed = spec.get("completionMode") == "Indexed"
    count = (spec.get("completions") or 1) if indexed else 1
    template = spec["template"]
    for index in range(count):
        labels = dict(template.get("metadata", {}).get("labels") or {})
        labels.update({"job-name": name, "batch.kubernetes.io/job-name": name})
        annotations = {}
        if indexed:
            annotations["batch.kubernetes.io/job-completion-index"] = str(index)
        pod_name = f"{name}-{index}-{uuid.uuid4().hex[:5]}" if indexed else f"{name}-{uuid.uuid4().hex[:5]}"
        store("pods", ns, {
            "metadata": {
                "name": pod_name, "labels": labels, "annotations": annotations,
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                                     "uid": job["metadata"]["uid"], "controller": True}],
            },
            "spec": json.loads(json.dumps(template["spec"])),
            "status": {"phase": "Pending", "conditions": []},
        })
    job["status"] = {"startTime": now(), "active": count}
    STARTED[job["metadata"]["uid"]] = time.time()


def used_on(node):
    cpu = mem = 0.0
    for (pl, _, _), p in OBJECTS.items():
        if pl == "pods" and p["spec"].get("nodeName") == node and p["status"]["phase"] in ("Pending", "Running"):
            for c in p["spec"]["containers"]:
                req = (c.get("resources") or {}).get("requests") or {}
                cpu += quantity(req.get("cpu", 0))
                mem += quantity(req.get("memory", 0))
    return cpu, mem


def schedule(pod):
    wanted_cpu = sum(quantity(((c.get("resources") or {}).get("requests") or {}).get("cpu", 0))
                     for c in pod["spec"]["containers"])
    wanted_mem = sum(quantity(((c.get("resources") or {}).get("requests") or {}).get("memory", 0))
                     for c in pod["spec"]["containers"])
    selector = pod["spec"].get("nodeSelector") or {}
    why = []
    for node in CONFIG["nodes"]:
        labels = node.get("labels") or {}
        if any(labels.get(k) != v for k, v in selector.items()):
            why.append("didn't match Pod's node affinity/selector")
            continue
        cpu, mem = used_on(node["name"])
        if cpu + wanted_cpu > quantity(node["cpu"]):
            why.append("Insufficient cpu")
            continue
        if mem + wanted_mem > quantity(node["memory"]):
            why.append("Insufficient memory")
            continue
        return node["name"], None
    counts = {}
    for w in why:
        counts[w] = counts.get(w, 0) + 1
    detail = ", ".join(f"{n} {w}" for w, n in sorted(counts.items()))
    return None, f"0/{len(CONFIG['nodes'])} nodes are available: {detail}."


def pod_env(pod, container):
    ns = pod["metadata"]["namespace"]
    # The image's environment: this machine's.
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    # An image whose tools are not this machine's (`image_path`: a folder with only them).
    image_path = (CONFIG.get("image_path") or {}).get(container.get("image", ""))
    if image_path:
        env["PATH"] = image_path
    env["HOSTNAME"] = pod["metadata"]["name"]
    index = pod["metadata"]["annotations"].get("batch.kubernetes.io/job-completion-index")
    if index is not None:
        env["JOB_COMPLETION_INDEX"] = index
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        source = var.get("valueFrom") or {}
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = OBJECTS.get(("secrets", ns, ref["name"]))
            if secret is None:
                raise LookupError(f'secret "{ref["name"]}" not found')
            env[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        elif "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            env[var["name"]] = {
                "spec.nodeName": pod["spec"].get("nodeName", ""),
                "metadata.name": pod["metadata"]["name"],
                "metadata.namespace": ns,
                "status.podIP": pod["status"].get("podIP", "127.0.0.1"),
            }.get(path, "")
    return env


def container_status(pod, state):
    c = pod["spec"]["containers"][0]
    pod["status"]["containerStatuses"] = [{
        "name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": "running" in state,
        "restartCount": 0, "state": state,
    }]


def start_container(pod, container, env):
    """Runs a container's command as a local process in a session of its own, its output
    appended to the pod's log, its volumes made as folders."""
    os.makedirs(CONFIG["work_dir"], exist_ok=True)
    log = open(os.path.join(CONFIG["work_dir"], f"{pod['metadata']['name']}.log"), "ab")
    for mount in container.get("volumeMounts") or []:
        os.makedirs(mount["mountPath"], exist_ok=True)
    proc = subprocess.Popen(
        (container.get("command") or []) + (container.get("args") or []),
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        cwd=container.get("workingDir") or CONFIG["work_dir"], start_new_session=True,
    )
    PROCESSES[pod["metadata"]["uid"]] = proc
    return proc


def run_pod(pod):
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    container = pod["spec"]["containers"][0]
    image = container.get("image", "")
    if image.startswith("unreachable.invalid/"):
        message = f'Back-off pulling image "{image}"'
        container_status(pod, {"waiting": {"reason": "ImagePullBackOff", "message": message}})
        event(ns, "Pod", name, "Failed", f'Failed to pull image "{image}": not found')
        return
    try:
        env = pod_env(pod, container)
    except LookupError as e:
        container_status(pod, {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}})
        return
    start_container(pod, container, env)
    pod["status"].update({"phase": "Running", "startTime": now(), "podIP": "127.0.0.1"})
    container_status(pod, {"running": {"startedAt": now()}})
    event(ns, "Pod", name, "Started", "Started container runner", "Normal")


def condition(job, type_, reason, message):
    job["status"].setdefault("conditions", []).append({
        "type": type_, "status": "True", "reason": reason, "message": message,
        "lastTransitionTime": now(), "lastProbeTime": now(),
    })
    job["status"]["active"] = 0
    job["status"]["completionTime" if type_ == "Complete" else "failedTime"] = now()


def finished(job):
    return any(c["status"] == "True" and c["type"] in ("Complete", "Failed")
               for c in (job.get("status") or {}).get("conditions") or [])


def tick():
    with LOCK:
        for (plural, ns, name), job in list(OBJECTS.items()):
            if plural != "jobs" or finished(job):
                continue
            if "status" not in job or not job["status"]:
                make_pods(job)
            pods = pods_of(ns, name)
            for pod in pods:
                st = pod["status"]
                if st["phase"] == "Pending":
                    if not pod["spec"].get("nodeName"):
                        node, message = schedule(pod)
                        if node is None:
                            st["conditions"] = [{"type": "PodScheduled", "status": "False",
                                                 "reason": "Unschedulable", "message": message}]
                            event(ns, "Pod", pod["metadata"]["name"], "FailedScheduling", message)
                            continue
                        pod["spec"]["nodeName"] = node
                        st["conditions"] = [{"type": "PodScheduled", "status": "True"}]
                        event(ns, "Pod", pod["metadata"]["name"], "Scheduled",
                              f"Successfully assigned {ns}/{pod['metadata']['name']} to {node}", "Normal")
                    run_pod(pod)
                elif st["phase"] == "Running":
                    proc = PROCESSES.get(pod["metadata"]["uid"])
                    code = proc.poll() if proc else None
                    if code is not None:
                        PROCESSES.pop(pod["metadata"]["uid"], None)
                        exit_code = code if code >= 0 else 128 - code
                        st["phase"] = "Succeeded" if code == 0 else "Failed"
                        container_status(pod, {"terminated": {
                            "exitCode": exit_code, "reason": "Completed" if code == 0 else "Error",
                            "finishedAt": now()}})
            spec, st = job["spec"], job["status"]
            deadline = spec.get("activeDeadlineSeconds")
            started = STARTED.get(job["metadata"]["uid"], time.time())
            if deadline is not None and time.time() - started > deadline:
                for pod in pods:
                    kill(pod)
                    if pod["status"]["phase"] in ("Pending", "Running"):
                        pod["status"]["phase"] = "Failed"
                condition(job, "Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
                event(ns, "Job", name, "DeadlineExceeded", "Job was active longer than specified deadline")
                continue
            failed = [p for p in pods if p["status"]["phase"] == "Failed"]
            succeeded = [p for p in pods if p["status"]["phase"] == "Succeeded"]
            st["failed"], st["succeeded"] = len(failed), len(succeeded)
            if len(failed) > (spec.get("backoffLimit") or 0):
                for pod in pods:
                    kill(pod)
                condition(job, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
                event(ns, "Job", name, "BackoffLimitExceeded", "Job has reached the specified backoff limit")
            elif pods and len(succeeded) == len(pods):
                condition(job, "Complete", None, None)
                job["status"]["conditions"][-1].pop("reason")
                job["status"]["conditions"][-1].pop("message")
            else:
                st["active"] = len(pods) - len(failed) - len(succeeded)


# --- the deployment controller and the kubelet of long-running pods -------------------------

# Each pod gets its own loopback address (Linux answers on all of 127/8), so that several
# replicas listen on the same port as they would on their own pod IPs; a random /16 per fake,
# as tests run several fakes at once.
IP_BASE = (random.randint(1, 254), random.randint(0, 254))
NEXT_IP = [2]


def next_pod_ip():
    n = NEXT_IP[0]
    NEXT_IP[0] += 1
    return f"127.{IP_BASE[0]}.{(IP_BASE[1] + n // 250) % 255}.{n % 250 + 2}"


def template_hash(template):
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def owned_pods(owner):
    uid = owner["metadata"]["uid"]
    return [p for (pl, _, _), p in OBJECTS.items() if pl == "pods"
            and any(o.get("uid") == uid for o in p["metadata"].get("ownerReferences") or [])]


def is_ready(pod):
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def terminating(pod):
    return "deletionTimestamp" in pod["metadata"]


def make_deployment_pod(d, hash_):
    ns, name = d["metadata"]["namespace"], d["metadata"]["name"]
    template = d["spec"]["template"]
    labels = dict(template.get("metadata", {}).get("labels") or {})
    labels["pod-template-hash"] = hash_
    pod = store("pods", ns, {
        "metadata": {
            "name": f"{name}-{hash_}-{uuid.uuid4().hex[:5]}", "labels": labels, "annotations": {},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                 "uid": d["metadata"]["uid"], "controller": True}],
        },
        "spec": json.loads(json.dumps(template["spec"])),
        "status": {"phase": "Pending", "conditions": []},
    })
    pod["spec"].setdefault("restartPolicy", "Always")
    threading.Thread(target=kubelet, args=(pod,), daemon=True).start()


def reconcile_deployment(d):
    """A rolling update as Kubernetes' deployment controller does it (without the ReplicaSet
    in between): pods of the current template up to `replicas` (`maxSurge` over it while old
    ones remain), old ones removed while `replicas - maxUnavailable` stay ready."""
    spec = d["spec"]
    hash_ = template_hash(spec["template"])
    replicas = spec.get("replicas", 1)
    live = [p for p in owned_pods(d) if not terminating(p)]
    new = [p for p in live if p["metadata"]["labels"].get("pod-template-hash") == hash_]
    old = [p for p in live if p not in new]
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    surge, unavailable = int(rolling.get("maxSurge", 1)), int(rolling.get("maxUnavailable", 0))
    if len(new) < replicas and len(new) + len(old) < replicas + max(surge, 1):
        make_deployment_pod(d, hash_)
    elif len(new) > replicas:
        extra = sorted(new, key=lambda p: (is_ready(p), p["metadata"]["creationTimestamp"]))
        terminate(extra[0])
    ready_new = sum(1 for p in new if is_ready(p))
    ready_old = sum(1 for p in old if is_ready(p))
    if old:
        unready_old = [p for p in old if not is_ready(p)]
        if unready_old:
            terminate(unready_old[0])
        elif ready_new + ready_old - 1 >= replicas - unavailable:
            terminate(old[0])
    ready = ready_new + ready_old
    d["status"] = {
        "observedGeneration": d["metadata"].get("generation", 1),
        "replicas": len(live), "updatedReplicas": len(new),
        "readyReplicas": ready, "availableReplicas": ready,
        "unavailableReplicas": max(replicas - ready, 0),
    }


def terminate(pod):
    """Graceful deletion: the pod is marked (routers take it out), its `preStop` hook runs, then
    SIGTERM, then SIGKILL after the grace period; the pod object goes when its process has."""
    if terminating(pod):
        return pod
    pod["metadata"]["deletionTimestamp"] = now()
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    pod["metadata"]["deletionGracePeriodSeconds"] = grace
    pod["metadata"]["resourceVersion"] = next_version()
    set_ready(pod, False)

    def finish():
        deadline = time.time() + grace
        proc = PROCESSES.get(pod["metadata"]["uid"])
        hook = (((pod["spec"]["containers"][0].get("lifecycle") or {}).get("preStop") or {})
                .get("exec") or {}).get("command")
        if proc and proc.poll() is None and hook:
            try:
                subprocess.run(hook, timeout=grace, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except (subprocess.TimeoutExpired, OSError):
                pass
        if proc and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=max(deadline - time.time(), 0.1))
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        with LOCK:
            PROCESSES.pop(pod["metadata"]["uid"], None)
            key = ("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
            if OBJECTS.get(key) is pod:
                del OBJECTS[key]

    threading.Thread(target=finish, daemon=True).start()
    return pod


def set_ready(pod, ready):
    st = pod["status"]
    conditions = [c for c in st.get("conditions") or [] if c["type"] not in ("Ready", "ContainersReady")]
    value = "True" if ready else "False"
    conditions += [{"type": "Ready", "status": value}, {"type": "ContainersReady", "status": value}]
    st["conditions"] = conditions
    for c in st.get("containerStatuses") or []:
        c["ready"] = ready


def probe(pod, spec):
    get = spec.get("httpGet") or {}
    url = f"http://{pod['status']['podIP']}:{get.get('port')}{get.get('path', '/')}"
    try:
        with urllib.request.urlopen(url, timeout=spec.get("timeoutSeconds", 1)) as r:
            return 200 <= r.status < 400
    except Exception:
        return False


def kubelet(pod):
    """Runs a long-running pod's container as a local process: starts it, probes it (startup,
    then readiness and liveness, with their delays, periods and thresholds), restarts it when
    it exits or fails its liveness probe (restartCount, CrashLoopBackOff with a doubling
    back-off), until the pod is deleted."""
    ns, name, uid = pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"]
    container = pod["spec"]["containers"][0]
    restarts = 0
    while True:
        with LOCK:
            if terminating(pod) or OBJECTS.get(("pods", ns, name)) is not pod:
                return
            if not pod["spec"].get("nodeName"):
                node, message = schedule(pod)
                if node is None:
                    pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "False",
                                                    "reason": "Unschedulable", "message": message}]
                    event(ns, "Pod", name, "FailedScheduling", message)
                    node = None
                else:
                    pod["spec"]["nodeName"] = node
                    pod["status"]["podIP"] = next_pod_ip()
        if not pod["spec"].get("nodeName"):
            time.sleep(1)
            continue
        with LOCK:
            if terminating(pod):
                return
            before = (pod["status"].get("containerStatuses") or [{}])[0]
            image = container.get("image", "")
            if image.startswith("unreachable.invalid/"):
                container_status(pod, {"waiting": {"reason": "ImagePullBackOff",
                                                   "message": f'Back-off pulling image "{image}"'}})
                event(ns, "Pod", name, "Failed", f'Failed to pull image "{image}": not found')
                return
            try:
                env = pod_env(pod, container)
            except LookupError as e:
                container_status(pod, {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}})
                env = None
            if env is not None:
                proc = start_container(pod, container, env)
                pod["status"].update({"phase": "Running", "startTime": pod["status"].get("startTime", now())})
                pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"}]
                container_status(pod, {"running": {"startedAt": now()}})
                pod["status"]["containerStatuses"][0]["restartCount"] = restarts
                if before.get("lastState"):
                    pod["status"]["containerStatuses"][0]["lastState"] = before["lastState"]
                set_ready(pod, False)
                pod["metadata"]["resourceVersion"] = next_version()
                event(ns, "Pod", name, "Started", "Started container " + container["name"], "Normal")
        if env is None:
            time.sleep(0.2)  # the kubelet tries again (the Secret may come after the pod)
            continue
        startup, readiness, liveness = (container.get(k) for k in ("startupProbe", "readinessProbe", "livenessProbe"))
        began = time.time()
        started = startup is None
        first = startup or readiness or {}
        due = {"startup": began + first.get("initialDelaySeconds", 0)}
        failures = {"startup": 0, "readiness": 0, "liveness": 0}
        killed_by = None
        while proc.poll() is None and not terminating(pod):
            time.sleep(0.05)
            t = time.time()
            if not started:
                if t < due["startup"]:
                    continue
                if probe(pod, startup):
                    started = True
                    due = {"readiness": t, "liveness": t + liveness.get("periodSeconds", 10) if liveness else None}
                else:
                    failures["startup"] += 1
                    due["startup"] = t + startup.get("periodSeconds", 10)
                    if failures["startup"] >= startup.get("failureThreshold", 3):
                        killed_by = "Startup probe failed"
                        os.killpg(proc.pid, signal.SIGKILL)
                continue
            if readiness and t >= due.get("readiness", t):
                ok = probe(pod, readiness)
                failures["readiness"] = 0 if ok else failures["readiness"] + 1
                with LOCK:
                    if not terminating(pod):
                        if ok and not is_ready(pod):
                            set_ready(pod, True)
                            pod["metadata"]["resourceVersion"] = next_version()
                        elif not ok and failures["readiness"] >= readiness.get("failureThreshold", 3):
                            set_ready(pod, False)
                due["readiness"] = t + readiness.get("periodSeconds", 10)
            elif not readiness and not is_ready(pod):
                with LOCK:
                    set_ready(pod, True)
            if liveness and due.get("liveness") and t >= due["liveness"]:
                ok = probe(pod, liveness)
                failures["liveness"] = 0 if ok else failures["liveness"] + 1
                if failures["liveness"] >= liveness.get("failureThreshold", 3):
                    killed_by = "Liveness probe failed"
                    os.killpg(proc.pid, signal.SIGKILL)
                due["liveness"] = t + liveness.get("periodSeconds", 10)
        if terminating(pod):
            return
        code = proc.wait()
        restarts += 1
        back_off = min(2 ** (restarts - 1), 10)
        with LOCK:
            PROCESSES.pop(uid, None)
            exit_code = code if code >= 0 else 128 - code
            set_ready(pod, False)
            container_status(pod, {"waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {back_off}s restarting failed container={container['name']} pod={name}"}})
            pod["status"]["containerStatuses"][0]["restartCount"] = restarts
            pod["status"]["containerStatuses"][0]["lastState"] = {"terminated": {
                "exitCode": exit_code, "reason": "Error", "finishedAt": now()}}
            pod["metadata"]["resourceVersion"] = next_version()
            if killed_by:
                event(ns, "Pod", name, "Unhealthy", f"{killed_by}; container will be restarted")
            event(ns, "Pod", name, "BackOff", "Back-off restarting failed container")
        stop_at = time.time() + back_off
        while time.time() < stop_at and not terminating(pod):
            time.sleep(0.05)


def controller():
    while True:
        try:
            tick()
            with LOCK:
                for (plural, _, _), d in list(OBJECTS.items()):
                    if plural == "deployments":
                        reconcile_deployment(d)
        except Exception as e:  # a fake that stops ticking would hang every test
            print(f"fake kube: {e!r}", file=sys.stderr, flush=True)
        time.sleep(0.1)


# --- the API --------------------------------------------------------------------------------

def node_object(node):
    alloc = {"cpu": str(node["cpu"]), "memory": str(node["memory"]), "pods": "110"}
    if node.get("gpu"):
        alloc["nvidia.com/gpu"] = str(node["gpu"])
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node["name"], "labels": node.get("labels") or {}, "uid": node["name"]},
        "spec": {"unschedulable": bool(node.get("cordoned"))},
        "status": {"allocatable": alloc, "capacity": alloc,
                   "conditions": [{"type": "Ready", "status": "False" if node.get("down") else "True"}]},
    }


def route(method, path, query, body):
    parts = [p for p in path.split("/") if p]
    if path == "/version":
        return 200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "gitCommit": "fake",
                     "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go",
                     "compiler": "gc", "platform": "linux/amd64"}
    if path == "/api/v1/nodes":
        return 200, {"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": next_version()},
                     "items": [node_object(n) for n in CONFIG["nodes"]]}
    if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" and method == "POST":
        attrs = body["spec"].get("resourceAttributes") or {}
        allowed = f"{attrs.get('verb')} {attrs.get('resource')}" not in CONFIG.get("deny", [])
        body["status"] = {"allowed": allowed}
        body.setdefault("metadata", {})
        return 201, body
    if path == "/apis/amlarc.azureml.com/v1alpha1/instancetypes":
        if "instance_types" not in CONFIG:
            return status(404, "NotFound", "the server could not find the requested resource")
        return 200, {"apiVersion": "amlarc.azureml.com/v1alpha1", "kind": "InstanceTypeList",
                     "metadata": {"resourceVersion": next_version()},
                     "items": [{"apiVersion": "amlarc.azureml.com/v1alpha1", "kind": "InstanceType",
                                "metadata": {"name": n}, "spec": s}
                               for n, s in CONFIG["instance_types"].items()]}
    # /api/v1/namespaces/NS/PLURAL[/NAME] or /apis/GROUP/VERSION/namespaces/NS/PLURAL[/NAME]
    rest = parts[2:] if parts[:2] == ["api", "v1"] else parts[3:] if parts[:1] == ["apis"] else []
    if len(rest) < 3 or rest[0] != "namespaces" or rest[2] not in KINDS:
        return status(404, "NotFound", f"the server could not find the requested resource ({path})")
    ns, plural = rest[1], rest[2]
    name = rest[3] if len(rest) > 3 else None
    if len(rest) == 5 and plural == "pods" and rest[4] == "log" and method == "GET":
        with LOCK:
            if ("pods", ns, name) not in OBJECTS:
                return status(404, "NotFound", f'pods "{name}" not found')
        try:
            text = open(os.path.join(CONFIG["work_dir"], f"{name}.log"), "rb").read().decode(errors="replace")
        except FileNotFoundError:
            text = ""
        tail = int(query.get("tailLines", ["0"])[0] or 0)
        if tail:
            text = "".join(text.splitlines(keepends=True)[-tail:])
        return 200, text
    if len(rest) > 4:
        return status(404, "NotFound", f"the server could not find the requested resource ({path})")
    with LOCK:
        if method == "PUT" and name is not None:
            existing = OBJECTS.get((plural, ns, name))
            if existing is None:
                return status(404, "NotFound", f'{plural} "{name}" not found')
            sent = body.get("metadata", {}).get("resourceVersion")
            if sent and sent != existing["metadata"]["resourceVersion"]:
                return status(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": '
                              "the object has been modified; please apply your changes to the latest version and try again")
            meta = body.setdefault("metadata", {})
            for k in ("uid", "creationTimestamp", "generation"):
                if k in existing["metadata"]:
                    meta[k] = existing["metadata"][k]
            if plural == "deployments":
                if body.get("spec") != existing.get("spec"):
                    meta["generation"] = existing["metadata"].get("generation", 1) + 1
                body["status"] = existing.get("status", {})
            if plural == "secrets" and "stringData" in body:
                data = body.setdefault("data", {})
                for k, v in body.pop("stringData").items():
                    data[k] = base64.b64encode(v.encode()).decode()
            return 200, store(plural, ns, body)
        if method == "POST" and name is None:
            obj_name = body.get("metadata", {}).get("name")
            if (plural, ns, obj_name) in OBJECTS:
                return status(409, "AlreadyExists", f'{plural} "{obj_name}" already exists')
            if plural == "secrets" and "stringData" in body:
                data = body.setdefault("data", {})
                for k, v in body.pop("stringData").items():
                    data[k] = base64.b64encode(v.encode()).decode()
            if plural == "deployments":
                body.setdefault("metadata", {})["generation"] = 1
            return 201, store(plural, ns, body)
        if method == "GET" and name is None:
            labels = query.get("labelSelector", [""])[0]
            fields = query.get("fieldSelector", [""])[0]
            items = [o for (pl, n, _), o in OBJECTS.items() if pl == plural and n == ns and selected(o, labels, fields)]
            api_version, kind = KINDS[plural]
            return 200, {"apiVersion": api_version, "kind": kind + "List",
                         "metadata": {"resourceVersion": next_version()}, "items": items}
        if name is None:
            return status(405, "MethodNotAllowed", f"{method} is not allowed on {plural}")
        if method == "GET":
            obj = OBJECTS.get((plural, ns, name))
            if obj is None:
                return status(404, "NotFound", f'{plural} "{name}" not found')
            return 200, obj
        if method == "DELETE":
            obj = delete(plural, ns, name)
            if obj is None:
                return status(404, "NotFound", f'{plural} "{name}" not found')
            return 200, obj
    return status(405, "MethodNotAllowed", f"{method} is not allowed")


WATCHES = {}  # plural -> watches opened (GET /fake/watches)


def watched(path):
    """(namespace, plural) of a watchable collection path, else None."""
    parts = [p for p in path.split("/") if p]
    rest = parts[2:] if parts[:2] == ["api", "v1"] else parts[3:] if parts[:1] == ["apis"] else []
    if len(rest) == 3 and rest[0] == "namespaces" and rest[2] in KINDS:
        return rest[1], rest[2]
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def watch(self, namespace, plural, query):
        """A watch: ADDED / MODIFIED / DELETED events, one JSON object a line, for what changes
        from now on, until `timeoutSeconds`."""
        labels = query.get("labelSelector", [""])[0]
        fields = query.get("fieldSelector", [""])[0]
        end = time.time() + int(query.get("timeoutSeconds", ["290"])[0])
        WATCHES[plural] = WATCHES.get(plural, 0) + 1

        def snapshot():
            with LOCK:
                return {n: json.dumps(o, sort_keys=True) for (pl, ns, n), o in OBJECTS.items()
                        if pl == plural and ns == namespace and selected(o, labels, fields)}

        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        seen = snapshot()
        try:
            while time.time() < end:
                time.sleep(0.05)
                current = snapshot()
                events = [("ADDED" if n not in seen else "MODIFIED", text)
                          for n, text in current.items() if seen.get(n) != text]
                events += [("DELETED", text) for n, text in seen.items() if n not in current]
                seen = current
                for type_, text in events:
                    line = ('{"type": "%s", "object": %s}\n' % (type_, text)).encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlparse(self.path)
        query = parse_qs(url.query)
        authorized = self.headers.get("Authorization") == f"Bearer {CONFIG['token']}"
        target = watched(url.path)
        if authorized and self.command == "GET" and query.get("watch", [""])[0] in ("true", "1") and target:
            return self.watch(target[0], target[1], query)
        if url.path == "/fake/watches":
            code, answer = 200, dict(WATCHES)
        elif not authorized:
            code, answer = status(401, "Unauthorized", "Unauthorized")
        else:
            try:
                body = json.loads(raw) if raw else {}
                code, answer = route(self.command, url.path, query, body)
            except Exception as e:
                code, answer = status(500, "InternalError", repr(e))
        text = isinstance(answer, str)
        data = answer.encode() if text else json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = handle_any

    def log_message(self, *args):
        pass


def stop(*_):
    with LOCK:
        for proc in PROCESSES.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    os._exit(0)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = ThreadingHTTPServer(("127.0.0.1", CONFIG.get("port", 0)), Handler)
    threading.Thread(target=controller, daemon=True).start()
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()
