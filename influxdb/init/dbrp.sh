#!/bin/bash
# InfluxDB 2 answers InfluxQL (the dashboards' query language) through its v1
# compatibility API, which looks data up by database and retention policy.
# This maps the database named like the bucket, retention policy autogen, to
# the bucket. The influxdb image runs the executable *.sh files in
# /docker-entrypoint-initdb.d once, right after its first-start setup, with
# the influx CLI already holding the admin token and the DOCKER_INFLUXDB_INIT_*
# variables set (the bucket's ID among them).

if [ -z "${DOCKER_INFLUXDB_INIT_BUCKET_ID:-}" ]; then
    # Not InfluxDB 2's first-start setup (InfluxDB 1.8's image sources the
    # scripts of this directory too): there is no bucket to map.
    echo "dbrp.sh: DOCKER_INFLUXDB_INIT_BUCKET_ID is not set, no DBRP mapping made" >&2
    return 0 2>/dev/null || exit 0
fi
set -euo pipefail

influx v1 dbrp create \
    --org "${DOCKER_INFLUXDB_INIT_ORG}" \
    --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
    --db "${DOCKER_INFLUXDB_INIT_BUCKET}" \
    --rp autogen \
    --default
