import csv, os, sys

clean, out = sys.argv[1], sys.argv[2]
with open(os.path.join(clean, "clean.csv")) as f:
    n = sum(1 for _ in csv.DictReader(f))
with open(os.path.join(out, "summary.txt"), "w") as f:
    f.write(f"{n} rows\n")
print(f"summarise: {n} rows")
