//! `tidegate kb`: build the FAQ knowledge-base artefact and evaluate the matcher.
//!
//! - `kb build --input FILE.jsonl --output FILE` compiles the JSONL source into the artefact
//!   the hosts load from KV, reporting every source problem with its line number.
//! - `kb eval --kb FILE --queries FILE.jsonl [--json OUT] [--sweep]` ranks every query and
//!   prints MRR@5, top-1 accuracy, and at the configured thresholds the coverage, the
//!   precision of what was served and the false-serve rate on should-miss queries
//!   (`"expected": null`). `--sweep` adds a table over thresholds so an operator can pick.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tidegate_core::faq::{build_artifact, FaqConfig, KnowledgeBase};

/// `tidegate kb <command>`.
#[derive(clap::Subcommand, Debug)]
pub enum KbCommand {
    /// Compile a JSONL knowledge base into the artefact stored in KV.
    Build {
        /// JSONL source: one `{"id", "questions", "answer", "locale"?, "tags"?}` a line.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the artefact.
        #[arg(long)]
        output: PathBuf,
    },
    /// Measure the matcher on labelled queries.
    Eval {
        /// Knowledge base: JSONL source or a built artefact.
        #[arg(long)]
        kb: PathBuf,
        /// JSONL queries: `{"text": "...", "expected": "entry-id" | null}` (both keys required).
        #[arg(long)]
        queries: PathBuf,
        /// Write the summary and every query's ranking to this JSON file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Print (and write) coverage, precision and false-serve rate over a threshold grid.
        #[arg(long)]
        sweep: bool,
        /// Serving threshold on the score (default: the built-in `[faq] min_score`).
        #[arg(long)]
        min_score: Option<f32>,
        /// Serving threshold on the lead over the runner-up (default: `[faq] min_margin`).
        #[arg(long)]
        min_margin: Option<f32>,
        /// Entries with fewer phrasings need a larger lead (default: `[faq]
        /// evidence_phrasings`; 0 turns it off).
        #[arg(long)]
        evidence_phrasings: Option<u32>,
    },
    /// Upload a JSONL knowledge base to a running gateway (built and checked there).
    Push {
        /// JSONL source.
        #[arg(long)]
        input: PathBuf,
        #[command(flatten)]
        admin: crate::flag_cmd::AdminArgs,
    },
    /// The hot set of a running gateway: the most-served FAQ entries since it started.
    Top {
        /// How many entries.
        #[arg(short, long, default_value_t = 10)]
        n: usize,
        #[command(flatten)]
        admin: crate::flag_cmd::AdminArgs,
    },
}

