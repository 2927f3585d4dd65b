import argparse, os
p = argparse.ArgumentParser()
p.add_argument("--rows", type=int)
p.add_argument("--out")
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
with open(os.path.join(a.out, "rows.txt"), "w") as f:
    f.write("\n".join(str(i) for i in range(a.rows)))
print(f"prepared {a.rows} rows with the registry's component")
