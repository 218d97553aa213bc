//! Hands the policy contract (`wit/policy.wit`, its one source) to the `bindings!` macro as
//! text, so a policy crate anywhere generates its bindings from it without a path to `wit/`.

use std::path::Path;

fn main() {
    // Read when the script runs, not baked in when it is compiled: a target dir shared by two
    // checkouts may run a build script compiled in the other one.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let wit = Path::new(&manifest_dir).join("../../wit/policy.wit");
    println!("cargo:rerun-if-changed={}", wit.display());
    let text = std::fs::read_to_string(&wit).expect("reading wit/policy.wit");
    assert!(
        !text.contains("\"#####"),
        "the WIT must not close the raw string below"
    );
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("bindings_macro.rs");
    let code = format!(
        r######"/// Generates the contract's bindings for `world` in the calling crate (from `wit/`).
#[macro_export]
macro_rules! bindings {{
    ($world:literal) => {{
        $crate::__wit_bindgen::generate!({{
            inline: r#####"{text}"#####,
            world: $world,
            runtime_path: "::discedge_policy_sdk::__wit_bindgen::rt",
        }});
    }};
}}
"######
    );
    std::fs::write(out, code).expect("writing the bindings macro");
}
