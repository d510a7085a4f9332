# Colink developer commands. `just` installs with `pip install rust-just`
# (or `cargo install just`). Builds share one target directory outside the
# clone, like CI.

set shell := ["bash", "-euo", "pipefail", "-c"]

export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") + "/.cache/colink/target")

# Lint, test and check generated code: what CI checks, without installing anything.
default: verify

# Serve every service on 127.0.0.1:7700 with the embedded backends (data in ./colink-data).
run *ARGS:
    cargo run -p colink -- serve {{ARGS}}

# Envoy in front of a node started with `just run`: REST and gRPC-Web on 127.0.0.1:8080.
envoy:
    envoy -c envoy/envoy.yaml --use-dynamic-base-id

# The distributed topology on this machine: a core node (auth, users, channels,
# messaging, files, presence, admin) on :7700, two realtime nodes on :7701 and
# :7702 and a scanning node on :7703, sharing PostgreSQL (one database per
# service, created if missing), Redis (fan-out, presence, rate limits), Kafka
# and an S3 bucket. Uploads are scanned by clamd (.ci/start-clamd) on the
# scanning node, a consumer of the file events, and nothing unscanned is
# served. Without a `kafka` URL a tansu broker is started on 127.0.0.1:9092,
# and without an `s3` endpoint an s3s-fs server on 127.0.0.1:9000 (both
# installed under ~/.cache/colink on first use; they are for trying things
# out: the broker keeps its log in memory).
cluster postgres="postgres://postgres@127.0.0.1:5432" redis="redis://127.0.0.1:6379" kafka="" s3="":
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build -q -p colink
    bin="$CARGO_TARGET_DIR/debug/colink"
    for service in auth users channels messaging files admin search; do
        psql "{{postgres}}/postgres" -tAc "select 1 from pg_database where datname = 'colink_$service'" | grep -q 1 \
            || psql "{{postgres}}/postgres" -qc "create database colink_$service"
    done
    trap 'kill $(jobs -p) 2>/dev/null' EXIT INT TERM
    kafka="{{kafka}}"
    if [ -z "$kafka" ]; then
        tansu=$(.ci/install-tansu)
        "$tansu" broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
            --storage-engine memory://colink/ &
        kafka="kafka://127.0.0.1:9092"
    fi
    s3="{{s3}}"
    if [ -z "$s3" ]; then
        s3s=$(.ci/install-s3s)
        mkdir -p colink-data/s3
        "$s3s" --host 127.0.0.1 --port 9000 --access-key colink --secret-key colink-secret colink-data/s3 &
        s3="http://127.0.0.1:9000"
        export COLINK_FILES__S3__ACCESS_KEY=colink COLINK_FILES__S3__SECRET_KEY=colink-secret
    fi
    export COLINK_DATABASE__URL="{{postgres}}/colink_{service}" COLINK_PUBSUB__URL="{{redis}}" \
        COLINK_EPHEMERAL__URL="{{redis}}" COLINK_EVENTS__URL="$kafka" \
        COLINK_FILES__URL="s3://colink-files" COLINK_FILES__S3__ENDPOINT="$s3" COLINK_FILES__REQUIRE_SCAN=true \
        COLINK_FILES__SCANNER__CLAMD="$(.ci/start-clamd)"
    for peer in AUTH USERS CHANNELS MESSAGING FILES PRESENCE ADMIN SEARCH; do export "COLINK_PEERS__$peer=http://127.0.0.1:7700"; done
    COLINK_FILES__SCANNER__CONCURRENCY=0 \
        "$bin" serve --services auth,users,channels,messaging,files,presence,admin,search --listen 127.0.0.1:7700 &
    "$bin" serve --services realtime --listen 127.0.0.1:7701 &
    "$bin" serve --services realtime --listen 127.0.0.1:7702 &
    "$bin" serve --services files --listen 127.0.0.1:7703 &
    wait

# The benchmark scenarios at their standard sizes, on SQLite and on PostgreSQL,
# against a release build; writes BENCHMARKS.md. Takes a while: every run is
# bounded, and progress is printed as it goes.
bench postgres="postgres://postgres@127.0.0.1:5432":
    cargo build --release -q -p colink
    "$CARGO_TARGET_DIR/release/colink" bench --size standard --postgres {{postgres}} --markdown BENCHMARKS.md

# Criterion micro-benchmarks of the hot paths: token check, sequence
# allocation with the insert, and fan-out decode/encode per stream.
micro:
    cargo bench -p colink --bench hot_paths

# The test suite (embedded backends; needs no servers).
test:
    cargo test --workspace

# Regenerate gen/ (Rust and TypeScript stubs, the descriptor set) and the 405 routes of envoy/envoy.yaml from proto/, and envoy/envoy-kubernetes.yaml from envoy/envoy.yaml. Needs no protoc; the TypeScript plugin comes from web/package-lock.json.
gen:
    cargo run -q -p colink-codegen
    [ -x web/node_modules/.bin/protoc-gen-es ] || (cd web && npm ci)
    buf generate

# Fail if gen/ (or the 405 routes in envoy/envoy.yaml, or envoy/envoy-kubernetes.yaml) is not what proto/ and envoy/envoy.yaml generate.
gen-check: gen
    @test -z "$(git status --porcelain -- gen proto envoy)" || { git status --short -- gen proto envoy; echo "gen/ or envoy/ is stale: run 'just gen' and commit"; exit 1; }

# Formatting, clippy (warnings are errors) and buf lint.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    buf lint
    buf format --diff --exit-code

verify: lint test gen-check

# The full CI run, exactly as CI runs it (installs its tools into ~/.cache/colink).
ci:
    bash .ci/run

# Build the web client into web/dist (committed: `colink serve` embeds it).
web:
    cd web && npm ci && npm test && npm run build

# People in Chromium against a fresh node, directly and through Envoy (needs
# Debian's chromium, Envoy as .ci/run installs it, and clamd, started here).
e2e: web
    cargo build -q -p colink
    cd web && E2E_CLAMD="$(../.ci/start-clamd)" node tests/e2e.mjs
    cd web && E2E_CLAMD="$(../.ci/start-clamd)" ENVOY="$(command -v envoy)" node tests/e2e.mjs
    cd services/colink/tests/oidc-provider && npm ci --no-audit --no-fund --loglevel=error
    cd web && node tests/sso.mjs

# The web client's figures in Chromium against a fresh release node: first
# load, time to interactive, scrolling back through 10,000 messages, memory
# after 10,000 live messages (BENCH_MESSAGES sets another count).
bench-web: web
    cargo build -q --release -p colink
    cd web && node tests/bench.mjs
