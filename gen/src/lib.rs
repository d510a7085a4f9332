//! Generated gRPC stubs for every Colink contract, and the descriptor set.
//!
//! Everything under `src/generated/` and `colink.binpb` is produced by
//! `just gen` from `proto/`; never edit it by hand. CI regenerates it and
//! fails when the result differs from what is checked in.

#[allow(clippy::all, clippy::pedantic, dead_code, missing_docs, rustdoc::all)]
mod generated {
    include!("generated/mod.rs");
}

pub mod codec;

pub use generated::colink::*;

/// Google API types Colink's contracts use (`google.api.HttpBody`).
pub mod google_api {
    pub use super::generated::google::api::HttpBody;
}

/// The FileDescriptorSet of every Colink proto and its imports, with source
/// info, for server reflection and Envoy's gRPC-JSON transcoder.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("../colink.binpb");
