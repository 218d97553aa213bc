//! One generated session played through the policy as the proxy plays a turn (a fresh
//! instance, `prepare`, the model's reply, `commit`), each turn twice to catch an output that
//! is not a function of the input alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use discedge_core::policy::runtime::{Prepared, Prompt, Reply, Settings, TurnInput};
use discedge_core::policy::{CallFailure, HostServices, check_token_prompt, prepare_blocking};
use discedge_core::store::Record;
use serde_json::{Map, Value, json};

use super::Report;
use super::cases::Case;
use crate::load::Opened;

/// Plays cases through one loaded policy.
pub struct Player<'a> {
    pub opened: &'a Opened,
    pub services: Arc<dyn HostServices>,
    /// Token ids must be below this.
    pub vocab: u32,
}

/// How a case went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// A played case: its verdict, one line about it, what went wrong, and the records it left.
pub struct Played {
    pub verdict: Verdict,
    pub summary: String,
    pub notes: Vec<String>,
    pub records: Vec<Record>,
    /// Kinds of warning given already: each is told once per case, on its first turn.
    warned: Vec<&'static str>,
}

/// One policy step, as the host sees it.
struct Step {
    prepared: Result<Prepared, CallFailure>,
    /// `commit`'s answer; `None` when it was not called.
    record: Option<Result<Option<Vec<u8>>, CallFailure>>,
    time: Duration,
}

impl Played {
    fn fail(&mut self, report: &mut Report, case: &Case, why: String) {
        report.violations.push(format!("{}: {why}", case.name));
        self.notes.push(why);
        self.verdict = self.verdict.max(Verdict::Fail);
    }

    fn warn(&mut self, report: &mut Report, case: &Case, kind: &'static str, why: String) {
        if self.warned.contains(&kind) {
            return;
        }
        self.warned.push(kind);
        report.warnings.push(format!("{}: {why}", case.name));
        self.notes.push(why);
        self.verdict = self.verdict.max(Verdict::Warn);
    }
}

