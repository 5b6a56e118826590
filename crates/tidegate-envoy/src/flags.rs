//! Flags, the valid-code list and the FAQ artefact, pulled from a KV source and kept in
//! shared data so every worker serves one version.
//!
//! One worker at a time wins the refresh lease (`tg:kv:due`, a compare-and-swap on the next
//! due time) and pulls each key; a changed value is written under `tg:f:<key>` and the
//! generation `tg:f:gen` goes up. Every VM compares the generation on each request and
//! re-reads only when it moved. A failed pull writes nothing: the last good copy stays.

use std::sync::Arc;

use tidegate_core::faq::KnowledgeBase;
use tidegate_core::reply::CodeSet;
use tidegate_core::tier::Tier;

use crate::shared::SharedData;

/// Generation of the flag set.
pub const GEN_KEY: &str = "tg:f:gen";
/// Next time a refresh is due (ms since the epoch).
pub const DUE_KEY: &str = "tg:kv:due";

fn flag_key(key: &str) -> String {
    format!("tg:f:{key}")
}

fn decode_u64(v: &[u8]) -> u64 {
    v.try_into().map(u64::from_le_bytes).unwrap_or(0)
}

/// Creates the generation and lease cells when a VM starts (see [`crate::shared::init_lock`]).
pub fn init<D: SharedData + ?Sized>(d: &D) -> Result<(), String> {
    for k in [GEN_KEY, DUE_KEY] {
        if d.get(k)?.is_none() {
            d.set(k, &0u64.to_le_bytes(), None)?;
        }
    }
    Ok(())
}

/// The current generation (0 before the first pull).
pub fn generation<D: SharedData + ?Sized>(d: &D) -> u64 {
    d.get(GEN_KEY)
        .ok()
        .flatten()
        .map_or(0, |(v, _)| decode_u64(&v))
}

/// True when this caller won the refresh due at or before `now_ms`; the next one is then due
/// `period_ms` later. At most one worker pulls per period.
pub fn claim_refresh<D: SharedData + ?Sized>(d: &D, now_ms: u64, period_ms: u64) -> bool {
    let Ok(Some((v, cas))) = d.get(DUE_KEY) else {
        return false;
    };
    if decode_u64(&v) > now_ms {
        return false;
    }
    let next = now_ms.saturating_add(period_ms);
    matches!(d.set(DUE_KEY, &next.to_le_bytes(), Some(cas)), Ok(true))
}

/// What a pull of one key returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pulled {
    /// The key has this value.
    Value(Vec<u8>),
    /// The source says the key is not set.
    Absent,
    /// The source could not be read: keep the last good value.
    Failed(String),
}

/// Classifies the source's reply to `GET <key>`: `None` for a transport failure or timeout.
pub fn classify(reply: Option<(u16, Vec<u8>)>) -> Pulled {
    match reply {
        None => Pulled::Failed("unreachable or timed out".into()),
        Some((200, body)) => Pulled::Value(body),
        Some((404, _)) => Pulled::Absent,
        Some((status, _)) => Pulled::Failed(format!("status {status}")),
    }
}

/// Stores a pulled key; returns true when its value changed (and the generation went up).
pub fn store<D: SharedData + ?Sized>(d: &D, key: &str, pulled: &Pulled) -> Result<bool, String> {
    let encoded = match pulled {
        Pulled::Value(v) => {
            let mut e = Vec::with_capacity(v.len() + 1);
            e.push(1);
            e.extend_from_slice(v);
            e
        }
        Pulled::Absent => vec![0],
        Pulled::Failed(_) => return Ok(false),
    };
    let k = flag_key(key);
    match d.get(&k)? {
        Some((cur, _)) if cur == encoded => return Ok(false),
        None if encoded == [0] => return Ok(false),
        _ => {}
    }
    d.set(&k, &encoded, None)?;
    for _ in 0..64 {
        let Some((v, cas)) = d.get(GEN_KEY)? else {
            d.set(GEN_KEY, &1u64.to_le_bytes(), None)?;
            return Ok(true);
        };
        let next = decode_u64(&v).wrapping_add(1);
        if d.set(GEN_KEY, &next.to_le_bytes(), Some(cas))? {
            return Ok(true);
        }
    }
    Err("flag generation contended".into())
}

/// A key's stored value (`None`: absent or never pulled).
pub fn read<D: SharedData + ?Sized>(d: &D, key: &str) -> Option<Vec<u8>> {
    let (v, _) = d.get(&flag_key(key)).ok().flatten()?;
    match v.split_first() {
        Some((1, rest)) => Some(rest.to_vec()),
        _ => None,
    }
}

/// The keys the filter pulls.
#[derive(Clone, Debug)]
pub struct FlagKeys {
    /// The tier flag (`[tiers].flag_key`).
    pub tier: String,
    /// The valid-code list (`[validation].codes_key`).
    pub codes: String,
    /// The FAQ artefact.
    pub faq: String,
}

