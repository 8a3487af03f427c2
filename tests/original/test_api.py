#!/usr/bin/env python3
"""The original system's own client test (its tests/test_api.py), step for step.

Like the original it uses `requests`: a token with HTTP Basic, `POST {BASE}upload` without a
trailing slash and without a body (asserts 200 and reads `folder`), then every `*.csv` of
./tests/data as a multipart `file` whose file name is the relative path (so the part's filename
is `./tests/data/dummy_<uuid>.csv`), with `X-MD5-Hash`, each asserted 200. The original then
slept 5 s and counted rows with its database driver; the Rust test that runs this script
(system-tests/tests/real_clients.rs) counts the rows in PostgreSQL exactly instead.

Settings come from the environment: INGEST_ORIGINAL_BASE (e.g. http://127.0.0.1:8080/api/),
INGEST_CLIENT_ID, INGEST_CLIENT_SECRET. Prints the folder on the last line of stdout.
"""

import glob
import hashlib
import os

import requests

BASE = os.environ["INGEST_ORIGINAL_BASE"]
CLIENT = (os.environ["INGEST_CLIENT_ID"], os.environ["INGEST_CLIENT_SECRET"])


def get_token():
    response = requests.post(f"{BASE}auth/token", auth=CLIENT)
    assert response.status_code == 200, response.text
    return response.json()["token"]


def create_folder(token):
    response = requests.post(f"{BASE}upload", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json()["folder"]


def upload_files(token, folder):
    files = sorted(glob.glob("./tests/data/*.csv"))
    assert files, "no CSV files in ./tests/data"
    for file_path in files:
        with open(file_path, "rb") as f:
            content = f.read()
        md5 = hashlib.md5(content).hexdigest()
        response = requests.post(
            f"{BASE}upload/{folder}",
            headers={"Authorization": f"Bearer {token}", "X-MD5-Hash": md5},
            files={"file": (file_path, content)},
        )
        assert response.status_code == 200, (file_path, response.status_code, response.text)
    return len(files)


if __name__ == "__main__":
    token = get_token()
    folder = create_folder(token)
    sent = upload_files(token, folder)
    print(f"uploaded {sent} files")
    print(folder)
