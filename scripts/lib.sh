# Shared by scripts/test and scripts/bench: the things cargo does not build,
# installed once into the cache (~/.cache/trimatch, or $TRIMATCH_CACHE).

cache="${TRIMATCH_CACHE:-$HOME/.cache/trimatch}"
mkdir -p "$cache"

# tansu, a Kafka-compatible broker that runs as a separate process on
# loopback — `cargo install tansu`, about ten minutes the first time.
# Sets $tansu to its path.
install_tansu() {
    tansu="$cache/tansu/bin/tansu"
    if [ ! -x "$tansu" ]; then
        echo "== installing the tansu broker into $cache/tansu (once; about ten minutes)"
        cargo install tansu --version 0.6.0 --locked --features libsql --root "$cache/tansu"
    fi
    "$tansu" --version >/dev/null
}

# A Python virtual environment with pyarrow, pandas and duckdb (readers
# nobody here wrote), ADBC's Flight SQL driver (a SQL client nobody here
# wrote) and confluent-kafka. Sets $venv.
install_python_env() {
    venv="$cache/venv"
    if ! "$venv/bin/python" -c "import pyarrow.flight, pandas, duckdb, confluent_kafka, adbc_driver_flightsql.dbapi" 2>/dev/null; then
        echo "== creating the Python test environment in $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --upgrade pip
        "$venv/bin/pip" install --quiet "pyarrow>=15" pandas duckdb confluent-kafka \
            "adbc-driver-manager>=1.3" "adbc-driver-flightsql>=1.3"
    fi
}

# Programs from Debian's packages that the end-to-end tests run: socat (a TLS
# terminator in front of tansu) and openssl (the tests make their own CA).
install_system_tools() {
    local missing=()
    command -v socat >/dev/null || missing+=(socat)
    command -v openssl >/dev/null || missing+=(openssl)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "== installing ${missing[*]} (Debian packages)"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}
