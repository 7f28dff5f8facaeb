#!/usr/bin/env bash
# Run jobs.yaml as N = 4 shards side by side on four hosts with GNU parallel, then merge.
#
# DIR is one shared folder (NFS or the like) mounted at the same path on every host and on
# this one: it holds jobs.yaml and its songs, and each shard writes its state, its results
# (jobs.shard-I-of-4.results.yaml) and its stems there. Each host runs one shard at a time.
#
# The key is read on each host from KEY_FILE (owner-only). It is not sent with
# `parallel --env`, which would put its value in the ssh command line, visible in `ps`.
#
# Exit status: parallel's (the number of shards that failed; see shards.log for each one's
# exit code: 1 means some songs failed, 75 that a run still going holds that shard's state).

set -euo pipefail

SHARDS=4 # N: shards 0..N-1, one per host slot
HOSTS=1/render-1,1/render-2,1/render-3,1/render-4
DIR=/srv/catalogue
KEY_FILE='~/.config/batchpod/api-key'

status=0
parallel --sshlogin "$HOSTS" --joblog shards.log --tag --line-buffer --halt never \
    "cd $DIR && AUDIOPOD_API_KEY=\"\$(cat $KEY_FILE)\" batchpod run jobs.yaml --shard {}/$SHARDS --quiet" \
    ::: $(seq 0 $((SHARDS - 1))) || status=$?

# Merge what the shards wrote, even when some failed: their results say which songs.
cd "$DIR"
batchpod merge jobs.shard-*-of-"$SHARDS".results.yaml
exit "$status"
