import argparse, os
import mlflow

parser = argparse.ArgumentParser()
parser.add_argument("--data")
parser.add_argument("--learning_rate", type=float)
parser.add_argument("--epochs", type=int)
parser.add_argument("--model_output")
args = parser.parse_args()

rows = sum(1 for _ in open(os.path.join(args.data, "iris.csv"))) - 1
loss = (args.learning_rate - 0.5) ** 2 + 1.0 / args.epochs
mlflow.log_metric("loss", loss)
with open(os.path.join(args.model_output, "model.txt"), "w") as f:
    f.write(f"lr={args.learning_rate} epochs={args.epochs} rows={rows}\n")
