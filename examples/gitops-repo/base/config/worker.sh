# The worker records a visit every 30 s with the database login Vault made for this pod.
set -eu
trap 'exit 0' TERM
. /vault/secrets/config.env
. /etc/guestbook/pg-env.sh
while true; do
  echo "INSERT INTO visits (pod) VALUES (:'pod') RETURNING 'visit ' || id || ' by ' || db_user;" |
    psql -XtAq -v ON_ERROR_STOP=1 -v pod="$HOSTNAME" -f - | sed "s/^/$GREETING: /"
  sleep 30 & wait $!
done
