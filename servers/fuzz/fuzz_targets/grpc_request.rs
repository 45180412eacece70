//! The `grpc_request` check (`../checks/grpc_request.rs`, also replayed over `seeds/` by CI in
//! `servers/tests/fuzz_seeds.rs`) under libFuzzer.
#![no_main]

#[path = "../checks/grpc_request.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
