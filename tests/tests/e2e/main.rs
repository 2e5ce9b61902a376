#![allow(clippy::unwrap_used)]
//! End-to-end: the real `quarry` binary on real files. One test binary, modules by topic.

mod bad_input;
mod dashboard;
mod distributed;
mod explain;
mod faults;
mod fit_predict;
mod forecast;
mod high_cardinality;
mod integrity;
mod leases;
mod memory;
mod onnx_parity;
mod ownership;
mod security;
mod serving;
mod slowloris;
mod tls;
mod worker_auth;
