//! Variables: `{name}` placeholders in paths, header values, bodies and expected values, and
//! the generator of per-run unique values (`{run}`, `{ip}`, `{conv}`).
//!
//! A placeholder is a name of ASCII letters, digits and `_` (not starting with a digit) in
//! braces. An undefined name is an error, so a typo never reaches the gateway as literal text.
//! `{{` writes a literal `{`; any other `{` (as in a raw JSON body) is kept as it is.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A placeholder named a variable that is not defined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarError {
    /// The undefined name, without braces.
    pub name: String,
}

impl fmt::Display for VarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "undefined variable {{{}}}", self.name)
    }
}

impl std::error::Error for VarError {}

/// A set of variables, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vars {
    map: BTreeMap<String, String>,
}

impl Vars {
    /// An empty set.
    pub fn new() -> Self {
        Vars::default()
    }

    /// Defines or redefines `name`.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.map.insert(name.into(), value.into());
    }

    /// The value of `name`, if defined.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    /// `text` with every placeholder replaced.
    pub fn substitute(&self, text: &str) -> Result<String, VarError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            if let Some(tail) = after.strip_prefix('{') {
                out.push('{');
                rest = tail;
                continue;
            }
            match placeholder_name(after) {
                Some(name) => {
                    let value = self.get(name).ok_or_else(|| VarError {
                        name: name.to_owned(),
                    })?;
                    out.push_str(value);
                    // The name and its closing brace are ASCII: the slice stays on a boundary.
                    rest = &after[name.len() + 1..];
                }
                None => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// `value` with placeholders replaced in every string and object key, recursively.
    pub fn substitute_json(
        &self,
        value: &serde_json::Value,
    ) -> Result<serde_json::Value, VarError> {
        use serde_json::Value;
        Ok(match value {
            Value::String(s) => Value::String(self.substitute(s)?),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.substitute_json(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => {
                let mut out = serde_json::Map::with_capacity(map.len());
                for (k, v) in map {
                    out.insert(self.substitute(k)?, self.substitute_json(v)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }
}

/// If `after` (the text following a `{`) starts with `name}`, the name.
fn placeholder_name(after: &str) -> Option<&str> {
    let close = after.find('}')?;
    let name = &after[..close];
    let mut chars = name.chars();
    let first = chars.next()?;
    let ok = (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then_some(name)
}

/// Addresses available to `{ip}`: `10.a.b.c` with `c` in 1..=254.
const IP_SPACE: u64 = 254 * 65_536;

/// Hands out values unique within this process and, with high probability, across runs: a
/// gateway keeps its counters between runner invocations, so each run starts at a random
/// offset instead of zero.
#[derive(Debug)]
pub struct Uniques {
    seed: u64,
    ip_base: u64,
    conv_base: u64,
    next_run: AtomicU64,
    next_ip: AtomicU64,
    next_conv: AtomicU64,
}

impl Uniques {
    /// A generator seeded from the process's hash randomness and the clock.
    pub fn random() -> Self {
        let mut h = RandomState::new().build_hasher();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        Uniques::with_seed(h.finish())
    }

    /// A deterministic generator (for tests).
    pub fn with_seed(seed: u64) -> Self {
        Uniques {
            seed,
            ip_base: splitmix64(seed ^ 0x1f) % IP_SPACE,
            conv_base: 100_000_000 + splitmix64(seed ^ 0x2f) % 1_000_000_000,
            next_run: AtomicU64::new(0),
            next_ip: AtomicU64::new(0),
            next_conv: AtomicU64::new(0),
        }
    }

    /// 16 lowercase hex digits; never repeats within one generator.
    pub fn run_id(&self) -> String {
        let n = self.next_run.fetch_add(1, Ordering::Relaxed);
        // splitmix64 is a bijection, so distinct inputs give distinct ids.
        format!("{:016x}", splitmix64(self.seed.wrapping_add(n)))
    }

    /// An address `10.a.b.c` (`c` never 0 nor 255); repeats only after 16.6 million calls.
    pub fn ip(&self) -> String {
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
        let idx = (self.ip_base + n) % IP_SPACE;
        let host = idx % 254 + 1;
        let net = idx / 254;
        format!("10.{}.{}.{}", net >> 8, net & 0xff, host)
    }

    /// A decimal conversation id below 2^31 (fits the 32-bit ids Chatwoot uses).
    pub fn conv(&self) -> u64 {
        let n = self.next_conv.fetch_add(1, Ordering::Relaxed);
        self.conv_base + n % 1_000_000_000
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn vars() -> Vars {
        let mut v = Vars::new();
        v.set("run", "abc123");
        v.set("ip", "10.1.2.3");
        v.set("admin_token", "s3cret");
        v
    }

    #[test]
    fn replaces_known_names() {
        let v = vars();
        assert_eq!(v.substitute("u-{run}").unwrap(), "u-abc123");
        assert_eq!(
            v.substitute("{ip}, 127.0.0.1").unwrap(),
            "10.1.2.3, 127.0.0.1"
        );
        assert_eq!(
            v.substitute("Bearer {admin_token}").unwrap(),
            "Bearer s3cret"
        );
        assert_eq!(v.substitute("{run}{run}").unwrap(), "abc123abc123");
        assert_eq!(v.substitute("").unwrap(), "");
    }

    #[test]
    fn undefined_name_is_an_error() {
        let err = vars().substitute("u-{rnu}").unwrap_err();
        assert_eq!(err.name, "rnu");
        assert_eq!(err.to_string(), "undefined variable {rnu}");
    }

    #[test]
    fn braces_that_are_not_placeholders_stay() {
        let v = vars();
        let raw = r#"{"messages": [{"role":"user"}], "x": {}} { run} {1a} {"#;
        assert_eq!(v.substitute(raw).unwrap(), raw);
        // A name inside JSON-looking text is still a placeholder.
        assert_eq!(
            v.substitute(r#"{"user":"{run}"}"#).unwrap(),
            r#"{"user":"abc123"}"#
        );
    }

    #[test]
    fn double_brace_escapes() {
        assert_eq!(
            vars().substitute("{{run} is {run}").unwrap(),
            "{run} is abc123"
        );
        assert_eq!(vars().substitute("{{{{").unwrap(), "{{");
    }

    #[test]
    fn multibyte_text_around_placeholders() {
        assert_eq!(
            vars().substitute("订单{run}号码「{ip}」").unwrap(),
            "订单abc123号码「10.1.2.3」"
        );
        assert_eq!(vars().substitute("{订单}").unwrap(), "{订单}");
    }

    #[test]
    fn json_strings_and_keys_are_substituted() {
        let v = vars();
        let body = serde_json::json!({
            "user": "u-{run}",
            "n": 3,
            "messages": [{"role": "user", "content": "from {ip}"}],
            "{run}": true
        });
        let out = v.substitute_json(&body).unwrap();
        assert_eq!(
            out,
            serde_json::json!({
                "user": "u-abc123",
                "n": 3,
                "messages": [{"role": "user", "content": "from 10.1.2.3"}],
                "abc123": true
            })
        );
        assert!(v.substitute_json(&serde_json::json!(["{nope}"])).is_err());
    }

    #[test]
    fn uniques_do_not_repeat() {
        let u = Uniques::with_seed(7);
        let runs: HashSet<_> = (0..10_000).map(|_| u.run_id()).collect();
        assert_eq!(runs.len(), 10_000);
        let ips: HashSet<_> = (0..10_000).map(|_| u.ip()).collect();
        assert_eq!(ips.len(), 10_000);
        let convs: HashSet<_> = (0..10_000).map(|_| u.conv()).collect();
        assert_eq!(convs.len(), 10_000);
    }

    #[test]
    fn ips_are_valid_private_hosts_even_when_wrapping() {
        let u = Uniques::with_seed(1);
        // Force the wrap-around region of the address space.
        u.next_ip.store(IP_SPACE - u.ip_base - 2, Ordering::Relaxed);
        for _ in 0..600 {
            let ip = u.ip();
            let parts: Vec<u32> = ip.split('.').map(|p| p.parse().unwrap()).collect();
            assert_eq!(parts.len(), 4, "{ip}");
            assert_eq!(parts[0], 10);
            assert!(parts[1] <= 255 && parts[2] <= 255, "{ip}");
            assert!((1..=254).contains(&parts[3]), "{ip}");
        }
    }

    #[test]
    fn ids_have_the_documented_shape() {
        let u = Uniques::random();
        let id = u.run_id();
        assert_eq!(id.len(), 16);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(u.conv() < (1 << 31));
    }
}
