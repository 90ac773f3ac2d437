//! Compiles Berth's own .proto files of BuildKit's APIs (pure Rust: protox parses them, no
//! protoc needed) into prost messages and tonic clients and servers, with `protos.rs`, the
//! module tree of their packages (see `src/proto.rs`). The .proto files hold the messages and
//! fields Berth reads or sets (and what it forwards whole): a field left out is skipped when
//! decoding and never sent, so the wire stays BuildKit's.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/control.proto",
        "proto/gateway.proto",
        "proto/session.proto",
        "proto/secrets.proto",
        "proto/sshforward.proto",
        "proto/upload.proto",
        "proto/content.proto",
    ];
    for f in std::fs::read_dir("proto")? {
        println!("cargo:rerun-if-changed={}", f?.path().display());
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .include_file("protos.rs")
        .compile_fds(fds)?;
    Ok(())
}
