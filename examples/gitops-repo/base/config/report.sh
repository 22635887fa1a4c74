# The CronJob: how many visits, and the last.
set -eu
. /etc/guestbook/pg-env.sh
psql -XtAq -v ON_ERROR_STOP=1 -c "SELECT count(*) || ' visits, the last at ' || max(at) FROM visits"
