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

# The test suite (embedded backends; needs no servers).
test:
    cargo test --workspace

# Regenerate gen/ (Rust stubs and the descriptor set) from proto/. Needs no protoc and no network.
gen:
    cargo run -q -p colink-codegen

# Fail if gen/ is not what proto/ generates.
gen-check: gen
    @test -z "$(git status --porcelain -- gen proto)" || { git status --short -- gen proto; echo "gen/ is stale: run 'just gen' and commit"; exit 1; }

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
