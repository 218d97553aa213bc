//! The policy target's oracle itself: a policy that traps must be a crash for the fuzzer, not a
//! declined turn. The test fixture `faulty` (it panics when the prompt says PANIC) stands in for
//! every shipped policy. Its own process, since the harness loads the policies once.

use discedge_fuzz::{MODES, PolicyCase, Size, TemplateInput, run_case};

#[test]
#[should_panic(expected = "trapped in prepare")]
fn a_trapping_policy_is_a_crash() {
    let faulty = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/policies/faulty.wasm"
    );
    let dir = concat!(env!("CARGO_TARGET_TMPDIR"), "/faulty-as-every-mode");
    std::fs::create_dir_all(dir).unwrap();
    for mode in MODES {
        std::fs::copy(faulty, format!("{dir}/{mode}.wasm"))
            .expect("testdata/policies/faulty.wasm: run scripts/build-plugins.sh");
    }
    // SAFETY: this process's only test, and the harness reads the variable once, after this.
    unsafe { std::env::set_var("DISCEDGE_FUZZ_PLUGINS_DIR", dir) };
    run_case(&PolicyCase {
        mode: 0,
        records: Vec::new(),
        prompt: "PANIC".into(),
        turn: 1,
        n_ctx: Size::Small(4096),
        reply_budget: Size::Small(64),
        template: TemplateInput::Chatml,
        system_prompt: None,
        request_json: "{}".into(),
        reply: String::new(),
        reply_ids: None,
        next_prompt: String::new(),
    });
}
