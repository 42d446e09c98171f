#!/bin/sh
# Serve the model: ./start.sh [PORT] [--host 0.0.0.0] [--workers N]   (127.0.0.1:8000 unless told otherwise)
# Runs with $PYTHON (default: python3) — an environment holding requirements.txt.
set -e
cd "$(dirname "$0")"
PORT=8000
case "${1:-}" in ''|-*) ;; *) PORT=$1; shift ;; esac
exec "${PYTHON:-python3}" server.py --port "$PORT" "$@"
