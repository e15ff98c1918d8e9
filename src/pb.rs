//! The generated contract types (`vlms.rt.v1`) and the vendored `google.rpc.Status`.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// `vlms.rt.v1`: the service contract.
pub mod vlms {
    pub mod rt {
        pub mod v1 {
            tonic::include_proto!("vlms.rt.v1");
            include!(concat!(env!("OUT_DIR"), "/vlms.rt.v1.serde.rs"));
        }
    }
}

/// `google.rpc`: the status message carried in-band by `RecommendStream`.
pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
        include!(concat!(env!("OUT_DIR"), "/google.rpc.serde.rs"));
    }
}

/// The generated server of `vlms.rt.v1.RecommendationService` (see build.rs: `Recommend` answers
/// with `crate::wire::EncodedRecommendResponse`).
pub mod server {
    include!(concat!(env!("OUT_DIR"), "/server/vlms.rt.v1.rs"));
}

pub use vlms::rt::v1::*;

/// Encoded `FileDescriptorSet` of every proto the service speaks, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vlms_rt_descriptor.bin"));
