# Source this before the tests to run the store tests on PostgreSQL as well as SQLite:
#
#     source .ci/postgres.sh && make test
#
# Installs PostgreSQL (Debian/Ubuntu, apt) if missing, starts the cluster, creates a role
# and a database (both idempotent: sourcing twice is fine) and exports
# PERSONA_STUDIO_TEST_DATABASE_URL. Needs root or passwordless sudo. Sourced, so it never
# calls `exit` and leaves the caller's shell options (set -e ...) as they were; on failure
# it prints why, returns 1 and exports nothing, and the PostgreSQL tests are skipped.

_ps_pg_setup() {
    local user=persona_studio password=persona_studio db=persona_studio_test
    local sudo="" as_postgres
    if [ "$(id -u)" != 0 ]; then sudo="sudo -n"; fi
    if [ -n "$sudo" ]; then as_postgres="sudo -n -u postgres"; else as_postgres="runuser -u postgres --"; fi

    if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
        echo "postgres.sh: installing PostgreSQL (apt)"
        local log
        log=$(mktemp)
        if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; } >"$log" 2>&1; then
            cat "$log" >&2
            rm -f "$log"
            echo "postgres.sh: apt-get install postgresql failed (output above)" >&2
            return 1
        fi
        rm -f "$log"
    fi

    local version port
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { found = 1 } END { exit !found }'; then
        $sudo pg_createcluster "$version" main >/dev/null || { echo "postgres.sh: pg_createcluster failed" >&2; return 1; }
    fi
    port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $3 }')
    if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" && $4 == "online" { found = 1 } END { exit !found }'; then
        $sudo pg_ctlcluster "$version" main start || { echo "postgres.sh: cluster $version/main did not start" >&2; return 1; }
    fi
    local tries=0
    until pg_isready -q -h 127.0.0.1 -p "$port"; do
        tries=$((tries + 1))
        if [ "$tries" -ge 30 ]; then echo "postgres.sh: PostgreSQL not ready on port $port" >&2; return 1; fi
        sleep 1
    done

    # Role (password re-set each time, so a changed password here takes effect) and database.
    $as_postgres psql -q -v ON_ERROR_STOP=1 -p "$port" -d postgres <<SQL || { echo "postgres.sh: creating role/database failed" >&2; return 1; }
SELECT 'CREATE ROLE $user LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$user') \gexec
ALTER ROLE $user LOGIN PASSWORD '$password';
SELECT 'CREATE DATABASE $db OWNER $user' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db') \gexec
SQL

    export PERSONA_STUDIO_TEST_DATABASE_URL="postgresql://$user:$password@127.0.0.1:$port/$db"
    echo "postgres.sh: PERSONA_STUDIO_TEST_DATABASE_URL=postgresql://$user:***@127.0.0.1:$port/$db"
}

_ps_pg_setup
_ps_pg_status=$?
unset -f _ps_pg_setup
# `return` when sourced (the usual way); `exit` only if someone runs the file directly.
return "$_ps_pg_status" 2>/dev/null || exit "$_ps_pg_status"
