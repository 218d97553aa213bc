//! A real FReD bed for the conformance suite: one TLS etcd and two `frednode`s (nodeA, nodeB,
//! memory adaptor) on free loopback ports, started with the repo's own `fred/run-etcd.sh` and
//! `fred/run-frednode.sh` so those scripts are exercised too. Dropping it kills every process
//! and removes the temporary folder.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

/// The started processes; killed on drop.
pub struct RealBed {
    children: Vec<(String, Child)>,
    /// Client API addresses of nodeA and nodeB.
    pub addrs: [SocketAddr; 2],
    /// Logs of every process, for failure messages.
    pub logs: PathBuf,
    /// Kept last so the folder outlives the processes.
    _dir: TempDir,
}

/// A free loopback port (bound, then released: good enough on a test machine).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn fred_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl RealBed {
    /// Starts etcd and the two nodes with the certificates in `certs` (`etcd`, `nodeA`,
    /// `nodeB`); `frednode` is the program to run.
    pub fn start(frednode: &str, certs: &Path) -> anyhow::Result<RealBed> {
        let dir = tempfile::Builder::new()
            .prefix("fred-conformance")
            .tempdir()?;
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs)?;
        let mut bed = RealBed {
            children: Vec::new(),
            addrs: ["127.0.0.1:0".parse()?; 2],
            logs,
            _dir: dir,
        };
        let (etcd_port, etcd_peer) = (free_port()?, free_port()?);
        let nase = format!("https://127.0.0.1:{etcd_port}");
        let etcd_data = bed._dir.path().join("etcd");
        let mut etcd = Command::new(fred_dir().join("run-etcd.sh"));
        etcd.arg("--certs").arg(certs);
        etcd.args(["--client-url", &nase]);
        etcd.args(["--peer-url", &format!("http://127.0.0.1:{etcd_peer}")]);
        etcd.arg(etcd_data);
        bed.spawn("etcd", etcd)?;
        bed.wait_port("etcd", etcd_port)?;

        for (i, node) in ["nodeA", "nodeB"].into_iter().enumerate() {
            let (host, peer) = (free_port()?, free_port()?);
            let mut cmd = Command::new(fred_dir().join("run-frednode.sh"));
            cmd.env("FREDNODE", frednode)
                .arg(node)
                .arg("--certs")
                .arg(certs);
            cmd.args([
                "--nase",
                &nase,
                "--adaptor",
                "memory",
                "--log-level",
                "warn",
            ]);
            cmd.args(["--host", &format!("127.0.0.1:{host}")]);
            cmd.args(["--peer-host", &format!("127.0.0.1:{peer}")]);
            bed.spawn(node, cmd)?;
            bed.wait_port(node, host)?;
            bed.wait_port(node, peer)?;
            bed.addrs[i] = SocketAddr::from(([127, 0, 0, 1], host));
        }
        Ok(bed)
    }

    fn spawn(&mut self, name: &str, mut cmd: Command) -> anyhow::Result<()> {
        let log = File::create(self.logs.join(format!("{name}.log")))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// Waits until `port` accepts connections, failing early if the process died.
    fn wait_port(&mut self, name: &str, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            let (_, child) = self.children.iter_mut().find(|(n, _)| n == name).unwrap();
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited ({status}); {}", self.log_tail(name));
            }
            if Instant::now() > deadline {
                bail!("{name} not listening on {addr}; {}", self.log_tail(name));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The end of one process's log.
    pub fn log_tail(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.logs.join(format!("{name}.log"))).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        format!(
            "{name}.log ends:\n{}",
            &text[text.ceil_char_boundary(start)..]
        )
    }
}

impl Drop for RealBed {
    fn drop(&mut self) {
        // Nodes first, etcd last, so the nodes do not log lost naming-service connections.
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
