#!/bin/sh
# The container's entrypoint: serve one function with functions-framework under gunicorn, through
# salesmart-serve (common/server.py): the same app and gunicorn options, plus read deadlines so
# slow clients cannot pin the serving threads.
#   FUNCTION_TARGET  token | trends_bq | trends_pg | dashboard (required)
#   FUNCTION_SOURCE  defaults to functions/$FUNCTION_TARGET/main.py (relative to the working dir)
#   PORT, HOST       where to listen (Knative sets PORT; default 8080 on 0.0.0.0)
#   WORKERS, THREADS, CLOUD_RUN_TIMEOUT_SECONDS   gunicorn workers, threads per worker, timeout
#   SALESMART_HEADER_TIMEOUT_SECONDS (10), SALESMART_REQUEST_DEADLINE_SECONDS (60)   read deadlines
# Extra arguments are passed to salesmart-serve.
set -eu

# Only the four functions, by their names (token/../trends_pg served trends_pg), unless a
# FUNCTION_SOURCE of one's own is given.
if [ -z "${FUNCTION_SOURCE:-}" ]; then
    case "${FUNCTION_TARGET:-}" in
        token | trends_bq | trends_pg | dashboard) ;;
        *)
            echo "entrypoint: set FUNCTION_TARGET to one of: token, trends_bq, trends_pg, dashboard (it is '${FUNCTION_TARGET:-}')" >&2
            exit 64
            ;;
    esac
elif [ -z "${FUNCTION_TARGET:-}" ]; then
    echo "entrypoint: set FUNCTION_TARGET to the function FUNCTION_SOURCE=$FUNCTION_SOURCE defines" >&2
    exit 64
fi
FUNCTION_SOURCE="${FUNCTION_SOURCE:-functions/${FUNCTION_TARGET}/main.py}"
if [ ! -f "$FUNCTION_SOURCE" ]; then
    echo "entrypoint: no function source at $FUNCTION_SOURCE (FUNCTION_TARGET=$FUNCTION_TARGET)" >&2
    exit 66
fi
export FUNCTION_TARGET FUNCTION_SOURCE

exec salesmart-serve --source "$FUNCTION_SOURCE" --target "$FUNCTION_TARGET" "$@"
