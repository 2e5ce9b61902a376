fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc: building needs no system protobuf install and no network.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.compile_protos(&["proto/onnx-ml.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
