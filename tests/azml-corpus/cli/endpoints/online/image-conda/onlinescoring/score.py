import json, os, sys

def init():
    global scale
    path = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "weights.json")
    scale = json.load(open(path))["scale"]

def run(raw_data):
    data = json.loads(raw_data)["data"]
    return {"scaled": [scale * x for x in data], "python": sys.prefix != sys.base_prefix}
