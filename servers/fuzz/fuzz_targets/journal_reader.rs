//! The `journal_reader` check (`../checks/journal_reader.rs`, also replayed over `seeds/` by CI in
//! `servers/tests/fuzz_seeds.rs`) under libFuzzer.
#![no_main]

#[path = "../checks/journal_reader.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
