#!/bin/sh
# Runs once, when the Postgres volume is first initialised (/docker-entrypoint-initdb.d).
# Temporal gets a role of its own and its two databases; tocsin's database (POSTGRES_DB) is created by the
# image itself and belongs to POSTGRES_USER. btree_gin is created here, as the superuser, because
# Temporal's visibility schema needs it.
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v temporal_password="${TEMPORAL_DB_PASSWORD:?TEMPORAL_DB_PASSWORD is not set}" <<'SQL'
CREATE ROLE temporal LOGIN PASSWORD :'temporal_password';
CREATE DATABASE temporal OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;
\connect temporal_visibility
CREATE EXTENSION IF NOT EXISTS btree_gin;
SQL
