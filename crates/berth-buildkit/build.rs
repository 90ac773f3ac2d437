//! Compiles Berth's own .proto files of BuildKit's APIs (pure Rust: protox parses them, no
//! protoc needed) into prost messages and tonic clients and servers.

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
        .compile_fds(fds)?;
    Ok(())
}
