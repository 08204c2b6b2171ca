//! The config loader on any text: an error or a config, never a panic; a
//! config that loads also splits into its boot and live parts.
#![no_main]

use bluesminds::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = Config::from_yaml(text, "fuzz.yaml") {
        let _ = cfg.split();
    }
});
