//! The serving model's own tokenizer, read from the GGUF file llama-server loads, so a turn's
//! new text is tokenized in microseconds instead of an HTTP round trip to `/tokenize`. It is
//! used only once it has given exactly llama-server's ids on a probe corpus; otherwise, or
//! for a model it cannot read, `/tokenize` serves as before.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use discedge_tokenizer::{PROBES, Tokenizer};
use serde_json::{Value, json};

/// Where the proxy's tokenizer comes from (`--tokenizer`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TokenizerSource {
    /// The GGUF file llama-server names in `/props` (`model_path`), if this machine can read it.
    #[default]
    Auto,
    /// Always llama-server's `/tokenize`.
    Http,
    /// This GGUF file: a copy of the served model, when llama-server runs on another machine.
    Gguf(PathBuf),
}

impl std::str::FromStr for TokenizerSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "http" => Ok(Self::Http),
            "" => Err("empty: give auto, http or a GGUF file".into()),
            path => Ok(Self::Gguf(path.into())),
        }
    }
}

/// What the proxy tokenizes with now, and why.
#[derive(Debug, Clone)]
enum State {
    /// Not tried yet (or the model changed): the next tokenization tries.
    Untried,
    Loading,
    Local {
        gguf: PathBuf,
    },
    Remote {
        why: String,
    },
}

/// The local tokenizer of one llama-server, swapped out when it serves another model.
pub(crate) struct LocalTokenizer {
    source: TokenizerSource,
    current: ArcSwapOption<Tokenizer>,
    state: Mutex<State>,
}

impl Default for LocalTokenizer {
    fn default() -> Self {
        Self::new(TokenizerSource::Auto)
    }
}

impl LocalTokenizer {
    /// Nothing loaded yet; with `Http`, nothing ever is.
    pub fn new(source: TokenizerSource) -> Self {
        let state = match source {
            TokenizerSource::Http => State::Remote {
                why: "--tokenizer http".into(),
            },
            _ => State::Untried,
        };
        Self {
            source,
            current: ArcSwapOption::empty(),
            state: Mutex::new(state),
        }
    }

    /// The loaded tokenizer, if it passed its check.
    pub fn get(&self) -> Option<Arc<Tokenizer>> {
        self.current.load_full()
    }

    /// Claims the one attempt to load: the source to load from for the caller that should try
    /// now, `None` for everyone else (loading, loaded, refused, or `--tokenizer http`).
    pub fn begin(&self) -> Option<TokenizerSource> {
        let mut state = self.state.lock().unwrap();
        if !matches!(*state, State::Untried) {
            return None;
        }
        *state = State::Loading;
        Some(self.source.clone())
    }

    /// Installs what the attempt gave, or notes why the proxy keeps asking llama-server.
    pub fn finish(&self, outcome: Result<(Tokenizer, PathBuf), String>) {
        let mut state = self.state.lock().unwrap();
        match outcome {
            Ok((tokenizer, gguf)) => {
                tracing::info!(
                    gguf = %gguf.display(),
                    pre_tokenizer = tokenizer.pre_tokenizer(),
                    vocab = tokenizer.vocab_size(),
                    "tokenizing locally: the model's GGUF gives llama-server's ids on every probe"
                );
                self.current.store(Some(Arc::new(tokenizer)));
                *state = State::Local { gguf };
            }
            Err(why) => {
                tracing::warn!("tokenizing with llama-server's /tokenize: {why}");
                self.current.store(None);
                *state = State::Remote { why };
            }
        }
    }

    /// The served model changed: its tokenizer is read and checked again before use.
    pub fn forget(&self) {
        self.current.store(None);
        let mut state = self.state.lock().unwrap();
        if !matches!(self.source, TokenizerSource::Http) {
            *state = State::Untried;
        }
    }

    /// For `GET /health`: which tokenizer serves, and why not the local one.
    pub fn status(&self) -> Value {
        match &*self.state.lock().unwrap() {
            State::Local { gguf } => json!({ "via": "local", "gguf": gguf }),
            State::Remote { why } => json!({ "via": "llama-server", "why": why }),
            State::Untried | State::Loading => {
                json!({ "via": "llama-server", "why": "the model's GGUF is not checked yet" })
            }
        }
    }
}

/// Reads the GGUF at `gguf` (off the async threads: it reads the whole vocabulary) and checks
/// it against llama-server's `remote` tokenization of every probe, both ways of parsing
/// special tokens: a file other than the one served, or a llama.cpp whose tokenizer changed,
/// shows there.
pub(crate) async fn load_checked<F, Fut, E>(
    gguf: PathBuf,
    remote: F,
) -> Result<(Tokenizer, PathBuf), String>
where
    F: Fn(&'static str, bool) -> Fut,
    Fut: Future<Output = Result<Vec<u32>, E>>,
    E: std::fmt::Display,
{
    let path = gguf.clone();
    let tokenizer = tokio::task::spawn_blocking(move || Tokenizer::from_gguf(&path))
        .await
        .map_err(|e| format!("reading {} failed: {e}", gguf.display()))?
        .map_err(|e| format!("{}: {e}", gguf.display()))?;
    for probe in PROBES {
        for parse_special in [false, true] {
            let theirs = remote(probe, parse_special)
                .await
                .map_err(|e| format!("cannot check {}: {e}", gguf.display()))?;
            if tokenizer.tokenize(probe, parse_special) != theirs {
                return Err(format!(
                    "{} gives other ids than llama-server for {probe:?} (parse_special {parse_special}): not the model it serves?",
                    gguf.display()
                ));
            }
        }
    }
    Ok((tokenizer, gguf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!("auto".parse(), Ok(TokenizerSource::Auto));
        assert_eq!("http".parse(), Ok(TokenizerSource::Http));
        assert_eq!(
            "/m/model.gguf".parse(),
            Ok(TokenizerSource::Gguf("/m/model.gguf".into()))
        );
        assert!("".parse::<TokenizerSource>().is_err());
    }

    #[test]
    fn one_attempt_at_a_time_and_again_after_a_model_change() {
        let local = LocalTokenizer::new(TokenizerSource::Auto);
        assert_eq!(local.begin(), Some(TokenizerSource::Auto));
        assert_eq!(local.begin(), None, "loading: others keep using /tokenize");
        local.finish(Err("no model_path".into()));
        assert_eq!(local.begin(), None, "failed: not tried on every turn");
        assert_eq!(local.status()["why"], "no model_path");
        local.forget();
        assert_eq!(
            local.begin(),
            Some(TokenizerSource::Auto),
            "a new model is tried"
        );

        let never = LocalTokenizer::new(TokenizerSource::Http);
        assert_eq!(never.begin(), None);
        never.forget();
        assert_eq!(never.begin(), None);
        assert_eq!(never.status()["via"], "llama-server");
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_gguf_is_refused_with_its_name() {
        let dir = std::env::temp_dir().join(format!("discedge-gguf-{}", std::process::id()));
        std::fs::write(&dir, b"not a gguf").unwrap();
        let remote = |_: &'static str, _| async { Ok::<_, String>(vec![1]) };
        let err = load_checked(dir.clone(), remote).await.unwrap_err();
        std::fs::remove_file(&dir).ok();
        assert!(err.contains("discedge-gguf"), "{err}");
    }
}
