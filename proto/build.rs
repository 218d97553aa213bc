fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=fred_client.proto");
    println!("cargo:rerun-if-changed=fred_trigger.proto");
    let descriptors = protox::compile(["fred_client.proto", "fred_trigger.proto"], ["."])?;
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