impl Player<'_> {
    /// Plays `case`, adds what it found to `report`, and prints its line.
    pub fn play(&self, case: &Case, report: &mut Report) -> Played {
        let mut played = Played {
            verdict: Verdict::Ok,
            summary: String::new(),
            notes: Vec::new(),
            records: case.records.clone(),
            warned: Vec::new(),
        };
        let stores = self.opened.policy.info.stores_context;
        let first_turn = played.records.len() as u32 + 1;
        let (mut served, mut largest) = (0, 0);
        for (i, message) in case.messages.iter().enumerate() {
            let turn = first_turn + i as u32;
            let mut settings = case.settings.clone();
            if turn != 1 {
                settings.system_prompt = None;
            }
            let input = TurnInput {
                session_id: "check".into(),
                user_id: "check".into(),
                turn,
                prompt: message.clone(),
            };
            let a = self.step(&played.records, &input, &settings, &case.reply);
            let b = self.step(&played.records, &input, &settings, &case.reply);
            report.steps.extend([a.time, b.time]);
            if let Some(what) = differs(&a, &b) {
                played.fail(
                    report,
                    case,
                    format!("turn {turn}: not deterministic: {what}"),
                );
                break;
            }
            let prepared = match a.prepared {
                Ok(prepared) => prepared,
                Err(CallFailure::Declined(e)) if !case.must_serve => {
                    played.notes.push(format!(
                        "turn {turn}: declined ({e:?}), which is allowed here"
                    ));
                    break;
                }
                Err(e) => {
                    played.fail(report, case, format!("turn {turn}: prepare {}", failed(&e)));
                    break;
                }
            };
            if prepared.dropped_records as usize > played.records.len() {
                let why = format!(
                    "turn {turn}: says it left out {} records of {}",
                    prepared.dropped_records,
                    played.records.len()
                );
                played.fail(report, case, why);
            }
            largest = largest.max(self.check_prompt(
                &prepared.prompt,
                &settings,
                turn,
                case,
                &mut played,
                report,
            ));
            match a.record {
                None | Some(Ok(None)) => {}
                Some(Ok(Some(record))) => played.records.push(record.into()),
                Some(Err(CallFailure::Declined(e))) if !case.must_serve => {
                    played.notes.push(format!(
                        "turn {turn}: commit declined ({e:?}), which is allowed here"
                    ));
                    break;
                }
                Some(Err(e)) => {
                    played.fail(report, case, format!("turn {turn}: commit {}", failed(&e)));
                    break;
                }
            }
            served += 1;
        }
        if stores {
            self.check_history(case, &mut played, report);
        }
        let bytes: usize = played.records.iter().map(Record::len).sum();
        played.summary = format!(
            "{served} of {} turns served, largest prompt {largest} tokens, {} records ({bytes} bytes)",
            case.messages.len(),
            played.records.len(),
        );
        super::print_case(case, &played);
        played
    }

    /// A fresh instance, `prepare`, a fake reply, `commit`, timed.
    fn step(
        &self,
        records: &[Record],
        input: &TurnInput,
        settings: &Settings,
        reply: &str,
    ) -> Step {
        let start = Instant::now();
        let policy = &self.opened.policy;
        let driven = prepare_blocking(
            policy,
            &self.opened.runtime,
            &self.services,
            records,
            input,
            settings,
            Some(self.vocab),
            |_| Ok(self.fake_answer()),
        );
        let (mut instance, prepared) = match driven {
            Ok(d) => (Some(d.instance), Ok(d.prepared)),
            Err(e) => (None, Err(e)),
        };
        let record = match &prepared {
            Ok(p) if policy.info.stores_context => {
                let reply = Reply {
                    content: reply.into(),
                    tokens: if p.want_reply_tokens {
                        self.services.tokenize(reply, false).unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                    stop_type: "eos".into(),
                };
                instance
                    .as_mut()
                    .map(|instance| instance.commit(input, settings, &p.carry, &reply))
            }
            _ => None,
        };
        Step {
            prepared,
            record,
            time: start.elapsed(),
        }
    }

    /// The fake model's answer to a completion the policy asks for (a summary, say): fixed,
    /// so a turn played twice gets the same one.
    fn fake_answer(&self) -> Map<String, Value> {
        let text = "The user and the assistant talked about the user's plans.";
        let tokens = self.services.tokenize(text, false).unwrap_or_default();
        let answer = json!({"content": text, "tokens": tokens, "stop_type": "eos"});
        answer.as_object().cloned().unwrap_or_default()
    }

    /// The proxy's own check of a token prompt (a violation), and whether a text prompt fits
    /// (a warning: the proxy passes text on, and llama-server refuses what does not fit).
    /// Returns the prompt's length in tokens.
    fn check_prompt(
        &self,
        prompt: &Prompt,
        settings: &Settings,
        turn: u32,
        case: &Case,
        played: &mut Played,
        report: &mut Report,
    ) -> usize {
        let (n_ctx, budget) = (settings.n_ctx, settings.reply_budget);
        let tokens = match prompt {
            Prompt::Unchanged => return 0,
            Prompt::Tokens(ids) => {
                if let Err(why) = check_token_prompt(ids, n_ctx, Some(self.vocab)) {
                    played.fail(
                        report,
                        case,
                        format!("turn {turn}: the proxy refuses this prompt: it {why}"),
                    );
                }
                ids.len()
            }
            Prompt::Text(text) => {
                let count = self
                    .services
                    .tokenize(text, true)
                    .map_or(0, |ids| ids.len());
                if count >= n_ctx as usize {
                    let why = format!(
                        "a text prompt of {count} tokens does not fit the window of {n_ctx}: llama-server refuses such turns (first on turn {turn})"
                    );
                    played.warn(report, case, "window", why);
                }
                count
            }
        };
        if tokens < n_ctx as usize && tokens + budget as usize > n_ctx as usize {
            let why = format!(
                "a prompt of {tokens} tokens leaves less than the reply budget ({budget}) free in the window of {n_ctx} (first on turn {turn})"
            );
            played.warn(report, case, "budget", why);
        }
        tokens
    }

    /// The optional `history` export on the session's records: no trap, the same answer twice.
    fn check_history(&self, case: &Case, played: &mut Played, report: &mut Report) {
        if !self.opened.policy.has_history() {
            return;
        }
        let mut settings = case.settings.clone();
        settings.request_json = "{}".into();
        let render = || {
            let mut instance = self
                .opened
                .policy
                .instantiate(&self.opened.runtime, self.services.clone())?;
            instance.render(&played.records, &settings)
        };
        let (a, b) = (render(), render());
        if format!("{a:?}") != format!("{b:?}") {
            played.fail(
                report,
                case,
                "history: rendered the same records differently".into(),
            );
            return;
        }
        match a {
            Ok(_) => {}
            Err(CallFailure::Declined(e)) if !case.must_serve => {
                played
                    .notes
                    .push(format!("history: declined ({e:?}), which is allowed here"));
            }
            Err(e) => played.fail(report, case, format!("history: render {}", failed(&e))),
        }
    }
}

/// How a call failed, for a report line.
fn failed(e: &CallFailure) -> String {
    match e {
        CallFailure::Declined(e) => format!("declined an ordinary turn: {e:?}"),
        CallFailure::Trapped(why) => format!("trapped: {why}"),
        CallFailure::Busy(why) => format!("found no free instance: {why}"),
    }
}

/// Where two runs of the same step differ, if they do.
fn differs(a: &Step, b: &Step) -> Option<&'static str> {
    if format!("{:?}", a.prepared) != format!("{:?}", b.prepared) {
        return Some("prepare answered differently on a fresh instance");
    }
    if format!("{:?}", a.record) != format!("{:?}", b.record) {
        return Some("commit stored a different record on a fresh instance");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use discedge_core::policy::runtime::PolicyError;

    fn step(prompt: &str, record: &[u8]) -> Step {
        Step {
            prepared: Ok(Prepared {
                prompt: Prompt::Text(prompt.into()),
                want_reply_tokens: false,
                carry: Vec::new(),
                dropped_records: 0,
            }),
            record: Some(Ok(Some(record.to_vec()))),
            time: Duration::ZERO,
        }
    }

    #[test]
    fn differs_names_the_call_that_changed() {
        assert_eq!(differs(&step("a", b"r"), &step("a", b"r")), None);
        assert!(
            differs(&step("a", b"r"), &step("b", b"r"))
                .unwrap()
                .starts_with("prepare")
        );
        assert!(
            differs(&step("a", b"r"), &step("a", b"s"))
                .unwrap()
                .starts_with("commit")
        );
        let declined = Step {
            prepared: Err(CallFailure::Declined(PolicyError::Internal("x".into()))),
            record: None,
            time: Duration::ZERO,
        };
        assert!(differs(&step("a", b"r"), &declined).is_some());
    }
}
