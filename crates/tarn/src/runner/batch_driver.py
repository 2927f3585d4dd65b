"""Tarn's batch scoring driver: Azure ML's batch deployment contract in one file of
standard-library Python. `tarn runner` writes it next to a batch job and the job's command runs
it in the deployment's environment:

    python "$AZUREML_BATCH_DRIVER" --data <input> --model <model> --output <score folder>

The settings come as JSON in AZUREML_BATCH_SETTINGS (the server writes them from the
deployment). The input's files are split into mini-batches of `mini_batch_size` files. Each of
`max_concurrency_per_instance` worker processes imports the scoring script once, calls its
`init()`, then `run(mini_batch)` with a list of file paths per mini-batch; every element it
returns (list items or DataFrame rows) is one file scored and is appended as a row to
`output_file_name` in the output (`append_row`), or only counted (`summary_only`). A mini-batch
that raises, or runs past `timeout` seconds, is tried again up to `max_retries` times; then its
files count as failed. Once more files failed than `error_threshold` (-1: no limit), the job
stops and fails. An MLflow model with no script is scored by pyfunc, one file at a time (CSV,
Parquet or JSON lines), as rows `file,prediction`.

Ranks (`RANK`/`WORLD_SIZE`, one per instance) take every WORLD_SIZE-th mini-batch and share the
output file and the failure count through files locked with flock.
"""

import argparse
import csv
import fcntl
import importlib.util
import io
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import sys
import time
import traceback
import urllib.request

log = logging.getLogger("batch")


def settings():
    s = json.loads(os.environ.get("AZUREML_BATCH_SETTINGS") or "{}")
    s.setdefault("mini_batch_size", 10)
    s.setdefault("max_concurrency_per_instance", 1)
    s.setdefault("error_threshold", -1)
    s.setdefault("max_retries", 3)
    s.setdefault("timeout", 30)
    s.setdefault("output_action", "append_row")
    s.setdefault("output_file_name", "predictions.csv")
    s.setdefault("logging_level", "info")
    return s


