//! The `extension_offer` check (`../checks/extension_offer.rs`, also replayed over `seeds/` by CI in
//! `servers/tests/fuzz_seeds.rs`) under libFuzzer.
#![no_main]

#[path = "../checks/extension_offer.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
