//! FReD's client API, generated from `fred_client.proto`: `client_client::ClientClient` to call
//! a FReD node, `client_server::{Client, ClientServer}` to implement one (the test node).
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("mcc.fred.client");
