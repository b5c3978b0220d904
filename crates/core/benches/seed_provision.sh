#!/usr/bin/env bash
# The seed's provisioning script, rewritten faithfully for the benchmark (peer (c) of
# benches/provision.rs): what the operator ran before costplus, once per customer.
#
#   seed_provision.sh NAMES_FILE     (one customer name per line)
#
# Environment (set by the benchmark): PGHOST (the server's socket directory), PGPORT, PGUSER,
# PGPASSFILE, PG_HBA (the server's pg_hba.conf), CREDENTIALS_DIR (where the plaintext
# credentials go, the seed's "root's home"), CONNECTION_LIMIT.
#
# Per customer, as the seed did it: a password from `openssl rand`, one psql process per
# statement (CREATE ROLE ... PASSWORD, CREATE DATABASE ... OWNER, REVOKE CONNECT/TEMP FROM
# PUBLIC, REVOKE CREATE ON SCHEMA public inside the new database), two `hostssl ...
# scram-sha-256` lines appended to pg_hba.conf with echo, a reload (SELECT pg_reload_conf():
# pg_ctl refuses to run as root), and the credentials written to a 0600 file.
set -euo pipefail

names_file=$1
: "${CONNECTION_LIMIT:=5}"

provision_customer() {
    local name=$1
    local db="${name}_db"
    local user="${name}_user"
    local password
    password=$(openssl rand -base64 32 | tr -d '/+=\n' | cut -c1-32)

    psql -X -q -v ON_ERROR_STOP=1 -d postgres \
        -c "CREATE ROLE \"$user\" LOGIN PASSWORD '$password' CONNECTION LIMIT $CONNECTION_LIMIT"
    psql -X -q -v ON_ERROR_STOP=1 -d postgres \
        -c "CREATE DATABASE \"$db\" OWNER \"$user\""
    psql -X -q -v ON_ERROR_STOP=1 -d postgres \
        -c "REVOKE CONNECT, TEMPORARY ON DATABASE \"$db\" FROM PUBLIC"
    psql -X -q -v ON_ERROR_STOP=1 -d "$db" \
        -c "REVOKE CREATE ON SCHEMA public FROM PUBLIC"

    echo "hostssl $db $user 0.0.0.0/0 scram-sha-256" >> "$PG_HBA"
    echo "hostssl $db $user ::/0 scram-sha-256" >> "$PG_HBA"
    psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "SELECT pg_reload_conf()" > /dev/null

    umask 077
    cat > "$CREDENTIALS_DIR/$name.txt" <<EOF
database: $db
user: $user
password: $password
EOF
    chmod 600 "$CREDENTIALS_DIR/$name.txt"
}

while IFS= read -r name; do
    [ -n "$name" ] || continue
    provision_customer "$name"
done < "$names_file"