/// Runs a `tidegate kb` command.
pub fn run(cmd: KbCommand) -> Result<()> {
    match cmd {
        KbCommand::Build { input, output } => build(&input, &output),
        KbCommand::Push { input, admin } => {
            let body =
                std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
            let out = admin_call(&admin, reqwest::Method::PUT, "/admin/kb", body)?;
            println!("{out}");
            Ok(())
        }
        KbCommand::Top { n, admin } => {
            let out = admin_call(
                &admin,
                reqwest::Method::GET,
                &format!("/admin/faq/top?n={n}"),
                vec![],
            )?;
            let rows: Vec<serde_json::Value> = serde_json::from_str(&out)?;
            println!("{:>8}  entry", "hits");
            for r in rows {
                let hits = r["hits"].as_u64().unwrap_or(0);
                println!("{hits:>8}  {}", r["id"].as_str().unwrap_or("?"));
            }
            Ok(())
        }
        KbCommand::Eval {
            kb,
            queries,
            json,
            sweep,
            min_score,
            min_margin,
            evidence_phrasings,
        } => {
            let mut cfg = FaqConfig::default();
            if let Some(s) = min_score {
                cfg.min_score = s;
            }
            if let Some(m) = min_margin {
                cfg.min_margin = m;
            }
            if let Some(n) = evidence_phrasings {
                cfg.evidence_phrasings = n;
            }
            if let Err((field, msg)) = cfg.validate() {
                bail!("--{}: {msg}", field.replace('_', "-"));
            }
            let report = eval(&kb, &queries, &cfg, sweep)?;
            print!("{}", report.render());
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report)?;
                std::fs::write(&path, text + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
    }
}

/// Phrasings an entry should have at least: the matcher asks a lead of an entry that grows as
/// its phrasings get fewer (`[faq] evidence_phrasings`), and with one or two (a lead of 0.51 or
/// 0.36 by default) a reworded question is almost never served.
const ADVISED_PHRASINGS: u32 = 3;

/// A warning naming the entries with fewer than [`ADVISED_PHRASINGS`] phrasings, if any.
fn few_phrasings_warning(kb: &KnowledgeBase) -> Option<String> {
    let few: Vec<&str> = kb
        .phrasing_counts()
        .filter(|(_, n)| *n < ADVISED_PHRASINGS)
        .map(|(id, _)| id)
        .collect();
    let (first, more) = (few.iter().take(5), few.len().saturating_sub(5));
    let mut names = first.copied().collect::<Vec<_>>().join(", ");
    if more > 0 {
        names.push_str(&format!(" and {more} more"));
    }
    (!few.is_empty()).then(|| {
        format!(
            "{} of {} entries have fewer than {ADVISED_PHRASINGS} phrasings ({names}): they \
             answer their own questions word for word, but a reworded question only with a \
             large lead over the next entry; write {ADVISED_PHRASINGS} or more for each, \
             five or more where entries are alike (docs/faq-matching.md)",
            few.len(),
            kb.len()
        )
    })
}

/// The text of `bytes` read from `path`; invalid UTF-8 is an error naming the line.
fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count();
        anyhow::anyhow!("{}:{line}: not valid UTF-8 (byte {at})", path.display())
    })
}

fn build(input: &Path, output: &Path) -> Result<()> {
    let raw = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let src = utf8(input, raw)?;
    let bytes = match build_artifact(&src) {
        Ok(b) => b,
        Err(errors) => {
            for e in &errors {
                eprintln!("{}:{}: {}", input.display(), e.line, e.message);
            }
            bail!(
                "{}: {} problem(s), nothing written",
                input.display(),
                errors.len()
            );
        }
    };
    let started = Instant::now();
    let kb =
        KnowledgeBase::from_artifact(&bytes).context("the artefact just built does not load")?;
    let load = started.elapsed();
    std::fs::write(output, &bytes).with_context(|| format!("writing {}", output.display()))?;
    println!(
        "{}: {} entries, {} bytes, version {}, loads in {:.1} ms",
        output.display(),
        kb.len(),
        bytes.len(),
        kb.version(),
        load.as_secs_f64() * 1e3
    );
    if let Some(w) = few_phrasings_warning(&kb) {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// Loads a knowledge base from JSONL source or from a built artefact.
fn load_kb(path: &Path) -> Result<(KnowledgeBase, usize, f64)> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let bytes = if raw.starts_with(b"TGKB") {
        raw
    } else {
        let src = utf8(path, raw).context("knowledge base is neither UTF-8 nor an artefact")?;
        match build_artifact(&src) {
            Ok(b) => b,
            Err(errors) => {
                for e in &errors {
                    eprintln!("{}:{}: {}", path.display(), e.line, e.message);
                }
                bail!("{}: {} problem(s)", path.display(), errors.len());
            }
        }
    };
    let started = Instant::now();
    let kb = KnowledgeBase::from_artifact(&bytes)?;
    Ok((kb, bytes.len(), started.elapsed().as_secs_f64() * 1e3))
}

/// One labelled query. `expected` must be present (`null` for a should-miss query) and other
/// keys are refused: a misspelt `expected` must not turn a query into a should-miss one.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Query {
    text: String,
    #[serde(deserialize_with = "required")]
    expected: Option<String>,
}

/// An `Option` field that must be present, though it may be `null` (serde's derive treats a
/// missing `Option` as `None` unless the field has its own deserializer).
fn required<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::deserialize(d)
}

