//! Conformance suite for FReD's client API: the same cases run against our in-process test
//! node (default, CI) and against real FReD v0.2.19 (`FREDNODE=/path/to/frednode`, see
//! `fred/conformance.sh`), so the test node is held to what real FReD does.
//!
//! Own runner (`harness = false`): one bed (two nodes, nodeA and nodeB) serves every case, each
//! case in its own keygroups, and the bed is torn down at the end (real processes killed, temp
//! folders removed), which libtest has no hook for. Args: a name filter; `--list`.

mod calls;
mod real;
mod replication;
mod tombstones;
mod trigger_calls;
mod trigger_node;
mod triggers;
mod versions;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use calls::*;
use fred_proto::client_client::ClientClient;
use fred_proto::*;
use fred_testnode::{Cluster, NodeHandle, TestPki};
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use trigger_node::Triggers;

pub type Fred = ClientClient<Channel>;
type CaseFn = fn(Bed) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Every case, as `module::name`.
macro_rules! cases {
    ($($m:ident :: $f:ident),* $(,)?) => {
        &[$((concat!(stringify!($m), "::", stringify!($f)), |b| Box::pin($m::$f(b)))),*]
    };
}

const CASES: &[(&str, CaseFn)] = cases![
    versions::update_without_versions_ticks_the_writer,
    versions::empty_clock_creates_only_if_absent,
    versions::versions_must_cover_every_known_version,
    versions::tombstones_count_as_known_versions,
    versions::update_without_versions_replaces_siblings,
    versions::read_with_versions_returns_stored_versions_they_cover,
    replication::update_answers_after_the_peer_has_it,
    replication::concurrent_updates_leave_the_same_siblings_on_both_nodes,
    replication::delete_naming_one_sibling_keeps_the_other,
    replication::any_utf8_value_comes_back_byte_for_byte,
    tombstones::read_hides_tombstones,
    tombstones::delete_needs_an_item_but_a_tombstone_will_do,
    tombstones::scan_and_keys_start_at_an_existing_id_tombstones_included,
    tombstones::scan_counts_versions_and_returns_each_sibling,
    tombstones::scan_order_puts_longer_ids_first,
    triggers::triggers_are_registered_per_node,
    trigger_calls::writes_call_the_replicas_triggers_then_the_writers,
    trigger_calls::triggers_are_node_local,
    trigger_calls::triggers_are_called_in_parallel_and_waited_for,
    trigger_calls::appends_call_triggers_like_updates,
    trigger_calls::a_failing_trigger_fails_only_its_own_nodes_write,
    trigger_calls::an_erring_trigger_on_a_replica_does_not_fail_the_write,
    trigger_calls::nodes_check_the_trigger_nodes_certificate,
];

/// Relay latency of the test node in this suite: long enough that concurrent writes overlap and
/// that an Update answering before its relay would be caught.
const TEST_NODE_DELAY: Duration = Duration::from_millis(60);

/// Two nodes (nodeA, nodeB) and the certificate of user `alice`; cheap to clone.
#[derive(Clone)]
pub struct Bed(Arc<BedInner>);

struct BedInner {
    certs: PathBuf,
    addrs: [String; 2],
    real: bool,
    next_kg: AtomicU32,
    triggers: Triggers,
    _keep: Keep,
}

/// What keeps the bed alive; dropped (torn down) after the last case.
#[allow(dead_code, reason = "held for its Drop")]
enum Keep {
    TestNode(Cluster, Vec<NodeHandle>),
    Real(real::RealBed),
}

impl Bed {
    async fn start(dir: &TempDir) -> anyhow::Result<Bed> {
        let pki = TestPki::generate(dir.path(), &["nodeA", "nodeB", "etcd", "alice", "trigger"])?;
        let foreign = TestPki::generate(&dir.path().join("foreign"), &["trigger"])?;
        let triggers = Triggers::start(&pki, &foreign).await?;
        let (addrs, real, keep) = match std::env::var("FREDNODE") {
            Ok(frednode) if !frednode.is_empty() => {
                let bed = real::RealBed::start(&frednode, &pki.dir)?;
                (bed.addrs, true, Keep::Real(bed))
            }
            _ => {
                let cluster = Cluster::new();
                cluster.set_replication_delay(TEST_NODE_DELAY);
                let mut nodes = Vec::new();
                for node in ["nodeA", "nodeB"] {
                    let any = "127.0.0.1:0".parse()?;
                    nodes.push(cluster.start_node(node, any, pki.node_tls(node)).await?);
                }
                (
                    [nodes[0].addr(), nodes[1].addr()],
                    false,
                    Keep::TestNode(cluster, nodes),
                )
            }
        };
        let bed = Bed(Arc::new(BedInner {
            certs: pki.dir,
            addrs: addrs.map(|a| a.to_string()),
            real,
            next_kg: AtomicU32::new(0),
            triggers,
            _keep: keep,
        }));
        bed.wait_for_both_nodes().await?;
        Ok(bed)
    }

