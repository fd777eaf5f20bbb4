#!/bin/sh
# One-shot set-up of Temporal's own schema (run by the temporal-schema service, admin-tools image), before the
# server starts. The databases and the role exist already (deploy/postgres/10-temporal.sh); this creates the
# schema on a new volume and upgrades it to the image's version on an old one. Idempotent.
set -eu

: "${POSTGRES_SEEDS:?POSTGRES_SEEDS is not set}"
: "${POSTGRES_USER:?POSTGRES_USER is not set}"
: "${SQL_PASSWORD:?SQL_PASSWORD is not set}"
export SQL_PASSWORD

sql() {
    temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "${DB_PORT:-5432}" -u "$POSTGRES_USER" --db "$1" \
        "$2" "$3" "$4"
}

for pair in "${DBNAME:-temporal}:temporal" "${VISIBILITY_DBNAME:-temporal_visibility}:visibility"; do
    database="${pair%%:*}"
    schema="${pair#*:}"
    # setup-schema -v 0.0 only creates the version table when it is missing; update-schema applies what is new.
    sql "$database" setup-schema -v 0.0
    sql "$database" update-schema -d "/etc/temporal/schema/postgresql/v12/$schema/versioned"
done
echo "Temporal's schema is up to date"
