-- What the database's owner runs once, before Vault makes logins for the app: the app's
-- table, and a role without login that holds the app's rights. Each login Vault creates
-- (database/creds/app) is granted this role, so it can write rows but not change the schema,
-- and nothing is owned by a login that Vault will drop when its lease ends.
SET client_min_messages = warning; -- quiet when run again

CREATE TABLE IF NOT EXISTS visits (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    pod       text NOT NULL,
    db_user   text NOT NULL DEFAULT current_user
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_writer') THEN
        CREATE ROLE app_writer NOLOGIN;
    END IF;
END
$$;

GRANT SELECT, INSERT ON visits TO app_writer;
GRANT USAGE ON SEQUENCE visits_id_seq TO app_writer;
