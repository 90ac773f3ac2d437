//! Compiles Berth's own CRI schema (`proto/runtime/v1/api.proto`; pure Rust: protox parses it,
//! no protoc needed) into prost messages and tonic clients and servers.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/runtime/v1/api.proto");
    let fds = protox::compile(["runtime/v1/api.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // RPCs Berth does not serve yet answer `Unimplemented`.
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
