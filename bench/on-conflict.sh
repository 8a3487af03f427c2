#!/usr/bin/env bash
# What `on_conflict = "skip"` costs against a plain COPY: the same product rows loaded through a
# release gateway and engine into `products` (unique key `sku`, COPY into a staging table, then
# INSERT ... ON CONFLICT DO NOTHING), into `products_keyed` (the same unique key, COPY straight
# into the table: what the index alone costs) and into `products_plain` (no key), in turn, each
# into a fresh database; then the same upload sent to `products` again, where every row is a
# duplicate and skipped. Times are the ledger's (upload created -> done).
#
#   bench/on-conflict.sh                 # 1,000,000 rows, 3 rounds
#   ROWS=200000 ROUNDS=1 bench/on-conflict.sh
#   BIN_DIR=target/release bench/on-conflict.sh   # binaries (default: built here)
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${ROWS:-1000000}
ROUNDS=${ROUNDS:-3}
CHUNKS=${CHUNKS:-8}
PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
DB_NAME=ingest_conflict_bench
scripts/services >/dev/null
if [[ -z ${BIN_DIR:-} ]]; then
    cargo build --release -p gateway -p engine
    BIN_DIR=target/release
fi

work=$(mktemp -d -t ingest-conflict.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql "$PG_URL/postgres" -qX -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/datasets"
cp datasets/products.toml "$work/datasets/"
sed -e 's/^name = "products"/name = "products_plain"/' -e 's/^table = "products"/table = "products_plain"/' \
    -e '/^unique_key/d' -e '/^on_conflict/d' datasets/products.toml >"$work/datasets/products_plain.toml"
sed -e 's/^name = "products"/name = "products_keyed"/' -e 's/^table = "products"/table = "products_keyed"/' \
    -e '/^on_conflict/d' datasets/products.toml >"$work/datasets/products_keyed.toml"

# The rows, cut into CHUNKS files at row boundaries; the header in the first.
awk -v rows="$ROWS" -v chunks="$CHUNKS" -v dir="$work" 'BEGIN {
    per = int((rows + chunks - 1) / chunks)
    for (i = 0; i < rows; i++) {
        file = sprintf("%s/chunk-%d.csv", dir, int(i / per))
        if (i % per == 0 && i == 0) print "sku,name,price,stock,active,released_on" > file
        printf "SKU-%08d,Product number %d,%d.%02d,%d,%s,2024-%02d-%02d\n", i, i, i % 1000, i % 100, i % 500, (i % 3 ? "yes" : "no"), i % 12 + 1, i % 28 + 1 > file
    }
}'
bytes=$(cat "$work"/chunk-*.csv | wc -c)
echo "on-conflict: $ROWS rows, $((bytes / 1048576)) MiB in $CHUNKS chunks"

export DATABASE_URL="$PG_URL/$DB_NAME" INGEST_DATASETS_DIR="$work/datasets"
export INGEST_UPLOAD_DIR="$work/uploads" INGEST_STREAM_PREFIX="conflict-$RANDOM$RANDOM"
export INGEST_JWT_SECRET=on-conflict-bench-signing-key INGEST_BOOTSTRAP_CLIENT=bench:bench-secret-123
export INGEST_RATELIMIT_PREFIX="$INGEST_STREAM_PREFIX:rl:" INGEST_UPLOAD_SETTLE_SECS=1
GATEWAY=127.0.0.1:18500
ENGINE=127.0.0.1:19500

start_stack() {
    psql "$PG_URL/postgres" -qX -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null
    "$BIN_DIR/gateway" migrate >"$work/migrate.log" 2>&1
    "$BIN_DIR/engine" --addr "$ENGINE" >>"$work/engine.log" 2>&1 &
    pids+=($!)
    "$BIN_DIR/gateway" --addr "$GATEWAY" >>"$work/gateway.log" 2>&1 &
    pids+=($!)
    until curl -sf "http://$GATEWAY/health" >/dev/null && curl -sf "http://$ENGINE/health" >/dev/null; do
        sleep 0.2
    done
    token=$(curl -sf -u bench:bench-secret-123 -X POST "http://$GATEWAY/api/auth/token" | sed 's/.*"token":"\([^"]*\)".*/\1/')
}

stop_stack() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
}

load() { # dataset -> "seconds loaded skipped"
    local folder n
    folder=$(curl -sf -H "Authorization: Bearer $token" -H 'content-type: application/json' \
        -d "{\"dataset\": \"$1\", \"expected_chunks\": $CHUNKS}" "http://$GATEWAY/api/upload" |
        sed 's/.*"folder":"\([^"]*\)".*/\1/')
    # The header chunk first (the upload's header), then the rest four at a time.
    curl -sf -o /dev/null -X PUT -H "Authorization: Bearer $token" -H 'content-type: text/csv' \
        --data-binary "@$work/chunk-0.csv" "http://$GATEWAY/api/upload/$folder/chunks/0"
    for ((n = 1; n < CHUNKS; n++)); do echo "$n"; done |
        xargs -P 4 -I{} curl -sf -o /dev/null -X PUT -H "Authorization: Bearer $token" \
            -H 'content-type: text/csv' --data-binary "@$work/chunk-{}.csv" \
            "http://$GATEWAY/api/upload/$folder/chunks/{}"
    until psql "$DATABASE_URL" -qtAX -c "SELECT state FROM uploads WHERE upload_id = '$folder'" |
        grep -qE 'done|failed'; do
        sleep 0.05
    done
    psql "$DATABASE_URL" -qtAX -F ' ' -c "SELECT round(extract(epoch FROM completed_at - created_at)::numeric, 2),
        rows_loaded, rows_skipped, state FROM uploads WHERE upload_id = '$folder'"
}

for ((round = 1; round <= ROUNDS; round++)); do
    for dataset in products_plain products_keyed products; do
        start_stack
        read -r took loaded skipped state <<<"$(load "$dataset")"
        echo "round $round: $dataset (fresh table): ${took}s, loaded $loaded, skipped $skipped, $state"
        if [[ $dataset == products ]]; then
            read -r took loaded skipped state <<<"$(load products)"
            echo "round $round: products again (every row a duplicate): ${took}s, loaded $loaded, skipped $skipped, $state"
        fi
        stop_stack
    done
done
