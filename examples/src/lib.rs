//! Shared flag parsing for the examples (no dependency beyond std).

use std::collections::HashMap;

/// `--key value` and `--flag` arguments.
#[derive(Debug, Default)]
pub struct Args {
    map: HashMap<String, String>,
}

impl Args {
    /// Parse `std::env::args()`; exits with a message on a malformed command line.
    pub fn parse(usage: &str) -> Self {
        let mut map = HashMap::new();
        let mut it = std::env::args().skip(1).peekable();
        while let Some(a) = it.next() {
            if a == "--help" || a == "-h" {
                println!("{usage}");
                std::process::exit(0);
            }
            let Some(key) = a.strip_prefix("--") else {
                eprintln!("unexpected argument `{a}`\n{usage}");
                std::process::exit(2);
            };
            let val = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().unwrap_or_default(),
                _ => "true".to_string(),
            };
            map.insert(key.to_string(), val);
        }
        Self { map }
    }

    /// A string flag with a default.
    pub fn str(&self, key: &str, default: &str) -> String {
        self.map
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    /// A parsed flag with a default; exits with a message on a bad value.
    pub fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        match self.map.get(key) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                eprintln!("bad value `{v}` for --{key}");
                std::process::exit(2);
            }),
        }
    }

    /// Whether a boolean flag is present.
    pub fn flag(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| v != "false")
    }
}

/// Print an error and exit with status 1.
pub fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1)
}
