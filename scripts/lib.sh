# Shared helpers for the scripts: timed stages with a summary.
STAGE_LOG=${STAGE_LOG:-/tmp/grimbots-stages.log}

stage() {
  # stage NAME COMMAND...: run a command, print its duration, record it for the summary.
  local name=$1; shift
  local start=$SECONDS
  echo "::: stage $name: start ($(date -u +%H:%M:%S))"
  if "$@"; then
    echo "::: stage $name: ok in $((SECONDS - start)) s" | tee -a "$STAGE_LOG"
  else
    local rc=$?
    echo "::: stage $name: FAILED (rc=$rc) after $((SECONDS - start)) s" | tee -a "$STAGE_LOG"
    return $rc
  fi
}
