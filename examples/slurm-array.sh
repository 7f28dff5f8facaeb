#!/bin/bash
# Run jobs.yaml as N = 4 shards side by side on a Slurm cluster (a job array), then merge.
#
# From the folder that holds jobs.yaml, with the key in the environment (sbatch hands the
# environment to the tasks, so the key is on no command line; Slurm keeps a copy with the
# job, which the cluster's admins can read):
#   read -rsp 'AudioPod key: ' AUDIOPOD_API_KEY && export AUDIOPOD_API_KEY
#   bash examples/slurm-array.sh      # submits the array, then a merge that waits for it
# or the shards alone: sbatch examples/slurm-array.sh
#
# Each array task I runs shard I/N with its own state and results
# (jobs.shard-I-of-4.results.yaml); stems go to the manifest's output_dir. A task that exits
# 75 found its shard locked by a run still going: submit that shard again later with
# `sbatch --array=I examples/slurm-array.sh`.
#
# N is SHARDS below, and --array must list 0..N-1 (tests/test_examples.py checks both).
#
#SBATCH --job-name=batchpod
#SBATCH --array=0-3
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --time=06:00:00
#SBATCH --output=batchpod-%A_%a.log

set -euo pipefail

SHARDS=4 # N: the --array line above must be 0-(N-1)

: "${AUDIOPOD_API_KEY:?set AUDIOPOD_API_KEY (the AudioPod API key) in this shell first}"

if [[ -z "${SLURM_ARRAY_TASK_ID:-}" ]]; then
    # Started by hand, not by Slurm: submit the array, then the merge. afterany waits for
    # every shard to end, including those that exit 1 because some songs failed.
    array=$(sbatch --parsable "$0")
    sbatch --parsable --dependency="afterany:${array%%;*}" --job-name=batchpod-merge \
        --wrap="batchpod merge jobs.shard-*-of-${SHARDS}.results.yaml"
    exit 0
fi

exec batchpod run jobs.yaml --shard "${SLURM_ARRAY_TASK_ID}/${SHARDS}"
