//! Diagnostics: the trivial `Echo` RPC that the benchmark measures every scenario against. No
//! domain, no store: it exists to cost nothing beyond the shared RPC path.

pub mod grpc;