impl FlagKeys {
    /// All keys, in pull order.
    pub fn all(&self) -> [&str; 3] {
        [&self.tier, &self.codes, &self.faq]
    }
}

/// One VM's parsed copy of the flags.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// The generation this copy was read at.
    pub generation: u64,
    /// Raw tier flag.
    pub tier: Option<String>,
    /// Valid promo codes.
    pub codes: Arc<CodeSet>,
    /// The FAQ knowledge base.
    pub kb: Option<Arc<KnowledgeBase>>,
}

impl Flags {
    /// The tier level for the gauge.
    pub fn tier_level(&self) -> u8 {
        self.tier
            .as_deref()
            .and_then(Tier::parse)
            .unwrap_or_default()
            .level()
    }
}

/// Reads the flags at `generation`. An artefact that does not load keeps `last`'s knowledge
/// base (the error is returned for the log).
pub fn load<D: SharedData + ?Sized>(
    d: &D,
    keys: &FlagKeys,
    generation: u64,
    last: &Flags,
) -> (Flags, Option<String>) {
    let text = |k: &str| read(d, k).map(|v| String::from_utf8_lossy(&v).trim().to_owned());
    let mut error = None;
    let kb = match read(d, &keys.faq) {
        None => None,
        Some(bytes) => match KnowledgeBase::from_artifact(&bytes) {
            Ok(kb) => Some(Arc::new(kb)),
            Err(e) => {
                error = Some(format!("FAQ artefact does not load: {e:?}"));
                last.kb.clone()
            }
        },
    };
    let flags = Flags {
        generation,
        tier: text(&keys.tier),
        codes: Arc::new(
            text(&keys.codes)
                .map(|c| CodeSet::parse(&c))
                .unwrap_or_default(),
        ),
        kb,
    };
    (flags, error)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    type Map = crate::testing::EnvoyLike;

    fn keys() -> FlagKeys {
        FlagKeys {
            tier: "tier".into(),
            codes: "promo_codes".into(),
            faq: "faq_kb".into(),
        }
    }

    #[test]
    fn a_change_bumps_the_generation_and_a_repeat_does_not() {
        let d = Map::default();
        init(&d).unwrap();
        assert_eq!(generation(&d), 0);
        assert!(store(&d, "tier", &Pulled::Value(b"economy".to_vec())).unwrap());
        assert_eq!(generation(&d), 1);
        assert!(!store(&d, "tier", &Pulled::Value(b"economy".to_vec())).unwrap());
        assert_eq!(generation(&d), 1);
        let (f, err) = load(&d, &keys(), 1, &Flags::default());
        assert!(err.is_none());
        assert_eq!(f.tier.as_deref(), Some("economy"));
        assert!(store(&d, "tier", &Pulled::Absent).unwrap());
        assert_eq!(load(&d, &keys(), 2, &f).0.tier, None);
    }

    #[test]
    fn a_failed_pull_keeps_the_last_good_value() {
        let d = Map::default();
        init(&d).unwrap();
        store(
            &d,
            "promo_codes",
            &Pulled::Value(b"SPRING618\nGROUP3\n".to_vec()),
        )
        .unwrap();
        let g = generation(&d);
        assert!(!store(&d, "promo_codes", &classify(None)).unwrap());
        assert!(!store(&d, "promo_codes", &classify(Some((500, vec![])))).unwrap());
        assert_eq!(generation(&d), g);
        let (f, _) = load(&d, &keys(), g, &Flags::default());
        assert!(f.codes.contains("GROUP3"));
    }

    #[test]
    fn a_broken_artefact_keeps_the_last_knowledge_base() {
        let d = Map::default();
        init(&d).unwrap();
        let art = tidegate_core::faq::build_artifact(
            r#"{"id":"refund","questions":["How do I get a refund?"],"answer":"Within 7 days."}"#,
        )
        .unwrap();
        store(&d, "faq_kb", &Pulled::Value(art)).unwrap();
        let (good, _) = load(&d, &keys(), 1, &Flags::default());
        assert!(good.kb.is_some());
        store(&d, "faq_kb", &Pulled::Value(b"garbage".to_vec())).unwrap();
        let (next, err) = load(&d, &keys(), 2, &good);
        assert!(err.is_some());
        assert!(next.kb.is_some(), "last good artefact kept");
    }

    #[test]
    fn one_refresh_per_period() {
        let d = Map::default();
        init(&d).unwrap();
        assert!(claim_refresh(&d, 1_000, 500));
        assert!(
            !claim_refresh(&d, 1_200, 500),
            "second worker in the same period"
        );
        assert!(claim_refresh(&d, 1_500, 500));
    }
}
