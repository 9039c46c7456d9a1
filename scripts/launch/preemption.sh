# Sourced by perlmutter.sbatch and summit.lsf: run the training step so that a scheduler's warning
# signal reaches it, then requeue the job or end the chain on its exit code.
#
# Training exits with 75 (EX_TEMPFAIL) when it stopped on SIGTERM, SIGUSR1 or SIGINT after writing
# a checkpoint (the run is not finished: requeue, the next job continues with --resume), 0 when the
# run is finished (the chain stops), anything else on an error (not requeued: it would fail again).
REQUEUE_EXIT=75
MAX_REQUEUES="${MAX_REQUEUES:-10}"   # requeues of one job at most: a run that cannot progress ends
if ! [[ "$MAX_REQUEUES" =~ ^[0-9]+$ ]]; then
  echo "error: MAX_REQUEUES must be a whole number, got '$MAX_REQUEUES'" >&2
  exit 2
fi

STEP_PID=""
SIGNALLED=""
INTERRUPTED=""
forward_signal() {  # trap action: the batch shell got $1
  echo "batch shell: SIG$1 received; asking training to checkpoint and stop" >&2
  SIGNALLED="$1"
  INTERRUPTED=1
  # Always SIGUSR1 to the launcher: srun and jsrun pass it to every task as is, whereas srun
  # takes a single SIGINT as a request for status. Training treats the three signals alike.
  if [ -n "$STEP_PID" ]; then kill -USR1 "$STEP_PID" 2>/dev/null || true; fi
}
# Installed before anything starts: a batch shell without a trap dies on SIGUSR1/SIGTERM and
# takes the requeue decision with it.
trap 'forward_signal USR1' USR1
trap 'forward_signal TERM' TERM
trap 'forward_signal INT' INT

run_step() {  # the training launch line; sets STEP_STATUS to its exit code
  if [ -n "$SIGNALLED" ]; then  # during staging: the time is up before training could start
    echo "batch shell: SIG$SIGNALLED came before training started; not starting it" >&2
    STEP_STATUS="$REQUEUE_EXIT"
    return
  fi
  "$@" &
  STEP_PID=$!
  local status
  while :; do
    # A trapped signal makes `wait` return early (status > 128) while the step runs on.
    INTERRUPTED=""
    status=0
    wait "$STEP_PID" || status=$?
    if [ -z "$INTERRUPTED" ] || [ "$status" -le 128 ]; then break; fi
  done
  STEP_STATUS="$status"
}

finish_or_requeue() {  # STATUS REQUEUES_SO_FAR REQUEUE_COMMAND...: the job's own exit code
  local status="$1" requeues="$2"
  shift 2
  case "$status" in
    0)
      echo "training finished: the job chain ends here" >&2
      return 0 ;;
    "$REQUEUE_EXIT")
      if [ "$requeues" -ge "$MAX_REQUEUES" ]; then
        echo "error: training stopped with a checkpoint (exit $status), but this job was" \
             "already requeued $requeues times (MAX_REQUEUES=$MAX_REQUEUES): not requeued;" \
             "submit the script again to continue" >&2
        return "$status"
      fi
      echo "training stopped with a checkpoint (exit $status): requeue $((requeues + 1)) of at" \
           "most $MAX_REQUEUES; the next run continues with --resume" >&2
      if ! "$@"; then
        echo "error: '$*' failed: submit the script again to continue" >&2
        return "$status"
      fi
      return 0 ;;
    *)
      echo "error: training failed with exit code $status: not requeued" >&2
      return "$status" ;;
  esac
}
