#!/usr/bin/env bash
# The app's own Postgres role: a LOGIN role without superuser, CREATEDB, CREATEROLE,
# REPLICATION or BYPASSRLS, owning the app's database and its `public` schema, so that
# `alembic upgrade head`, run as that role, creates and owns every table, sequence and function.
# The superuser (`postgres`) stays for the operator; the app never connects as it.
#
# The postgres image runs this once, on an empty data volume (/docker-entrypoint-initdb.d/),
# connected as the superuser to POSTGRES_DB. It is safe to run again by hand, e.g. for a volume
# created before this script (the app then connected as `postgres`) or to set a new password:
#   docker compose exec postgres /docker-entrypoint-initdb.d/10-app-role.sh
# Run again, it sets the password from the file again and hands every object of `public` that
# is not yet the role's over to it (tables with their sequences, views, functions, types).
#
# The password is read from a file by psql itself (a backquoted `cat`), so it never appears in
# a process's arguments or environment. tests/integration/test_least_privilege.py runs this
# script against a scratch database and migrates it as the role.
#
# Environment: POSTGRES_USER (default postgres) and POSTGRES_DB (default tenant_provisioner),
# set by the image; APP_DB_USER (default tenant_provisioner); APP_DB_PASSWORD_FILE (default
# /run/secrets/postgres_app_password). The usual PGHOST/PGPORT apply.
set -e

app_role="${APP_DB_USER:-tenant_provisioner}"
password_file="${APP_DB_PASSWORD_FILE:-/run/secrets/postgres_app_password}"
if [ ! -s "$password_file" ]; then
	echo "10-app-role.sh: $password_file is missing or empty (see secrets/README.md)" >&2
	exit 1
fi

psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password \
	--username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-tenant_provisioner}" \
	--set app_role="$app_role" --set password_file="$password_file" <<'SQL'
\set app_password `cat :'password_file'`
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_role') AS app_role_missing \gset
\if :app_role_missing
CREATE ROLE :"app_role";
\endif
ALTER ROLE :"app_role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
	PASSWORD :'app_password';
\unset app_password

ALTER DATABASE :"DBNAME" OWNER TO :"app_role";
ALTER SCHEMA public OWNER TO :"app_role";
-- Only the owner creates objects here, and other roles do not connect (the superuser still can).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON DATABASE :"DBNAME" FROM PUBLIC;

-- Objects made before the role existed (a volume migrated by the superuser) become its own.
-- Sequences owned by a column follow their table; ALTER TABLE covers views too.
SELECT format('ALTER TABLE public.%I OWNER TO %I', c.relname, :'app_role')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
	AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = :'app_role')
\gexec
SELECT format('ALTER SEQUENCE public.%I OWNER TO %I', c.relname, :'app_role')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'S'
	AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = :'app_role')
	AND NOT EXISTS (
		SELECT FROM pg_depend d
		WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')
	)
\gexec
SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, :'app_role')
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public'
	AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = :'app_role')
\gexec
SELECT format('ALTER TYPE public.%I OWNER TO %I', t.typname, :'app_role')
FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r')
	AND t.typowner <> (SELECT oid FROM pg_roles WHERE rolname = :'app_role')
\gexec
SQL
