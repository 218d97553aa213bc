//! What the FReD examples share: the `discedge serve` command line of a proxy on a FReD node.

use std::path::Path;

use fred_testnode::TestPki;

/// `discedge serve --store fred ...` for a proxy acting as FReD user `user` (certificates from
/// `pki`) on node `node_id` at `fred_addr`, with the shipped policies, data in `data`, and
/// any `extra` flags.
pub fn fred_proxy_argv(
    pki: &TestPki,
    user: &str,
    node_id: &str,
    fred_addr: &str,
    llama_url: &str,
    data: &Path,
    extra: &[&str],
) -> Vec<String> {
    let plugins = concat!(env!("CARGO_MANIFEST_DIR"), "/../../plugins/dist");
    let path = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    let mut argv: Vec<String> = [
        "discedge",
        "serve",
        "--store",
        "fred",
        "--fred-addr",
        fred_addr,
        "--node-id",
        node_id,
        "--llama-url",
        llama_url,
        "--plugins-dir",
        plugins,
    ]
    .map(String::from)
    .into();
    argv.extend([
        "--fred-cert".into(),
        path(pki.cert(user)),
        "--fred-key".into(),
        path(pki.key(user)),
        "--fred-ca".into(),
        path(pki.ca()),
        "--data-dir".into(),
        path(data.to_path_buf()),
    ]);
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv
}
