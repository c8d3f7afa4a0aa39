//! Compiles the gRPC echo app's proto of the tests (`tests/proto/echo.proto`) with protox (no
//! system `protoc`); only the integration tests include the generated code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "tests/proto/echo.proto";
    println!("cargo:rerun-if-changed={file}");
    let descriptors = protox::compile([file], ["tests/proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
