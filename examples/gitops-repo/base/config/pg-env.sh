# Sourced by worker.sh and report.sh: libpq connects with the .pgpass latch-init
# rendered (the password stays out of every command line).
export PGPASSFILE=/vault/secrets/.pgpass
IFS=: read -r PGHOST PGPORT PGDATABASE PGUSER _ < "$PGPASSFILE"
export PGHOST PGPORT PGDATABASE PGUSER
