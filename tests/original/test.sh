#!/usr/bin/env bash
# The original system's curl client test (its tests/test.sh), step for step: a token, then
# `POST /api/upload/` WITH the trailing slash, `token` and `folder` taken from the JSON with grep,
# each ./tests/data/*.csv sent with `--form "file=@\"$file\""` and the MD5 from
# `openssl md5 -binary | xxd -p`. Fails on any answer but 2xx. Prints the folder last.
#
# Environment: INGEST_ORIGINAL_BASE (e.g. http://127.0.0.1:8080/api/), INGEST_CLIENT_ID,
# INGEST_CLIENT_SECRET. Run from the directory holding tests/data.
set -euo pipefail
BASE=${INGEST_ORIGINAL_BASE%/}

token=$(curl -sS --fail -X POST -u "$INGEST_CLIENT_ID:$INGEST_CLIENT_SECRET" "$BASE/auth/token" |
    grep -o '"token": *"[^"]*"' | grep -o '"[^"]*"$' | tr -d '"')
folder=$(curl -sS --fail -X POST "$BASE/upload/" -H "Authorization: Bearer $token" |
    grep -o '"folder": *"[^"]*"' | grep -o '"[^"]*"$' | tr -d '"')
[ -n "$folder" ] || { echo "no folder in the answer" >&2; exit 1; }

for file in ./tests/data/*.csv; do
    md5=$(openssl md5 -binary "$file" | xxd -p)
    curl -sS --fail -X POST "$BASE/upload/$folder" \
        -H "Authorization: Bearer $token" \
        -H "X-MD5-Hash: $md5" \
        --form "file=@\"$file\"" >/dev/null
done
echo "$folder"
