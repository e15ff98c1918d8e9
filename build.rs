//! Compiles the contract in `proto/` with protox (no system protoc), generates the prost messages,
//! the tonic client and server, and the pbjson (proto3 JSON) serde impls, and writes the encoded
//! descriptor set that server reflection serves.

use std::path::PathBuf;

use anyhow::Context;
use prost::Message;

const PROTO_ROOT: &str = "proto";
const PROTO_FILES: [&str; 4] = [
    // Vendored like status.proto: the field violations of every INVALID_ARGUMENT are a
    // google.rpc.BadRequest, and reflection must describe it for grpcurl, grpcui and Postman.
    "proto/google/rpc/error_details.proto",
    "proto/vlms/rt/v1/case.proto",
    "proto/vlms/rt/v1/plan.proto",
    "proto/vlms/rt/v1/recommendation_service.proto",
];

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR is not set")?);

    let descriptor_set =
        protox::compile(PROTO_FILES, [PROTO_ROOT]).context("compiling the protos")?;
    let descriptor_path = out_dir.join("vlms_rt_descriptor.bin");
    let encoded = descriptor_set.encode_to_vec();
    std::fs::write(&descriptor_path, &encoded)
        .with_context(|| format!("writing {}", descriptor_path.display()))?;

    // The messages and the client.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .codec_path("crate::codec::ProtoCodec")
        // pbjson_types carries the serde impls that proto3 JSON of google.rpc.Status needs.
        .extern_path(".google.protobuf.Any", "::pbjson_types::Any")
        .extern_path(".google.protobuf.Duration", "::pbjson_types::Duration")
        .compile_fds(descriptor_set.clone())
        .context("generating the Rust code")?;

    // The server, over the same messages, except that `Recommend` and `RecommendStream` answer with `crate::wire::EncodedRecommendResponse` / `EncodedStreamResponse`
    // (the plan encoded straight from the core's values; the same bytes on the wire). Every other type resolves to the messages generated above.
    let server_dir = out_dir.join("server");
    std::fs::create_dir_all(&server_dir)
        .with_context(|| format!("creating {}", server_dir.display()))?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(&server_dir)
        // Parse errors of a request body are the caller's fault: INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::codec::ProtoCodec")
        .extern_path(
            ".vlms.rt.v1.RecommendResponse",
            "crate::wire::EncodedRecommendResponse",
        )
        .extern_path(
            ".vlms.rt.v1.RecommendStreamResponse",
            "crate::wire::EncodedStreamResponse",
        )
        .extern_path(".vlms.rt.v1", "crate::pb::vlms::rt::v1")
        .extern_path(".google.rpc", "crate::pb::google::rpc")
        .extern_path(".google.protobuf.Any", "::pbjson_types::Any")
        .extern_path(".google.protobuf.Duration", "::pbjson_types::Duration")
        .compile_fds(descriptor_set)
        .context("generating the server code")?;

    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .extern_path(".google.protobuf", "::pbjson_types")
        .build(&[".vlms.rt.v1", ".google.rpc"])
        .context("generating the proto3 JSON code")?;
    Ok(())
}
