//! FReD's client API, generated from `fred_client.proto`: `client_client::ClientClient` to call
//! a FReD node, `client_server::{Client, ClientServer}` to implement one (the test node).
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("mcc.fred.client");

/// FReD's trigger node API, generated from `fred_trigger.proto`: the service a FReD node calls
/// after each write (`trigger_node_server` for the proxy's feed, `trigger_node_client` to call one).
pub mod trigger {
    tonic::include_proto!("mcc.fred.trigger");
}