    /// Real nodes register in etcd after their ports open: wait until nodeA knows nodeB.
    async fn wait_for_both_nodes(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut a) = self.client(0).await
                && let Ok(all) = a.get_all_replica(Empty {}).await
                && all.into_inner().replicas.len() >= 2
            {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "nodes never both registered");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether this is real FReD (only for messages; cases assert the same on both).
    pub fn is_real(&self) -> bool {
        self.0.real
    }

    /// The suite's trigger nodes; each records calls per keygroup, so cases don't mix.
    pub fn triggers(&self) -> &Triggers {
        &self.0.triggers
    }

    /// A client of node `i` (0 = nodeA, 1 = nodeB) as user alice.
    pub async fn client(&self, i: usize) -> anyhow::Result<Fred> {
        let read = |name: &str| std::fs::read(self.0.certs.join(name));
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("ca.crt")?))
            .identity(Identity::from_pem(read("alice.crt")?, read("alice.key")?))
            .domain_name("localhost");
        let channel = Endpoint::from_shared(format!("https://{}", self.0.addrs[i]))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .tls_config(tls)?
            .connect()
            .await?;
        Ok(ClientClient::new(channel))
    }

    /// A fresh mutable keygroup created on nodeA with nodeB added as replica; clients of both.
    pub async fn keygroup(&self) -> (String, Fred, Fred) {
        self.keygroup_of(true).await
    }

    /// The same, mutable or not.
    pub async fn keygroup_of(&self, mutable: bool) -> (String, Fred, Fred) {
        let n = self.0.next_kg.fetch_add(1, Ordering::SeqCst);
        let kg = format!("conf{}x{n}", std::process::id());
        let mut a = self.client(0).await.expect("client of nodeA");
        let b = self.client(1).await.expect("client of nodeB");
        let create = CreateKeygroupRequest {
            keygroup: kg.clone(),
            mutable,
            expiry: 0,
        };
        a.create_keygroup(create).await.expect("CreateKeygroup");
        let add = AddReplicaRequest {
            keygroup: kg.clone(),
            node_id: "nodeB".into(),
            expiry: 0,
        };
        a.add_replica(add).await.expect("AddReplica nodeB");
        (kg, a, b)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in CASES {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let filter = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .cloned()
        .unwrap_or_default();
    let cases: Vec<_> = CASES.iter().filter(|(n, _)| n.contains(&filter)).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let failed = rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let bed = match Bed::start(&dir).await {
            Ok(bed) => bed,
            Err(e) => {
                eprintln!("could not start the bed: {e:#}");
                return usize::MAX;
            }
        };
        let backend = if bed.is_real() {
            "real FReD (FREDNODE)"
        } else {
            "fred-testnode"
        };
        println!(
            "\nrunning {} conformance tests against {backend}",
            cases.len()
        );
        let mut failed = Vec::new();
        for (name, case) in &cases {
            let run = tokio::spawn(tokio::time::timeout(
                Duration::from_secs(120),
                case(bed.clone()),
            ));
            let outcome = match run.await {
                Ok(Ok(())) => "ok",
                Ok(Err(_)) => "FAILED (timed out)",
                Err(_) => "FAILED",
            };
            println!("test {name} ... {outcome}");
            if outcome != "ok" {
                failed.push(*name);
            }
        }
        if !failed.is_empty() {
            if let Keep::Real(real) = &bed.0._keep {
                eprintln!("{}\n{}", real.log_tail("nodeA"), real.log_tail("nodeB"));
            }
            println!("\nfailures:\n    {}", failed.join("\n    "));
        }
        let passed = cases.len() - failed.len();
        let verdict = if failed.is_empty() { "ok" } else { "FAILED" };
        println!(
            "\ntest result: {verdict}. {passed} passed; {} failed ({backend})\n",
            failed.len()
        );
        drop(bed);
        failed.len()
    });
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
