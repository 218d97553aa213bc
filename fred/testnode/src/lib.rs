//! `fred-testnode`: a FReD-compatible test node for tests; not FReD.
//!
//! Real FReD (TU Berlin's geo-distributed key-value store) cannot be installed in CI, so our
//! FReD client is tested against this test double. It serves FReD v0.2.19's client gRPC API
//! (`fred_proto`) over mTLS and reproduces the documented behaviour a client depends on
//! (`shared/fred-api.md`): name rules, per-keygroup roles keyed by the client certificate's CN,
//! mutable and immutable keygroups, vector-clock versions with siblings, tombstones, Scan/Keys,
//! leaderless replication that answers after its relay (or with simulated lag), stopped nodes
//! that catch up on restart, node-local triggers called after each stored write (over mTLS with
//! the node's certificate, before the write or the relay is acknowledged), and errors as status
//! Unknown with FReD-like messages. The conformance suite (`tests/conformance`, also run against real FReD by
//! `fred/conformance.sh`) holds it to what FReD v0.2.19 does.
//!
//! Several nodes run in one process and share a [`Cluster`] (the naming service etcd is to
//! FReD, plus the replication fabric). [`TestPki`] writes the certificates they need.
//!
//! Not reproduced: expiry enforcement (stored only), the client-IP SAN check, persistence,
//! zero entries in clocks (dropped here), recording a peer whose relay failed.

mod clock;
mod cluster;
mod dialer;
mod handle;
mod ops;
mod pki;
mod relay;
mod service;
mod tls;
mod trigger;
mod wait;

pub use cluster::{Cluster, NodeStats};
pub use handle::NodeHandle;
pub use pki::{TestPki, common_name};
pub use tls::NodeTls;
pub use wait::eventually;
