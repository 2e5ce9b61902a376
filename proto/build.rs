fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc: building needs no system protobuf install and no network.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().build_client(true).build_server(true).compile_with_config(
        config,
        &["proto/quarry/v1/trial.proto", "proto/quarry/v1/service.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
