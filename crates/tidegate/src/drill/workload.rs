//! The query mix: real questions written by people, in sale-day proportions, plus the abusive
//! clients and the steering that makes the stand-in origin misbehave now and then.
//!
//! Customers ask banking77 questions (held-out test split: none of them is a phrasing in the
//! knowledge base), click quick-reply buttons (the widget sends the FAQ's own question, as
//! chat widgets do), repeat the day's hot questions verbatim, and ask things the knowledge
//! base does not cover (clinc150 out-of-scope and other domains), which must never get a
//! cached answer.

use serde_json::{json, Value};

/// The FAQ knowledge base the drill loads into the gateway (banking77, five phrasings each).
pub const KB_JSONL: &str = include_str!("../../../../data/banking77/kb-five.jsonl");
/// Labelled queries the drill asks (`expected` null = should miss).
const QUERIES_JSONL: &str = include_str!("../../../../data/banking77/queries-test.jsonl");
/// The promo codes the drill declares valid (KV `promo_codes`).
pub const VALID_CODES: [&str; 2] = ["SPRING618", "GROUP3"];

/// A small deterministic generator (splitmix64): same seed, same drill.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0.0..1.0`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// A random element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }
}

/// One FAQ entry's id, its question as the widget's button shows it, and the held-out
/// phrasings customers type.
#[derive(Clone, Debug)]
pub struct Intent {
    /// Entry id.
    pub id: String,
    /// The entry's first question (a quick-reply button sends it verbatim).
    pub button: String,
    /// Held-out phrasings of this intent.
    pub phrasings: Vec<String>,
}

/// The questions the drill can ask.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// Intents, hottest first (a seeded shuffle, then Zipf weights by rank).
    pub intents: Vec<Intent>,
    /// Cumulative Zipf weights over `intents`.
    cumulative: Vec<f64>,
    /// Questions the knowledge base does not cover.
    pub should_miss: Vec<String>,
    /// The day's hot questions, typed the same way by many customers.
    pub hot: Vec<(String, String)>,
}

/// Where a message's text came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A quick-reply button: the FAQ's own question.
    Button,
    /// One of the day's hot questions, repeated verbatim.
    HotText,
    /// A banking77 question typed freely (held out from the knowledge base).
    FreeText,
    /// A question the knowledge base does not cover.
    OutOfScope,
}

/// Who sends a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Who {
    /// A customer with a working challenge widget.
    Customer,
    /// A customer whose widget fails the challenge (the case study's 19:23 mobile incident).
    WidgetFailed,
    /// A bot without a valid challenge token.
    Bot,
    /// Many users behind one IP, hammering.
    Hammer,
    /// One user sending a burst.
    Burster,
}

/// How the stand-in origin is told to misbehave for one request (ignored when the gateway
/// answers itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Steer {
    /// Answer normally.
    Normal,
    /// Invent this promo code in the reply.
    FakeCode(String),
    /// Mention a valid promo code (must survive validation).
    ValidCode,
    /// Answer with this 5xx status.
    ServerError(u16),
    /// Answer 503 with `Retry-After` (the origin asks to slow down).
    Busy,
    /// Drop the connection part-way through the reply.
    Cut,
    /// End the stream with the API's in-stream error.
    StreamError,
    /// Say "I don't know".
    DontKnow,
}

impl Steer {
    /// Stable name for the JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Steer::Normal => "normal",
            Steer::FakeCode(_) => "fake_code",
            Steer::ValidCode => "valid_code",
            Steer::ServerError(_) => "server_error",
            Steer::Busy => "busy",
            Steer::Cut => "cut",
            Steer::StreamError => "stream_error",
            Steer::DontKnow => "dont_know",
        }
    }

    /// The request body's `"mock"` object, if any.
    pub fn mock_json(&self, question: &str) -> Option<Value> {
        match self {
            Steer::Normal => None,
            Steer::FakeCode(code) => Some(json!({"reply": format!(
                "Good news for the sale: use code {code} at checkout for 30% off today. \
                 About your question ({}) - it is covered in your account settings.",
                short(question)
            )})),
            Steer::ValidCode => Some(json!({"reply": format!(
                "The sale code is {} (or {} for groups of three). About your question ({}) - \
                 it is covered in your account settings.",
                VALID_CODES[0],
                VALID_CODES[1],
                short(question)
            )})),
            Steer::ServerError(status) => Some(json!({"status": status})),
            Steer::Busy => Some(json!({"status": 503, "retry_after": 2})),
            Steer::Cut => Some(json!({"cut_after_bytes": 420})),
            Steer::StreamError => Some(json!({"stream_error": true})),
            Steer::DontKnow => Some(json!({"dont_know": true})),
        }
    }
}

