//! The `json_command` check (`../checks/json_command.rs`, also replayed over `seeds/` by CI in
//! `servers/tests/fuzz_seeds.rs`) under libFuzzer.
#![no_main]

#[path = "../checks/json_command.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