/// One candidate in the JSON report.
#[derive(Serialize, Clone, Debug)]
struct Scored {
    id: String,
    score: f32,
    conflict: bool,
    /// Phrasings of the entry.
    phrasings: u32,
    /// The query is one of the entry's phrasings (served whatever the thresholds).
    exact: bool,
    /// The query is negated and no phrasing of the entry is (never served).
    unnegated: bool,
}

/// One query in the JSON report.
#[derive(Serialize, Debug)]
struct QueryResult {
    text: String,
    expected: Option<String>,
    top: Vec<Scored>,
    served: Option<String>,
}

/// Outcome at one pair of thresholds.
#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
struct AtThreshold {
    min_score: f32,
    min_margin: f32,
    evidence_phrasings: u32,
    /// Served answerable queries / answerable queries.
    coverage: f64,
    /// Right answers / all answers served (answerable and should-miss queries alike).
    precision: f64,
    /// Served should-miss queries / should-miss queries.
    false_serve_rate: f64,
    served: usize,
    served_right: usize,
    served_wrong: usize,
    served_should_miss: usize,
}

/// The whole report.
#[derive(Serialize, Debug)]
struct Report {
    kb_entries: usize,
    kb_version: String,
    artefact_bytes: usize,
    load_ms: f64,
    answerable: usize,
    should_miss: usize,
    /// Mean reciprocal rank of the expected entry within the top five (answerable queries).
    mrr_at_5: f64,
    top1_accuracy: f64,
    /// Mean time to rank one query (debug builds are much slower than release).
    mean_rank_us: f64,
    at_serving_threshold: AtThreshold,
    sweep: Vec<AtThreshold>,
    queries: Vec<QueryResult>,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn outcome(
    results: &[(Option<String>, Vec<Scored>)],
    min_score: f32,
    min_margin: f32,
    evidence_phrasings: u32,
) -> AtThreshold {
    let cfg = FaqConfig {
        enabled: true,
        min_score,
        min_margin,
        evidence_phrasings,
    };
    let (mut right, mut wrong, mut miss_served, mut answerable, mut should_miss) = (0, 0, 0, 0, 0);
    for (expected, top) in results {
        let served = served_by(top, &cfg);
        match (expected, served) {
            (Some(_), None) => answerable += 1,
            (Some(e), Some(s)) => {
                answerable += 1;
                if *e == s {
                    right += 1;
                } else {
                    wrong += 1;
                }
            }
            (None, served) => {
                should_miss += 1;
                if served.is_some() {
                    miss_served += 1;
                }
            }
        }
    }
    let served = right + wrong + miss_served;
    AtThreshold {
        min_score,
        min_margin,
        evidence_phrasings,
        coverage: ratio(right + wrong, answerable),
        precision: ratio(right, served),
        false_serve_rate: ratio(miss_served, should_miss),
        served,
        served_right: right,
        served_wrong: wrong,
        served_should_miss: miss_served,
    }
}

/// The id [`KnowledgeBase::lookup`] would serve, from a stored ranking.
fn served_by(top: &[Scored], cfg: &FaqConfig) -> Option<String> {
    let ranked: Vec<tidegate_core::faq::Candidate<'_>> = top
        .iter()
        .map(|s| tidegate_core::faq::Candidate {
            id: &s.id,
            answer: "",
            score: s.score,
            conflict: s.conflict,
            phrasings: s.phrasings,
            exact: s.exact,
            unnegated: s.unnegated,
        })
        .collect();
    KnowledgeBase::decide(&ranked, cfg).map(|h| h.id.to_owned())
}

/// The labelled queries of a JSONL file; errors name the file and the line.
fn read_queries(src: &str, queries_path: &Path, kb: &KnowledgeBase) -> Result<Vec<Query>> {
    let mut queries = Vec::new();
    for (i, line) in src.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let q: Query = serde_json::from_str(line)
            .with_context(|| format!("{}:{}", queries_path.display(), i + 1))?;
        if let Some(e) = &q.expected {
            if kb.answer(e).is_none() {
                bail!(
                    "{}:{}: expected id `{e}` is not in the knowledge base",
                    queries_path.display(),
                    i + 1
                );
            }
        }
        queries.push(q);
    }
    if queries.is_empty() {
        bail!("{}: no queries", queries_path.display());
    }
    Ok(queries)
}