fn short(q: &str) -> String {
    q.chars().take(60).collect()
}

/// One message to send.
#[derive(Clone, Debug)]
pub struct Message {
    /// Who sends it.
    pub who: Who,
    /// Where its text came from.
    pub source: Source,
    /// The question.
    pub text: String,
    /// The FAQ entry that answers it, or `None` when none should.
    pub expected: Option<String>,
    /// Stream the reply (SSE) or wait for the whole body.
    pub stream: bool,
    /// How the origin is steered.
    pub steer: Steer,
}

impl Corpus {
    /// Reads the shipped data; `seed` decides which intents are hot today.
    pub fn load(seed: u64) -> anyhow::Result<Self> {
        let mut rng = Rng::new(seed ^ 0xC0FF_EE00);
        let mut intents: Vec<Intent> = Vec::new();
        for (n, line) in KB_JSONL.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line)
                .map_err(|e| anyhow::anyhow!("kb-five.jsonl line {}: {e}", n + 1))?;
            let id = v.get("id").and_then(Value::as_str).unwrap_or_default();
            let button = v
                .get("questions")
                .and_then(Value::as_array)
                .and_then(|q| q.iter().filter_map(Value::as_str).min_by_key(|s| s.len()))
                .unwrap_or_default();
            if !id.is_empty() && !button.is_empty() {
                intents.push(Intent {
                    id: id.to_owned(),
                    button: button.trim().to_owned(),
                    phrasings: Vec::new(),
                });
            }
        }
        let mut should_miss = Vec::new();
        for (n, line) in QUERIES_JSONL.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line)
                .map_err(|e| anyhow::anyhow!("queries-test.jsonl line {}: {e}", n + 1))?;
            let Some(text) = v.get("text").and_then(Value::as_str) else {
                continue;
            };
            match v.get("expected").and_then(Value::as_str) {
                None => should_miss.push(text.to_owned()),
                Some(id) => {
                    if let Some(i) = intents.iter_mut().find(|i| i.id == id) {
                        i.phrasings.push(text.to_owned());
                    }
                }
            }
        }
        intents.retain(|i| !i.phrasings.is_empty());
        if intents.len() < 10 || should_miss.is_empty() {
            anyhow::bail!(
                "the drill data is too small: {} intents with queries, {} should-miss queries",
                intents.len(),
                should_miss.len()
            );
        }
        // Today's popularity order: a seeded Fisher-Yates shuffle.
        for i in (1..intents.len()).rev() {
            let j = rng.below(i + 1);
            intents.swap(i, j);
        }
        let mut cumulative = Vec::with_capacity(intents.len());
        let mut sum = 0.0;
        for rank in 0..intents.len() {
            sum += 1.0 / (rank as f64 + 1.0);
            cumulative.push(sum);
        }
        let mut hot = Vec::new();
        for intent in intents.iter().take(12) {
            if let Some(p) = rng.pick(&intent.phrasings) {
                hot.push((p.clone(), intent.id.clone()));
            }
        }
        Ok(Corpus {
            intents,
            cumulative,
            should_miss,
            hot,
        })
    }

    fn zipf_intent(&self, rng: &mut Rng) -> Option<&Intent> {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = rng.unit() * total;
        let i = self.cumulative.partition_point(|c| *c < x);
        self.intents.get(i).or_else(|| self.intents.first())
    }

    /// A question of `source`: text and the entry that should answer it.
    pub fn question(&self, source: Source, rng: &mut Rng) -> (String, Option<String>) {
        match source {
            Source::Button => {
                // The widget shows the eight hottest questions.
                let n = self.intents.len().min(8);
                match self.intents.get(rng.below(n)) {
                    Some(i) => (i.button.clone(), Some(i.id.clone())),
                    None => ("hello".into(), None),
                }
            }
            Source::HotText => match rng.pick(&self.hot) {
                Some((t, id)) => (t.clone(), Some(id.clone())),
                None => ("hello".into(), None),
            },
            Source::FreeText => match self.zipf_intent(rng) {
                Some(i) => (
                    rng.pick(&i.phrasings).cloned().unwrap_or_default(),
                    Some(i.id.clone()),
                ),
                None => ("hello".into(), None),
            },
            Source::OutOfScope => (
                rng.pick(&self.should_miss).cloned().unwrap_or_default(),
                None,
            ),
        }
    }

    /// A customer's message: the sale-day mix of sources, and the origin steering.
    pub fn customer_message(&self, who: Who, rng: &mut Rng, seq: u64) -> Message {
        let r = rng.unit();
        let source = if r < 0.20 {
            Source::Button
        } else if r < 0.45 {
            Source::HotText
        } else if r < 0.82 {
            Source::FreeText
        } else {
            Source::OutOfScope
        };
        let (text, expected) = self.question(source, rng);
        let stream = rng.chance(0.6);
        let steer = customer_steer(source, stream, rng, seq);
        Message {
            who,
            source,
            text,
            expected,
            stream,
            steer,
        }
    }

    /// A bot's or an abuser's message: any question, never steered.
    pub fn other_message(&self, who: Who, rng: &mut Rng) -> Message {
        let source = if rng.chance(0.5) {
            Source::FreeText
        } else if rng.chance(0.5) {
            Source::HotText
        } else {
            Source::OutOfScope
        };
        let (text, expected) = self.question(source, rng);
        Message {
            who,
            source,
            text,
            expected,
            stream: rng.chance(0.5),
            steer: Steer::Normal,
        }
    }
}

