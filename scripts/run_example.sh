#!/usr/bin/env bash
# `make run`: start the embedded stack (stellwerk dev), run one workflow file, print its results,
# stop the stack. Exits with the workflow's exit code.
set -euo pipefail
cd "$(dirname "$0")/.."
workflow="${1:-examples/simple_mcp_workflow.yaml}"
bin=.venv/bin
log="$(mktemp)"
# The ready line is the only thing `stellwerk dev` prints on stdout; service logs go to stderr.
"$bin/stellwerk" dev >"$log" 2>"$log.err" &
dev=$!
cleanup() {
  kill -TERM "$dev" 2>/dev/null || true
  wait "$dev" 2>/dev/null || true
  rm -f "$log" "$log.err"
}
trap cleanup EXIT
for _ in $(seq 1 600); do
  if grep -q "ready" "$log"; then break; fi
  if ! kill -0 "$dev" 2>/dev/null; then cat "$log" "$log.err" >&2; echo "stellwerk dev exited early" >&2; exit 1; fi
  sleep 0.1
done
grep -q "ready" "$log" || { cat "$log" "$log.err" >&2; echo "stellwerk dev not ready after 60 s" >&2; exit 1; }
grep "ready" "$log"
status=0
"$bin/stellwerk" run "$workflow" || status=$?
exit "$status"
