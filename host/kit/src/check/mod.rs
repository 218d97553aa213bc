//! `discedge policy check FILE.wasm`: loads a component as the proxy does, then plays
//! generated sessions through it on fresh instances, twice each, and reports what breaks the
//! contract: a bad `info`, a trap (panic, timeout, memory), a token prompt beyond the window
//! or outside the vocabulary, a different output for the same input, a miscounted
//! `dropped-records`, or an ordinary session declined.

mod cases;
mod turn;

use std::sync::Arc;
use std::time::Duration;

use discedge_core::policy::runtime::PolicyInfo;
use discedge_core::policy::{HostServices, LoadedPolicy};
use discedge_lab::byte_tokenizer::ByteTokenizer;

use crate::args::CheckArgs;
use crate::load::{GgufTokenizer, Opened, open};
use cases::Case;
use turn::{Played, Verdict};

/// What a check found: violations fail it, warnings are printed for the author.
#[derive(Debug, Default)]
pub struct Report {
    pub violations: Vec<String>,
    pub warnings: Vec<String>,
    /// The time of every policy step (instantiate + prepare + commit).
    pub steps: Vec<Duration>,
}

/// Runs the check, prints the report, and fails if the contract was broken.
pub fn run(args: &CheckArgs) -> anyhow::Result<Report> {
    let (services, vocab, tokenizer): (Arc<dyn HostServices>, u32, String) = match &args.gguf {
        Some(gguf) => {
            let t = GgufTokenizer::load(gguf)?;
            let vocab = t.0.vocab_size() as u32;
            (Arc::new(t), vocab, format!("{} (GGUF)", gguf.display()))
        }
        None => (
            Arc::new(ByteTokenizer),
            discedge_lab::fake_llm::N_VOCAB,
            "FAKE byte tokenizer".into(),
        ),
    };
    let opened = open(&args.file, &args.limits, services.clone())?;
    println!(
        "policy check: {} loads as the proxy loads it ({}; {} bytes); tokenizer: {tokenizer}",
        args.file.display(),
        opened.policy.label(),
        std::fs::metadata(&args.file).map_or(0, |m| m.len()),
    );
    let template = args.model.template().map_err(anyhow::Error::msg)?;
    let player = turn::Player {
        opened: &opened,
        services,
        vocab,
    };
    let mut report = Report::default();
    check_info(&opened, &mut report);
    let ordinary = cases::ordinary_and_odd(
        &template,
        args.model.n_ctx,
        args.model.reply_budget,
        &args.prompts,
    );
    let mut own_record = None;
    for case in &ordinary {
        let played = player.play(case, &mut report);
        if case.name == "first turn" {
            own_record = played.records.into_iter().next();
        }
    }
    let odd = cases::odd_records(
        &template,
        args.model.n_ctx,
        args.model.reply_budget,
        own_record.as_deref(),
    );
    for case in &odd {
        player.play(case, &mut report);
    }
    summarise(&report, &args.limits);
    anyhow::ensure!(
        report.violations.is_empty(),
        "{} breaks the contract ({} violations)",
        args.file.display(),
        report.violations.len()
    );
    Ok(report)
}

/// `info` as `GET /policies` shows it: a version and one line of description, the same on
/// every call.
fn check_info(opened: &Opened, report: &mut Report) {
    let info = &opened.policy.info;
    println!(
        "info: version {:?}, {}, history {}: {:?}",
        info.version,
        if info.stores_context {
            "stores context"
        } else {
            "stores nothing"
        },
        if opened.policy.has_history() {
            "yes"
        } else {
            "no"
        },
        info.description
    );
    for problem in info_problems(info) {
        report.violations.push(format!("info: {problem}"));
        println!("  FAIL  info: {problem}");
    }
    match again_info(&opened.policy, opened) {
        Ok(again) if format!("{again:?}") == format!("{info:?}") => {}
        Ok(again) => {
            let why = format!("info: a second call answered differently: {again:?}");
            println!("  FAIL  {why}");
            report.violations.push(why);
        }
        Err(e) => {
            let why = format!("info: a second call failed: {e}");
            println!("  FAIL  {why}");
            report.violations.push(why);
        }
    }
}

fn again_info(policy: &LoadedPolicy, opened: &Opened) -> Result<PolicyInfo, String> {
    let mut instance = policy
        .instantiate(&opened.runtime, Arc::new(ByteTokenizer))
        .map_err(|e| e.to_string())?;
    instance.info().map_err(|e| e.to_string())
}

/// What is wrong with an `info` answer, if anything.
fn info_problems(info: &PolicyInfo) -> Vec<String> {
    let mut problems = Vec::new();
    let version = info.version.trim();
    if version.is_empty() {
        problems.push("version is empty".into());
    } else if version.len() > 64
        || info
            .version
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        problems.push(format!(
            "version {:?} is not one short word (at most 64 bytes, no spaces)",
            info.version
        ));
    }
    if info.description.trim().is_empty() {
        problems.push("description is empty".into());
    } else if info.description.len() > 300 || info.description.chars().any(char::is_control) {
        problems.push("description is not one line of at most 300 bytes".into());
    }
    problems
}

fn summarise(report: &Report, limits: &crate::args::LimitArgs) {
    let mut steps = report.steps.clone();
    steps.sort();
    if let (Some(median), Some(slowest)) = (steps.get(steps.len() / 2), steps.last()) {
        println!(
            "steps: {} (instantiate + prepare + commit), median {:.2} ms, slowest {:.2} ms; limits {} ms and {} MiB per call",
            steps.len(),
            median.as_secs_f64() * 1e3,
            slowest.as_secs_f64() * 1e3,
            limits.policy_timeout_ms,
            limits.policy_memory_mib,
        );
    }
    println!(
        "result: {} violations, {} warnings",
        report.violations.len(),
        report.warnings.len()
    );
}

/// Prints one case's outcome line.
fn print_case(case: &Case, played: &Played) {
    let tag = match played.verdict {
        Verdict::Ok => "ok  ",
        Verdict::Warn => "WARN",
        Verdict::Fail => "FAIL",
    };
    println!("  {tag}  {}: {}", case.name, played.summary);
    for note in &played.notes {
        println!("          {note}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(version: &str, description: &str) -> PolicyInfo {
        PolicyInfo {
            version: version.into(),
            description: description.into(),
            stores_context: true,
        }
    }

    #[test]
    fn info_must_be_a_version_and_one_line() {
        assert!(info_problems(&info("1.2.0", "Keeps it all")).is_empty());
        assert_eq!(info_problems(&info("", "x")).len(), 1);
        assert_eq!(info_problems(&info("1 2", "x")).len(), 1);
        assert_eq!(info_problems(&info("1", "")).len(), 1);
        assert_eq!(info_problems(&info("1", "two\nlines")).len(), 1);
    }
}