fn eval(kb_path: &Path, queries_path: &Path, cfg: &FaqConfig, sweep: bool) -> Result<Report> {
    let (kb, artefact_bytes, load_ms) = load_kb(kb_path)?;
    let raw = std::fs::read(queries_path)
        .with_context(|| format!("reading {}", queries_path.display()))?;
    let src = utf8(queries_path, raw)?;
    let queries = read_queries(src.trim_start_matches('\u{feff}'), queries_path, &kb)?;

    let started = Instant::now();
    let mut results: Vec<(Option<String>, Vec<Scored>)> = Vec::with_capacity(queries.len());
    for q in &queries {
        let top = kb
            .rank(&q.text, None, 5)
            .into_iter()
            .map(|c| Scored {
                id: c.id.to_owned(),
                score: c.score,
                conflict: c.conflict,
                phrasings: c.phrasings,
                exact: c.exact,
                unnegated: c.unnegated,
            })
            .collect();
        results.push((q.expected.clone(), top));
    }
    let mean_rank_us = started.elapsed().as_secs_f64() * 1e6 / queries.len() as f64;

    let (mut rr, mut top1, mut answerable) = (0.0, 0usize, 0usize);
    for (expected, top) in &results {
        let Some(e) = expected else { continue };
        answerable += 1;
        if let Some(pos) = top.iter().position(|s| &s.id == e) {
            rr += 1.0 / (pos as f64 + 1.0);
            if pos == 0 {
                top1 += 1;
            }
        }
    }
    let at = outcome(
        &results,
        cfg.min_score,
        cfg.min_margin,
        cfg.evidence_phrasings,
    );
    let mut grid = Vec::new();
    if sweep {
        for s in 0..=24 {
            for m in [0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.15, 0.20] {
                grid.push(outcome(
                    &results,
                    0.30 + 0.025 * s as f32,
                    m,
                    cfg.evidence_phrasings,
                ));
            }
        }
    }
    let served: Vec<QueryResult> = queries
        .iter()
        .zip(&results)
        .map(|(q, (_, top))| QueryResult {
            text: q.text.clone(),
            expected: q.expected.clone(),
            top: top.clone(),
            served: served_by(top, cfg),
        })
        .collect();
    Ok(Report {
        kb_entries: kb.len(),
        kb_version: kb.version().to_owned(),
        artefact_bytes,
        load_ms,
        answerable,
        should_miss: queries.len() - answerable,
        mrr_at_5: if answerable == 0 {
            0.0
        } else {
            rr / answerable as f64
        },
        top1_accuracy: ratio(top1, answerable),
        mean_rank_us,
        at_serving_threshold: at,
        sweep: grid,
        queries: served,
    })
}

impl Report {
    fn render(&self) -> String {
        let mut out = String::new();
        let pct = |x: f64| format!("{:5.1}%", x * 100.0);
        out.push_str(&format!(
            "knowledge base: {} entries, version {}, {} bytes, loaded in {:.1} ms\n",
            self.kb_entries, self.kb_version, self.artefact_bytes, self.load_ms
        ));
        out.push_str(&format!(
            "queries: {} answerable, {} should-miss; {:.0} us per query\n",
            self.answerable, self.should_miss, self.mean_rank_us
        ));
        out.push_str(&format!("MRR@5            {:.4}\n", self.mrr_at_5));
        out.push_str(&format!("top-1 accuracy   {}\n", pct(self.top1_accuracy)));
        let a = &self.at_serving_threshold;
        out.push_str(&format!(
            "at min_score {:.2}, min_margin {:.2}, evidence_phrasings {}:\n",
            a.min_score, a.min_margin, a.evidence_phrasings
        ));
        out.push_str(&format!(
            "  coverage       {}  ({} of {} answerable served)\n",
            pct(a.coverage),
            a.served_right + a.served_wrong,
            self.answerable
        ));
        out.push_str(&format!(
            "  precision      {}  ({} right of {} served)\n",
            pct(a.precision),
            a.served_right,
            a.served
        ));
        out.push_str(&format!(
            "  false-serve    {}  ({} of {} should-miss served)\n",
            pct(a.false_serve_rate),
            a.served_should_miss,
            self.should_miss
        ));
        if !self.sweep.is_empty() {
            out.push_str("\nsweep (* = false-serve <= 1% and precision >= 95%)\n");
            out.push_str("min_score min_margin coverage precision false-serve\n");
            for r in &self.sweep {
                let ok = r.false_serve_rate <= 0.01 && r.precision >= 0.95;
                out.push_str(&format!(
                    "{:9.2} {:10.2} {:>8} {:>9} {:>11} {}\n",
                    r.min_score,
                    r.min_margin,
                    pct(r.coverage),
                    pct(r.precision),
                    pct(r.false_serve_rate),
                    if ok { "*" } else { "" }
                ));
            }
        }
        out
    }
}