def input_files(data):
    """Every file of the input, in a stable order (hidden files left out)."""
    if os.path.isfile(data):
        return [data]
    files = []
    for root, dirs, names in os.walk(data, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(os.path.join(root, n) for n in sorted(names) if not n.startswith("."))
    return files


# ---- the worker side: one process, one init(), many mini-batches -------------------------


def script_scorer(path):
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("batch_score", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["batch_score"] = module
    spec.loader.exec_module(module)
    for name in ("init", "run"):
        if not callable(getattr(module, name, None)):
            raise RuntimeError(f"the scoring script {path} has no {name}() function")
    module.init()

    def score(files):
        result = module.run(list(files))
        if result is None:
            raise RuntimeError(
                "run() returned None; it must return a list or a DataFrame with one element per file scored"
            )
        return rows_of(result), len(result)

    return score, getattr(module, "shutdown", None)


def rows_of(result):
    """What run() returned, as CSV text: DataFrame rows, or one line per list element."""
    if hasattr(result, "to_csv") and hasattr(result, "columns"):
        return result.to_csv(header=False, index=False)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for item in result:
        if isinstance(item, (list, tuple)):
            writer.writerow(item)
        else:
            text = str(item)
            out.write(text if text.endswith("\n") else text + "\n")
    return out.getvalue()


def mlflow_scorer(model_path):
    import mlflow.pyfunc
    import pandas as pd

    # MLflow refuses a model folder reached through a link; give it the real path.
    model = mlflow.pyfunc.load_model(os.path.realpath(model_path))

    def read(path):
        lower = path.lower()
        if lower.endswith(".parquet"):
            return pd.read_parquet(path)
        if lower.endswith(".json") or lower.endswith(".jsonl"):
            return pd.read_json(path, lines=True)
        if lower.endswith(".csv") or lower.endswith(".tsv") or lower.endswith(".txt"):
            return pd.read_csv(path, sep="\t" if lower.endswith(".tsv") else ",")
        raise RuntimeError(f"{path}: MLflow batch scoring reads CSV, Parquet or JSON lines files")

    def score(files):
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for path in files:
            predictions = model.predict(read(path))
            name = os.path.basename(path)
            if hasattr(predictions, "itertuples"):
                for row in predictions.itertuples(index=False):
                    writer.writerow([name, *row])
            else:
                for value in list(predictions):
                    writer.writerow([name, *(value if isinstance(value, (list, tuple)) else [value])])
        return out.getvalue(), len(files)

    return score, None


def worker(conn, opts, model_dir):
    os.environ["AZUREML_MODEL_DIR"] = model_dir
    try:
        if opts["scoring_script"]:
            score, shutdown = script_scorer(opts["scoring_script"])
        else:
            score, shutdown = mlflow_scorer(opts["model"])
    except BaseException:
        conn.send(("init_failed", traceback.format_exc()))
        return
    conn.send(("ready",))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            break
        if job is None:
            break
        index, files = job
        try:
            text, count = score(files)
            conn.send(("done", index, text, count))
        except BaseException:
            conn.send(("error", index, traceback.format_exc()))
    if callable(shutdown):
        shutdown()


# ---- the driver side -----------------------------------------------------------------------


class Shared:
    """State the ranks share: failed files and finished ranks, in a flock-ed JSON file."""

    def __init__(self, path):
        self.path = path

    def read(self):
        try:
            with open(self.path) as f:
                fcntl.flock(f, fcntl.LOCK_SH)
                text = f.read()
        except FileNotFoundError:
            return {}
        return json.loads(text) if text.strip() else {}

    def update(self, change):
        with open(self.path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            text = f.read()
            state = json.loads(text) if text.strip() else {}
            change(state)
            f.seek(0)
            f.truncate()
            f.write(json.dumps(state))
            return state


class Worker:
    def __init__(self, ctx, opts, model_dir):
        self.conn, child = multiprocessing.Pipe()
        self.proc = ctx.Process(target=worker, args=(child, opts, model_dir), daemon=True)
        self.proc.start()
        child.close()
        self.task = None  # (index, files, attempt, started)
        self.ready = False

    def stop(self):
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()


def append(path, text):
    if not text:
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(text if text.endswith("\n") else text + "\n")


def log_metrics(metrics):
    """Logs the summary on the job's MLflow run (the job is a run)."""
    uri, run = os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("MLFLOW_RUN_ID")
    if not uri or not run:
        return
    now = int(time.time() * 1000)
    body = {
        "run_id": run,
        "metrics": [{"key": k, "value": v, "timestamp": now, "step": 0} for k, v in metrics.items()],
    }
    request = urllib.request.Request(
        uri.rstrip("/") + "/api/2.0/mlflow/runs/log-batch",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": "Bearer " + os.environ.get("MLFLOW_TRACKING_TOKEN", ""),
        },
    )
    try:
        urllib.request.urlopen(request, timeout=10).read()
    except Exception as e:  # the scores are written; metrics are a convenience
        log.warning("could not log the summary metrics: %s", e)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    s = settings()
    logging.basicConfig(
        level=getattr(logging, s["logging_level"].upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stdout,
    )
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    here = os.path.dirname(os.path.abspath(__file__))

    # AZUREML_MODEL_DIR keeps the last segment of the model's registered path.
    model_dir = os.path.join(here, "batch_model")
    os.makedirs(model_dir, exist_ok=True)
    link = os.path.join(model_dir, s.get("model_name") or "model")
    if not os.path.lexists(link):
        try:
            os.symlink(os.path.abspath(args.model), link)
        except FileExistsError:
            pass  # another rank made it
    script = s.get("scoring_script")
    if script and not os.path.isfile(script):
        sys.exit(f"the scoring script {script!r} is not in the code folder")
    opts = {"scoring_script": os.path.abspath(script) if script else None, "model": args.model}
    os.makedirs(args.output, exist_ok=True)
    os.environ["AZUREML_BI_OUTPUT_PATH"] = args.output
    output_file = os.path.join(args.output, s["output_file_name"])

    files = input_files(args.data)
    size = max(1, int(s["mini_batch_size"]))
    batches = [files[i : i + size] for i in range(0, len(files), size)]
    mine = [i for i in range(len(batches)) if i % world == rank]
    tries = 1 + max(0, int(s["max_retries"]))
    timeout = float(s["timeout"]) if int(s["timeout"]) > 0 else None
    threshold = int(s["error_threshold"])
    shared = Shared(os.path.join(here, "batch_state.json"))
    log.info(
        "%d file(s) in %d mini-batch(es) of up to %d; rank %d of %d takes %d; %d worker(s)",
        len(files), len(batches), size, rank, world, len(mine), s["max_concurrency_per_instance"],
    )
    if not files:
        log.warning("the input %s has no files", args.data)

    ctx = multiprocessing.get_context("fork")
    concurrency = max(1, min(int(s["max_concurrency_per_instance"]), len(mine) or 1))
    workers = [Worker(ctx, opts, model_dir) for _ in range(concurrency)]
    queue = [(i, batches[i], 1) for i in mine]
    queue.reverse()  # pop() takes the lowest index first
    done_ok, failed_files, scored = 0, 0, 0
    failed_batches = []
    aborted = None

    def give_up(index, files, why):
        nonlocal failed_files
        failed_files += len(files)
        failed_batches.append(index)
        state = shared.update(lambda st: st.__setitem__("failed", st.get("failed", 0) + len(files)))
        log.error("mini-batch %d failed after %d tr%s: %s", index, tries, "y" if tries == 1 else "ies", why)
        if threshold >= 0 and state["failed"] > threshold:
            return f"{state['failed']} file(s) failed, more than error_threshold {threshold}"
        return None

    def retry_or_fail(w, why):
        index, files, attempt, _ = w.task
        w.task = None
        if attempt < tries:
            last = why.strip().splitlines()[-1] if why.strip() else why
            log.warning("mini-batch %d, try %d of %d failed: %s", index, attempt, tries, last)
            queue.append((index, files, attempt + 1))
            return None
        return give_up(index, files, why)

    try:
        while (queue or any(w.task for w in workers)) and not aborted:
            for w in workers:
                if w.ready and w.task is None and queue:
                    index, batch, attempt = queue.pop()
                    w.task = (index, batch, attempt, time.monotonic())
                    w.conn.send((index, batch))
            waits = [w.task[3] + timeout - time.monotonic() for w in workers if w.task and timeout]
            ready = multiprocessing.connection.wait(
                [w.conn for w in workers], timeout=max(0.0, min(waits)) if waits else None
            )
            for i, w in enumerate(workers):
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        msg = ("died",)
                    if msg[0] == "ready":
                        w.ready = True
                    elif msg[0] == "init_failed":
                        log.error("init() failed:\n%s", msg[1])
                        aborted = "the scoring script's init() failed"
                    elif msg[0] == "done":
                        _, index, text, count = msg
                        batch = w.task[1]
                        w.task = None
                        if s["output_action"] == "append_row":
                            append(output_file, text)
                        scored += min(count, len(batch))
                        done_ok += 1
                        log.info("mini-batch %d: %d of %d file(s) scored", index, count, len(batch))
                        if count < len(batch):
                            why = f"run() returned {count} result(s) for {len(batch)} file(s)"
                            aborted = give_up(index, batch[count:], why) or aborted
                    elif msg[0] == "error":
                        aborted = retry_or_fail(w, msg[2].rstrip()) or aborted
                    else:
                        code = w.proc.exitcode
                        w.stop()
                        if w.task:
                            aborted = retry_or_fail(w, f"the worker process died (exit code {code})") or aborted
                        elif not w.ready:
                            aborted = f"a worker process died while init() ran (exit code {code})"
                        workers[i] = Worker(ctx, opts, model_dir)
                elif w.task and timeout and time.monotonic() - w.task[3] > timeout:
                    w.stop()
                    aborted = retry_or_fail(w, f"run() took longer than the timeout of {timeout:g} s") or aborted
                    workers[i] = Worker(ctx, opts, model_dir)
            if not aborted and world > 1 and threshold >= 0:
                # Another rank may have crossed the error threshold.
                failed = shared.read().get("failed", 0)
                if failed > threshold:
                    aborted = f"{failed} file(s) failed, more than error_threshold {threshold}"
    finally:
        for w in workers:
            if w.task:  # stopped early: nobody waits for its answer
                w.stop()
                continue
            try:
                w.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for w in workers:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            w.stop()

    state = shared.update(
        lambda st: st.update(
            finished=st.get("finished", 0) + 1,
            scored=st.get("scored", 0) + scored,
            batches=st.get("batches", 0) + done_ok,
        )
    )
    log.info(
        "rank %d: %d mini-batch(es) done, %d file(s) scored, %d failed%s",
        rank, done_ok, scored, failed_files,
        f" (mini-batches {sorted(failed_batches)})" if failed_batches else "",
    )
    if state["finished"] == world or aborted:
        failed = state.get("failed", 0)
        print(
            f"batch scoring: {state['scored']} of {len(files)} file(s) scored, {failed} failed"
            + (f"; results in {s['output_file_name']}" if s["output_action"] == "append_row" else ""),
            flush=True,
        )
        log_metrics({"files_scored": state["scored"], "files_failed": failed, "mini_batches": len(batches)})
    if aborted:
        print(f"batch scoring stopped: {aborted}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
