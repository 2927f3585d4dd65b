"""The quickstart's training script: a scikit-learn classifier for the iris dataset, tracked
with MLflow (the job is the run: no start_run needed) and saved as an MLflow model in
./outputs/model, which Tarn uploads with the job's artifacts."""

import argparse

import mlflow
import mlflow.sklearn
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)
parser.add_argument("--C", type=float, default=1.0)
parser.add_argument("--max_iter", type=int, default=200)
args = parser.parse_args()

frame = pd.read_csv(args.data)
features = frame.drop(columns=["species"])
train_x, test_x, train_y, test_y = train_test_split(
    features, frame["species"], test_size=0.3, random_state=42, stratify=frame["species"]
)
mlflow.log_params({"C": args.C, "max_iter": args.max_iter, "rows": len(frame)})
model = LogisticRegression(C=args.C, max_iter=args.max_iter).fit(train_x, train_y)
predicted = model.predict(test_x)
accuracy = accuracy_score(test_y, predicted)
mlflow.log_metric("accuracy", accuracy)
mlflow.log_metric("f1_macro", f1_score(test_y, predicted, average="macro"))
print(f"accuracy on {len(test_x)} held-out rows: {accuracy:.3f}")
mlflow.sklearn.save_model(
    model,
    "outputs/model",
    serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
    input_example=test_x.head(2),
)
print("saved the MLflow model to outputs/model")
