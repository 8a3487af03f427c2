#!/usr/bin/env bash
# Throughput against engine processes and chunk store on this machine (docs/scaling.md): the same
# rows (spread over 12 months) uploaded by loadgen through one release gateway into a fresh
# database, loaded by 1, 2 or 3 release engine processes, with chunks in a shared directory or
# in a bucket of the S3 server `scripts/services` starts (moto). Prints one line per run: the
# client's time from the first request to "done", and rows/s.
#
#   bench/scale-out.sh                          # 1,000,000 rows, 2 rounds
#   ROWS=200000 ROUNDS=1 ENGINES="1 3" STORES=s3 bench/scale-out.sh
#   BIN_DIR=target/release bench/scale-out.sh   # binaries (default: built here)
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${ROWS:-1000000}
ROUNDS=${ROUNDS:-2}
ENGINES=${ENGINES:-1 2 3}
STORES=${STORES:-dir s3}
PARTITIONS=${PARTITIONS:-4}
CHUNK=${CHUNK:-8MiB}
PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
S3=${INGEST_TEST_S3_ENDPOINT:-http://127.0.0.1:9100}
DB_NAME=ingest_scale_bench
scripts/services >/dev/null
if [[ -z ${BIN_DIR:-} ]]; then
    cargo build --release -p gateway -p engine -p loadgen
    BIN_DIR=target/release
fi

work=$(mktemp -d -t ingest-scale.XXXXXX)
pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
}
cleanup() {
    stop_all
    psql "$PG_URL/postgres" -qX -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

"$BIN_DIR/loadgen" generate --num-records "$ROWS" --months 12 --seed 7 --out "$work/data" >/dev/null

export DATABASE_URL="$PG_URL/$DB_NAME" INGEST_PARTITIONS=$PARTITIONS RUST_LOG=warn
export INGEST_JWT_SECRET=scale-bench-signing-key-0123456789
export AWS_ENDPOINT_URL=$S3 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true

run() { # store engines round
    local store=$1 engines=$2 round=$3 name="scale-$1-$2-$3"
    psql "$PG_URL/postgres" -qX -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1
    export INGEST_STREAM_PREFIX=$name
    if [[ $store == s3 ]]; then
        curl -fsS -X PUT "$S3/$name" >/dev/null
    fi
    # A shared directory, or a bucket and a spool of each process's own.
    store_args() { # process
        if [[ $store == s3 ]]; then
            echo "--chunk-store=s3://$name/chunks --upload-dir=$work/$name/$1"
        else
            echo "--upload-dir=$work/$name/shared"
        fi
    }
    local port=$((18200 + RANDOM % 500))
    # shellcheck disable=SC2046 # the arguments are words without spaces
    "$BIN_DIR/gateway" --addr=127.0.0.1:$port --bootstrap-client=bench:bench-secret-123 \
        $(store_args gateway) >"$work/$name-gateway.log" 2>&1 &
    pids+=($!)
    for n in $(seq 1 "$engines"); do
        # shellcheck disable=SC2046
        "$BIN_DIR/engine" --addr=127.0.0.1:0 --engine-id="engine-$n" $(store_args "engine-$n") \
            >"$work/$name-engine-$n.log" 2>&1 &
        pids+=($!)
    done
    for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
        sleep 0.1
    done
    sleep 2 # the engines take their partitions
    local total
    total=$("$BIN_DIR/loadgen" upload --url "http://127.0.0.1:$port" --client-id bench \
        --client-secret bench-secret-123 --chunk-size "$CHUNK" --concurrency 4 "$work"/data/*.csv 2>&1 |
        sed -n 's/.*rows loaded \([0-9,]*\), rejected [0-9,]*, total \([0-9.]*\) s.*/\1 \2/p')
    local rows=${total% *} secs=${total#* }
    printf '%-4s engines=%s round=%s rows=%s secs=%s rows/s=%.0f\n' "$store" "$engines" "$round" \
        "$rows" "$secs" "$(echo "${rows//,/} / $secs" | bc -l)"
    stop_all
}

for round in $(seq 1 "$ROUNDS"); do
    for store in $STORES; do
        for engines in $ENGINES; do
            run "$store" "$engines" "$round"
        done
    done
done
