"""A tiny "training" script for the examples: logs a score that depends on its arguments."""
import argparse

import mlflow

p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, default=0.1)
p.add_argument("--depth", type=int, default=3)
a = p.parse_args()
score = 1.0 - abs(a.lr - 0.05) * 5 - abs(a.depth - 4) * 0.05
for step in range(5):
    mlflow.log_metric("score", score * (step + 1) / 5, step=step)
mlflow.log_params({"lr": a.lr, "depth": a.depth})
print(f"lr={a.lr} depth={a.depth} score={score:.3f}")
