"""Tarn's scoring server: Azure ML's online scoring contract in one file of standard-library
Python, run by `tarn replica` inside the deployment's environment.

- A scoring script (AZUREML_ENTRY_SCRIPT): its `init()` runs once before the server listens,
  its `run(raw_data)` gets each request body as text; what it returns is sent back as JSON.
- An MLflow model with no script (TARN_MLFLOW_MODEL): loaded with `mlflow.pyfunc`, fed
  `{"input_data": {"columns", "index", "data"}}` or MLflow's `dataframe_split`,
  `dataframe_records`, `inputs` and `instances`.
- `GET /` answers 200 once `init()` has finished (liveness and readiness), `POST /score` scores.
"""

import importlib.util
import json
import os
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 100 * 1024 * 1024


def load_script(path):
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("score", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["score"] = module
    spec.loader.exec_module(module)
    for name in ("init", "run"):
        if not callable(getattr(module, name, None)):
            raise SystemExit(f"the scoring script {path} has no {name}() function")
    return module


class BadRequest(Exception):
    pass


def mlflow_scorer(model_path):
    import mlflow.pyfunc
    import pandas as pd

    # MLflow refuses a model folder reached through a link; give it the real path.
    model = mlflow.pyfunc.load_model(os.path.realpath(model_path))

    def frame(value):
        if isinstance(value, dict) and "data" in value:
            return pd.DataFrame(
                data=value["data"], columns=value.get("columns"), index=value.get("index")
            )
        if isinstance(value, dict):
            return pd.DataFrame(value)
        return value

    def score(raw):
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise BadRequest(f"the request body is not JSON: {e}")
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        if "input_data" in body:
            data = frame(body["input_data"])
        elif "dataframe_split" in body:
            data = frame(body["dataframe_split"])
        elif "dataframe_records" in body:
            data = pd.DataFrame.from_records(body["dataframe_records"])
        elif "inputs" in body or "instances" in body:
            data = body.get("inputs", body.get("instances"))
            if isinstance(data, dict):
                data = {k: _array(v) for k, v in data.items()}
            else:
                data = _array(data)
        else:
            raise BadRequest(
                "expected one of input_data, dataframe_split, dataframe_records, inputs, instances"
            )
        return model.predict(data, params=body.get("params")) if body.get("params") else model.predict(data)

    return score


def _array(v):
    import numpy as np

    return np.asarray(v)


def to_json(result):
    def default(o):
        for attr in ("tolist", "to_dict"):
            f = getattr(o, attr, None)
            if callable(f):
                return f() if attr == "tolist" else f(orient="records")
        if hasattr(o, "item"):
            return o.item()
        return str(o)

    if hasattr(result, "to_dict") and hasattr(result, "columns"):
        result = result.to_dict(orient="records")
    return json.dumps(result, default=default)


def main():
    port = int(os.environ["PORT"])
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    script = os.environ.get("AZUREML_ENTRY_SCRIPT")
    if script:
        module = load_script(script)
        module.init()
        score = module.run
    else:
        score = mlflow_scorer(os.environ["TARN_MLFLOW_MODEL"])
    print(f"scoring server: init() done; listening on {host}:{port}", flush=True)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # One write per response, sent at once: headers and body in separate small writes
        # would wait out the router's delayed ACK on a kept-alive connection.
        wbufsize = 64 * 1024
        disable_nagle_algorithm = True

        def log_message(self, *args):  # one line per request would drown the log
            pass

        def reply(self, code, body, content_type="application/json"):
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.split("?")[0] in ("/", "/health", "/ready"):
                self.reply(200, "Healthy", "text/plain")
            else:
                self.reply(404, json.dumps({"error": f"no route {self.path}"}))

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.reply(413, json.dumps({"error": "the request body is too large"}))
                self.close_connection = True
                return
            raw = self.rfile.read(length).decode("utf-8", errors="replace")
            if self.path.split("?")[0] != "/score":
                self.reply(404, json.dumps({"error": f"no route {self.path}"}))
                return
            try:
                result = score(raw)
            except BadRequest as e:
                self.reply(400, json.dumps({"error": str(e)}))
                return
            except Exception as e:  # the user's run() failed: say why, keep serving
                traceback.print_exc()
                sys.stderr.flush()
                self.reply(500, json.dumps({"error": f"{type(e).__name__}: {e}"}))
                return
            self.reply(200, to_json(result))

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