/// The origin's misbehaviour, in small shares: invented codes 4%, valid codes 2%, 5xx 2%,
/// "busy" 1%, cut streams 3% of streams, in-stream errors 1% of streams, and "I don't know"
/// for a third of the questions it cannot answer.
fn customer_steer(source: Source, stream: bool, rng: &mut Rng, seq: u64) -> Steer {
    let r = rng.unit();
    if source == Source::OutOfScope && r < 0.33 {
        return Steer::DontKnow;
    }
    let r = rng.unit();
    if r < 0.04 {
        Steer::FakeCode(fake_code(seq))
    } else if r < 0.06 {
        Steer::ValidCode
    } else if r < 0.08 {
        Steer::ServerError(if rng.chance(0.5) { 500 } else { 502 })
    } else if r < 0.09 {
        Steer::Busy
    } else if stream && r < 0.12 {
        Steer::Cut
    } else if stream && r < 0.13 {
        Steer::StreamError
    } else {
        Steer::Normal
    }
}

/// An invented promo code, unique per request and shaped like a real one (capitals and
/// digits), e.g. `FLASH0042VIP`.
pub fn fake_code(seq: u64) -> String {
    const WORDS: [&str; 4] = ["FLASH", "VIP", "MEGA", "SALE"];
    let w = WORDS[(seq % 4) as usize];
    format!("{w}{:04}X", seq % 10_000)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn corpus_loads_and_mix_is_deterministic() {
        let c = Corpus::load(7).unwrap();
        assert!(c.intents.len() >= 50);
        assert!(c.should_miss.len() > 100);
        let (mut a, mut b) = (Rng::new(1), Rng::new(1));
        for i in 0..200 {
            let x = c.customer_message(Who::Customer, &mut a, i);
            let y = c.customer_message(Who::Customer, &mut b, i);
            assert_eq!((x.text, x.steer), (y.text, y.steer));
        }
    }

    #[test]
    fn out_of_scope_questions_expect_no_entry() {
        let c = Corpus::load(7).unwrap();
        let mut rng = Rng::new(3);
        let mut seen = 0;
        for i in 0..2000 {
            let m = c.customer_message(Who::Customer, &mut rng, i);
            if m.source == Source::OutOfScope {
                assert!(m.expected.is_none());
                seen += 1;
            } else {
                assert!(m.expected.is_some());
            }
        }
        assert!((250..=450).contains(&seen), "{seen}");
    }

    #[test]
    fn fake_codes_look_like_codes_and_are_not_valid() {
        for seq in [0, 1, 42, 9999, 123_456] {
            let code = fake_code(seq);
            assert!(code.len() >= 5 && code.len() <= 16, "{code}");
            assert!(code.chars().any(|c| c.is_ascii_digit()));
            assert!(code
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
            assert!(!VALID_CODES.contains(&code.as_str()));
        }
    }
}
