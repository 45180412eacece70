//! The `inflate_frames` check (`../checks/inflate_frames.rs`, also replayed over `seeds/` by CI in
//! `servers/tests/fuzz_seeds.rs`) under libFuzzer.
#![no_main]

#[path = "../checks/inflate_frames.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