fn admin_call(
    admin: &crate::flag_cmd::AdminArgs,
    method: reqwest::Method,
    path: &str,
    body: Vec<u8>,
) -> Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(crate::flag_cmd::admin_request(admin, method, path, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kb(src: &str) -> KnowledgeBase {
        KnowledgeBase::from_artifact(&build_artifact(src).unwrap()).unwrap()
    }

    #[test]
    fn entries_with_few_phrasings_are_named_in_a_warning() {
        let thin = kb(concat!(
            r#"{"id": "track", "questions": ["How do I track my order?"], "answer": "A"}"#,
            "\n",
            r#"{"id": "full", "questions": ["a b", "c d", "e f"], "answer": "B"}"#
        ));
        let w = few_phrasings_warning(&thin).unwrap();
        assert!(
            w.starts_with("1 of 2 entries have fewer than 3 phrasings (track)"),
            "{w}"
        );
        let demo = kb(include_str!("../../../kb/demo.jsonl"));
        assert_eq!(
            few_phrasings_warning(&demo),
            None,
            "the demo follows its own advice"
        );
    }

    #[test]
    fn regression_invalid_utf8_names_the_line_and_a_bom_is_read() {
        // Found by testing: invalid UTF-8 gave no line number, and a file saved with a
        // byte-order mark failed on its first line.
        let e = utf8(
            Path::new("kb.jsonl"),
            b"{}\n{}\n{\"id\":\"a\xff\"}\n".to_vec(),
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "kb.jsonl:3: not valid UTF-8 (byte 14)"
        );
        let src = "\u{feff}{\"id\": \"a\", \"questions\": [\"how do refunds work\"], \
                   \"answer\": \"In 14 days.\"}";
        assert!(tidegate_core::faq::build_artifact(src).is_ok());
    }

    #[test]
    fn regression_a_misspelt_or_missing_expected_is_refused() {
        // Found by testing: `"expect"` instead of `"expected"` made every query a should-miss
        // one, and the report showed 100% false serves.
        let demo = kb(include_str!("../../../kb/demo.jsonl"));
        let id = demo.ids().next().unwrap().to_owned();
        let path = Path::new("q.jsonl");
        let ok = format!(
            "{{\"text\": \"a\", \"expected\": \"{id}\"}}\n\n\
             {{\"text\": \"b\", \"expected\": null}}\n"
        );
        let qs = read_queries(&ok, path, &demo).unwrap();
        assert_eq!(qs[0].expected.as_deref(), Some(id.as_str()));
        assert_eq!(qs[1].expected, None);
        for (bad, what) in [
            (
                format!("{{\"text\": \"b\", \"expect\": \"{id}\"}}"),
                "unknown field `expect`",
            ),
            ("{\"text\": \"b\"}".to_owned(), "missing field `expected`"),
        ] {
            let src = format!("{{\"text\": \"a\", \"expected\": null}}\n\n{bad}\n");
            let e = format!("{:#}", read_queries(&src, path, &demo).unwrap_err());
            assert!(e.starts_with("q.jsonl:3: "), "{e}");
            assert!(e.contains(what), "{e}");
        }
    }
}
