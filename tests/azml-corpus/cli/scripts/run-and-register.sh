#!/usr/bin/env bash
# Drives Tarn the way example repositories drive `az ml`: each command's answer comes back
# through `--query … -o tsv` into a shell variable. `tarn` takes the place of `az ml`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

run_id=$(tarn job create -f "$here/../jobs/basics/hello-job.yml" --query name -o tsv)
echo "submitted $run_id"
tarn job stream -n "$run_id" > /dev/null
status=$(tarn job show -n "$run_id" --query status -o tsv)
if [[ "$status" != "Completed" ]]; then
  echo "job $run_id ended $status" >&2
  exit 1
fi

tarn model create --name hello-model --type custom_model \
  --path "azureml://jobs/$run_id/outputs/artifacts/paths/outputs/" > /dev/null
version=$(tarn model show --name hello-model --label latest --query version -o tsv)

tarn data create --name hello-data --type uri_file --path "$here/../jobs/pipelines/local-data/notes.txt" > /dev/null
data_version=$(tarn data show -n hello-data --label latest --query version -o tsv)

cpu=$(tarn compute create --name cpu-cluster --type amlcompute --min-instances 0 --max-instances 2 --query name -o tsv)
echo "model hello-model:$version data hello-data:$data_version compute $cpu from $run_id"
