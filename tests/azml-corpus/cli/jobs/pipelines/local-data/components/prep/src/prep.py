import argparse, csv, os

parser = argparse.ArgumentParser()
parser.add_argument("--raw_data")
parser.add_argument("--clean_data")
args = parser.parse_args()

rows = []
for name in sorted(os.listdir(args.raw_data)):
    with open(os.path.join(args.raw_data, name)) as f:
        rows.extend(r for r in csv.DictReader(f) if r["species"])
with open(os.path.join(args.clean_data, "clean.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
print(f"prep: {len(rows)} rows")
