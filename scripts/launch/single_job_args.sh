# Sourced by local.sh and horovodrun.sh: parses `N CONFIG [train.py options]` into RANKS, CONFIG
# and APP (the folder holding CONFIG's configs/, unless APP is set) and leaves the train.py
# options in "$@"; a bad rank count or a missing config stops the script before any launch.
if [ $# -lt 2 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N CONFIG [train.py options]" >&2
  exit 2
fi
RANKS="$1"
CONFIG="$2"
shift 2
if [ ! -f "$CONFIG" ]; then
  echo "error: config $CONFIG not found" >&2
  exit 2
fi
case "$CONFIG" in
  */configs/*) APP="${APP:-$(basename "${CONFIG%%/configs/*}")}" ;;
  *) APP="${APP:-cosmoflow}" ;;
esac
