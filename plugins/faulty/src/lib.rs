//! TEST FIXTURE, never shipped: a policy that misbehaves when the prompt asks it to, so the
//! host's tests can check that a guest's panic, endless loop or memory hunger fails only the
//! one turn, and that an unreadable record is caught.
//!
//! Otherwise it is a minimal raw policy: the prompt is the user's text and the record is that
//! text's bytes.

discedge_policy_sdk::bindings!("context-policy");

use core::hint::black_box;

use discedge::policy::types::{
    Answer, CompletionRequest, PolicyError, PolicyInfo, Prepared, Prompt, Reply, Settings, Step,
    TurnInput,
};
use exports::discedge::policy::policy::Guest;

/// What `OOM` tries to allocate; far more than a host should allow a policy.
const ONE_GIB: usize = 1 << 30;

struct Component;

impl Guest for Component {
    fn info() -> PolicyInfo {
        PolicyInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test fixture: panics, loops or exhausts memory when the prompt says \
                          PANIC, LOOP or OOM; returns a prompt beyond any window for BIGPROMPT \
                          or a token outside the vocabulary for BADTOKEN; stores a bad record \
                          for BADREC"
                .into(),
            stores_context: true,
        }
    }

    fn prepare(
        _records: Vec<Vec<u8>>,
        input: TurnInput,
        _settings: Settings,
        answers: Vec<Answer>,
    ) -> Result<Step, PolicyError> {
        let prompt = input.prompt.clone();
        // Completions (contract 0.2.0): one answered and used, asked for ever, asked badly.
        let ask = |prompt: Prompt, options_json: &str| {
            Ok(Step::Complete(CompletionRequest {
                prompt,
                n_predict: 4,
                options_json: options_json.into(),
                state: (answers.len() as u32).to_le_bytes().to_vec(),
            }))
        };
        if prompt.contains("ASKFOREVER") {
            return ask(Prompt::Text("Say yes.".into()), "");
        }
        if prompt.contains("ASKBADOPTIONS") {
            return ask(Prompt::Text("Say yes.".into()), r#"{"stream": true}"#);
        }
        if prompt.contains("ASKTWICE") && answers.len() < 2 {
            return ask(Prompt::Text("Say yes.".into()), r#"{"temperature": 0}"#);
        }
        if prompt.contains("ASKTWICE") {
            // What the host handed back: each answer's state and that the model answered.
            let seen: Vec<String> = answers
                .iter()
                .map(|a| {
                    format!(
                        "state {:?} answered {}",
                        a.state,
                        !a.reply.tokens.is_empty()
                    )
                })
                .collect();
            return Ok(Step::Ready(Prepared {
                prompt: Prompt::Text(seen.join("; ")),
                want_reply_tokens: false,
                carry: Vec::new(),
                dropped_records: 0,
            }));
        }
        if prompt.contains("PANIC") {
            panic!("faulty policy asked to panic");
        }
        if prompt.contains("LOOP") {
            spin_forever();
        }
        if prompt.contains("OOM") {
            hog_memory();
        }
        // Well-formed calls with outputs a host must not pass on to the model.
        let prompt = if prompt.contains("BIGPROMPT") {
            Prompt::Tokens(vec![1; 100_000])
        } else if prompt.contains("BADTOKEN") {
            Prompt::Tokens(vec![1, 2, u32::MAX])
        } else if prompt.contains("ESCAPE") {
            // What the sandbox lets a policy reach: files, environment, network.
            let file = std::fs::read("/etc/hostname")
                .map(|b| b.len())
                .map_err(|e| e.kind());
            let env = std::env::vars().count();
            let net = std::net::TcpStream::connect("127.0.0.1:22")
                .map(|_| ())
                .map_err(|e| e.kind());
            Prompt::Text(format!("file: {file:?}; env vars: {env}; net: {net:?}"))
        } else if prompt.contains("CLOCK") {
            // What the sandbox lets a policy know of time (the host freezes it at zero).
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            Prompt::Text(format!("clock: {}", now.map_or(u64::MAX, |d| d.as_secs())))
        } else if prompt.contains("RANDOM") {
            Prompt::Text(randomness())
        } else {
            Prompt::Text(prompt)
        };
        // Says it left out as many old records as the prompt has `DROP`s, so the host's
        // accounting of them can be checked.
        let dropped_records = input.prompt.matches("DROP").count() as u32;
        Ok(Step::Ready(Prepared {
            prompt,
            want_reply_tokens: false,
            carry: Vec::new(),
            dropped_records,
        }))
    }

    fn commit(
        input: TurnInput,
        _settings: Settings,
        _carry: Vec<u8>,
        _reply: Reply,
    ) -> Result<Option<Vec<u8>>, PolicyError> {
        if input.prompt.contains("BADREC") {
            return Ok(Some(vec![1, 2, 3]));
        }
        if input.prompt.contains("RANDOM") {
            return Ok(Some(randomness().into_bytes()));
        }
        Ok(Some(input.prompt.into_bytes()))
    }
}

/// What a policy draws from `wasi:random` without asking: std's hash map keys (so the order
/// a map iterates in) and a hash of a fixed value. Equal on every run when the host seeds it.
fn randomness() -> String {
    use std::collections::HashMap;
    use std::hash::BuildHasher;
    let map: HashMap<u32, ()> = (0..32).map(|k| (k, ())).collect();
    let order: Vec<u32> = map.keys().copied().collect();
    let hash = std::collections::hash_map::RandomState::new().hash_one("discedge");
    format!("random: order {order:?}, hash {hash:016x}")
}

/// Burns fuel or epochs until the host interrupts it; `black_box` keeps the loop alive.
fn spin_forever() -> ! {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Allocates 1 GiB filled with ones (so every page is written, not just reserved).
fn hog_memory() {
    let block = vec![1u8; ONE_GIB];
    black_box(&block);
}

export!(Component);
