#!/bin/sh
# Upload benchmark of costplus-s3 against rclone and the AWS CLI on the same local S3 server.
# Installs the peers when missing: rclone from Debian, awscli from PyPI in a venv.
set -eu
cd "$(dirname "$0")/../../.."
if ! command -v rclone >/dev/null 2>&1; then
    apt-get install -y rclone >/dev/null
fi
if [ -z "${BENCH_AWS:-}" ] && ! command -v aws >/dev/null 2>&1; then
    venv="${TMPDIR:-/tmp}/costplus-bench-awscli"
    [ -x "$venv/bin/aws" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet awscli; }
    BENCH_AWS="$venv/bin/aws"
    export BENCH_AWS
fi
exec cargo bench -p costplus-s3 --bench upload "$@"
