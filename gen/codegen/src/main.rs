//! Regenerates `gen/` from `proto/`: the Rust stubs (messages, clients and
//! servers) and the binary FileDescriptorSet used by server reflection and by
//! Envoy's gRPC-JSON transcoder; in envoy/envoy.yaml, the routes that answer
//! 405 to a REST path called with the wrong method; and from that file,
//! envoy/envoy-kubernetes.yaml and envoy/envoy-tls.yaml. Run from the workspace root (`just gen`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod envoy_kubernetes;
mod envoy_routes;
mod envoy_tls;

const PROTO_ROOT: &str = "proto";
const RUST_OUT: &str = "gen/src/generated";
const DESCRIPTOR_OUT: &str = "gen/colink.binpb";
/// Compiled although no Colink proto imports them: Envoy's transcoder can
/// render an error's `grpc-status-details-bin` as the JSON body of a REST
/// error only when the status and every detail type are in the descriptor set.
const ERROR_PROTOS: [&str; 2] = ["google/rpc/status.proto", "google/rpc/error_details.proto"];

fn main() -> ExitCode {
    match run() {
        Ok(count) => {
            println!("generated stubs and descriptor set for {count} proto files");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("codegen failed: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<usize, Box<dyn std::error::Error>> {
    let mut files = Vec::new();
    collect_protos(Path::new(PROTO_ROOT).join("colink").as_path(), &mut files)?;
    files.sort();
    let mut relative: Vec<PathBuf> =
        files.iter().map(|f| f.strip_prefix(PROTO_ROOT).map(Path::to_path_buf)).collect::<Result<_, _>>()?;
    relative.extend(ERROR_PROTOS.iter().map(PathBuf::from));

    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(&relative)?;
    // Encoded by protox itself: going through prost_types would drop the
    // `google.api.http` options, which Envoy's transcoder reads.
    let encoded = compiler.encode_file_descriptor_set();
    fs::write(DESCRIPTOR_OUT, &encoded)?;
    envoy_routes::write(&encoded)?;
    envoy_kubernetes::write()?;
    envoy_tls::write()?;
    let descriptors = compiler.file_descriptor_set();

    // Start from an empty directory so a removed proto leaves no stale file.
    if Path::new(RUST_OUT).exists() {
        fs::remove_dir_all(RUST_OUT)?;
    }
    fs::create_dir_all(RUST_OUT)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // No `connect` constructors: channels are built in one place (runtime::clients),
        // and they would clash with the realtime `Connect` RPC.
        .build_transport(false)
        // Undecodable requests are INVALID_ARGUMENT, not INTERNAL (see gen/src/codec.rs).
        .codec_path("crate::codec::ProtoCodec")
        .emit_rerun_if_changed(false)
        .include_file("mod.rs")
        .out_dir(RUST_OUT)
        .compile_fds(descriptors)?;
    Ok(relative.len())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
