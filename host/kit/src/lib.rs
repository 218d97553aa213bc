//! DisCEdge's kit for policy authors, behind `discedge policy`: `new` writes a ready Rust or
//! Python policy project, `check` loads a component as the proxy does and checks the
//! contract on generated sessions, and `test` plays a scenario through a policy showing each
//! turn's prompt and record. Never linked into the server.
pub mod args;
pub mod check;
mod load;
pub mod new;
pub mod play;

use args::{PolicyArgs, PolicyCommand};

/// `discedge policy ...`: runs one of the kit's commands; an error (a contract violation
/// included) makes the command exit non-zero.
pub async fn run(args: PolicyArgs) -> anyhow::Result<()> {
    match args.command {
        PolicyCommand::New(args) => new::run(&args).map(|_| ()),
        PolicyCommand::Check(args) => {
            tokio::task::spawn_blocking(move || check::run(&args).map(|_| ())).await?
        }
        PolicyCommand::Test(args) => play::run(args).await,
    }
}
