import argparse, csv, json, os

parser = argparse.ArgumentParser()
parser.add_argument("--training_data")
parser.add_argument("--notes")
parser.add_argument("--model_output")
args = parser.parse_args()

with open(os.path.join(args.training_data, "clean.csv")) as f:
    rows = list(csv.DictReader(f))
notes = open(args.notes).read().strip() if args.notes else ""
model = {"rows": len(rows), "species": sorted({r["species"] for r in rows}), "notes": notes}
os.makedirs(args.model_output or "outputs", exist_ok=True)
with open(os.path.join(args.model_output or "outputs", "model.json"), "w") as f:
    json.dump(model, f)
print("train:", json.dumps(model))
