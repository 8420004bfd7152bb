//! Compiles the `.proto` files under `proto/` into Rust with pure-Rust
//! tooling (protox parses, tonic-prost-build generates); no system `protoc`
//! is needed.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "etcd/mvccpb/kv.proto",
    "etcd/authpb/auth.proto",
    "etcd/etcdserverpb/rpc.proto",
    "etcd/v3electionpb/v3election.proto",
    "etcd/v3lockpb/v3lock.proto",
    "cairn/raft.proto",
    "cairn/cairn.proto",
    "cairn/heartbeat.proto",
    "cairn/meta.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");

    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();

    let fds = protox::compile(&files, [&root])?;
    // The descriptors themselves, for the JSON gateway (proto field names, enum names, types).
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("cairn_descriptors.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .emit_rerun_if_changed(false)
        // prost's codec with smaller buffers (src/lib.rs, `codec`).
        .codec_path("crate::codec::SmallBufferCodec")
        .compile_fds(fds)?;

    Ok(())
}
