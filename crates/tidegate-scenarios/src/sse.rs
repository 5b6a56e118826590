//! Incremental reading of a streamed reply (server-sent events), in both API shapes.
//!
//! Bytes are fed exactly as the network delivered them: a read may end inside a line, inside
//! a `\r\n` pair or inside a multi-byte character. Lines are only decoded once complete, so a
//! character split across reads comes out whole, and a garbled one (from a gateway that split
//! it wrongly) shows as U+FFFD in the assembled text and is flagged.
//!
//! What is recorded: the assembled reply text (OpenAI `choices[0].delta.content`, Dify `answer`
//! of `message` / `agent_message` events, replaced wholesale by `message_replace`), whether the
//! stream finished properly (`data: [DONE]` or a Dify `message_end`), whether an error event
//! came and its code, and whether usage data was present.

/// What a stream said, as far as scenarios care.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseSummary {
    /// Dispatched events (including the `[DONE]` marker).
    pub events: usize,
    /// The assembled reply text.
    pub text: String,
    /// The stream ended properly: `data: [DONE]` (OpenAI) or `message_end` (Dify).
    pub done: bool,
    /// An error event came: an `event: error` field, a Dify `"event": "error"`, or a JSON
    /// object with an `error` member.
    pub error: bool,
    /// The code of the first error event (`error.code`, else `code`, else `error.type`).
    pub error_code: Option<String>,
    /// A usage object arrived (OpenAI `usage`, Dify `metadata.usage`).
    pub usage: bool,
    /// Some line was not valid UTF-8.
    pub invalid_utf8: bool,
    /// Events that came after the end marker.
    pub events_after_done: usize,
}

/// Feeds on network reads and builds an [`SseSummary`].
#[derive(Debug, Default)]
pub struct SseAssembler {
    /// Bytes of the line being received.
    line: Vec<u8>,
    /// The last byte seen was `\r`: a following `\n` belongs to the same line end.
    after_cr: bool,
    /// `data` lines of the event being received, joined with `\n`.
    data: String,
    has_data: bool,
    event_type: String,
    summary: SseSummary,
}

impl SseAssembler {
    /// A fresh assembler.
    pub fn new() -> Self {
        SseAssembler::default()
    }

    /// Takes the next network read.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line();
                }
                _ => self.line.push(b),
            }
        }
    }

    /// Ends the stream. An event without its closing blank line is dropped, as the SSE
    /// standard says; a final `[DONE]` without one is still honoured, since some origins omit
    /// the last blank line and the text is unambiguous.
    pub fn finish(mut self) -> SseSummary {
        if !self.line.is_empty() {
            self.end_line();
        }
        if self.has_data && self.data == "[DONE]" {
            self.dispatch();
        }
        self.summary
    }

    fn end_line(&mut self) {
        let raw = std::mem::take(&mut self.line);
        let line = match String::from_utf8(raw) {
            Ok(s) => s,
            Err(e) => {
                self.summary.invalid_utf8 = true;
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            }
        };
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event_type = value.to_owned(),
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let event_type = std::mem::take(&mut self.event_type);
        if !self.has_data {
            return;
        }
        let data = std::mem::take(&mut self.data);
        self.has_data = false;
        let s = &mut self.summary;
        s.events += 1;
        if s.done {
            s.events_after_done += 1;
        }
        if data.trim() == "[DONE]" {
            s.done = true;
            return;
        }
        let json: serde_json::Value = match serde_json::from_str(&data) {
            Ok(v) => v,
            Err(_) => {
                if event_type == "error" {
                    s.error = true;
                }
                return;
            }
        };
        let dify_event = json.get("event").and_then(|e| e.as_str());
        let error_member = json
            .get("error")
            .is_some_and(|e| e.is_object() || e.is_string());
        if event_type == "error" || dify_event == Some("error") || error_member {
            s.error = true;
            if s.error_code.is_none() {
                s.error_code = ["/error/code", "/code", "/error/type"]
                    .iter()
                    .find_map(|p| json.pointer(p).and_then(|c| c.as_str()))
                    .map(str::to_owned);
            }
            return;
        }
        let answer = json.get("answer").and_then(|a| a.as_str());
        match dify_event {
            Some("message") | Some("agent_message") => s.text.push_str(answer.unwrap_or("")),
            Some("message_replace") => s.text = answer.unwrap_or("").to_owned(),
            Some("message_end") => {
                s.done = true;
                s.usage |= json
                    .pointer("/metadata/usage")
                    .is_some_and(|u| u.is_object());
            }
            Some(_) => {}
            None => {
                if let Some(delta) = json
                    .pointer("/choices/0/delta/content")
                    .and_then(|c| c.as_str())
                {
                    s.text.push_str(delta);
                }
                s.usage |= json.get("usage").is_some_and(|u| u.is_object());
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn openai_stream() -> String {
        let mut s = String::new();
        s.push_str(": keep-alive comment\n\n");
        for piece in ["Hello", ", 世界", "! Code ", "SAVE20", " 🎉"] {
            let chunk = serde_json::json!({
                "id": "c1", "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": piece}}]
            });
            s.push_str(&format!("data: {chunk}\n\n"));
        }
        s.push_str("data: {\"choices\":[],\"usage\":{\"total_tokens\":12}}\n\n");
        s.push_str("data: [DONE]\n\n");
        s
    }

    fn dify_stream() -> String {
        [
            r#"data: {"event":"message","answer":"Ihre Bestellung "}"#,
            r#"data: {"event":"ping"}"#,
            r#"data: {"event":"message","answer":"ist unterwegs. ✓"}"#,
            r#"data: {"event":"message_end","metadata":{"usage":{"total_tokens":9}}}"#,
        ]
        .iter()
        .map(|l| format!("{l}\r\n\r\n"))
        .collect()
    }

    fn feed_split(bytes: &[u8], cuts: &[usize]) -> SseSummary {
        let mut a = SseAssembler::new();
        let mut start = 0;
        for &c in cuts {
            a.feed(&bytes[start..c]);
            start = c;
        }
        a.feed(&bytes[start..]);
        a.finish()
    }

    #[test]
    fn openai_text_done_usage() {
        let s = feed_split(openai_stream().as_bytes(), &[]);
        assert_eq!(s.text, "Hello, 世界! Code SAVE20 🎉");
        assert!(s.done && s.usage && !s.error && !s.invalid_utf8);
        assert_eq!(s.events, 7);
        assert_eq!(s.events_after_done, 0);
    }

    #[test]
    fn dify_text_done_usage_with_crlf() {
        let s = feed_split(dify_stream().as_bytes(), &[]);
        assert_eq!(s.text, "Ihre Bestellung ist unterwegs. ✓");
        assert!(s.done && s.usage && !s.error);
    }

    // Regression class: a multi-byte character or a line end split across two network reads
    // must be reassembled, at every possible split point.
    #[test]
    fn every_single_split_point_gives_the_same_result() {
        for stream in [openai_stream(), dify_stream()] {
            let bytes = stream.as_bytes();
            let whole = feed_split(bytes, &[]);
            for cut in 0..=bytes.len() {
                assert_eq!(feed_split(bytes, &[cut]), whole, "cut at {cut}");
            }
        }
    }

    #[test]
    fn byte_by_byte_and_pseudo_random_splits() {
        for stream in [openai_stream(), dify_stream()] {
            let bytes = stream.as_bytes();
            let whole = feed_split(bytes, &[]);
            let all: Vec<usize> = (1..bytes.len()).collect();
            assert_eq!(feed_split(bytes, &all), whole);
            let mut x: u64 = 0x2545_f491_4f6c_dd1d;
            for _ in 0..300 {
                let mut cuts = Vec::new();
                let mut at = 0;
                loop {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    at += 1 + (x % 9) as usize;
                    if at >= bytes.len() {
                        break;
                    }
                    cuts.push(at);
                }
                assert_eq!(feed_split(bytes, &cuts), whole, "cuts {cuts:?}");
            }
        }
    }

    #[test]
    fn cut_stream_with_error_event() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"Half an ans\"}}]}\n\n",
            "event: error\n",
            "data: {\"error\":{\"code\":\"stream_cut\",\"message\":\"origin went away\"}}\n\n",
        );
        let s = feed_split(stream.as_bytes(), &[]);
        assert_eq!(s.text, "Half an ans");
        assert!(s.error && !s.done);
        assert_eq!(s.error_code.as_deref(), Some("stream_cut"));
    }

    #[test]
    fn dify_error_and_replace() {
        let stream = concat!(
            "data: {\"event\":\"message\",\"answer\":\"code FAKE99\"}\n\n",
            "data: {\"event\":\"message_replace\",\"answer\":\"code [removed]\"}\n\n",
            "data: {\"event\":\"message\",\"answer\":\" ok\"}\n\n",
            "data: {\"event\":\"error\",\"code\":\"stream_cut\",\"message\":\"x\"}\n\n",
        );
        let s = feed_split(stream.as_bytes(), &[]);
        assert_eq!(s.text, "code [removed] ok");
        assert!(s.error && !s.done && !s.usage);
        assert_eq!(s.error_code.as_deref(), Some("stream_cut"));
    }

    #[test]
    fn stream_that_just_stops_is_not_done() {
        let full = openai_stream();
        let cut = full.find("data: [DONE]").unwrap();
        let s = feed_split(&full.as_bytes()[..cut + 3], &[]);
        assert!(!s.done && !s.error);
        // The partial event at the end is dropped, not half-counted.
        assert_eq!(s.events, 6);
    }

    #[test]
    fn done_without_final_blank_line_counts() {
        let s = feed_split(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]",
            &[],
        );
        assert!(s.done);
        assert_eq!(s.text, "a");
    }

    #[test]
    fn garbled_utf8_is_flagged() {
        // "世" is E4 B8 96; a gateway that dropped its last byte garbles the text.
        let mut bytes = b"data: {\"choices\":[{\"delta\":{\"content\":\"".to_vec();
        bytes.extend_from_slice(&[0xe4, 0xb8]);
        bytes.extend_from_slice(b"\"}}]}\n\n");
        let s = feed_split(&bytes, &[]);
        assert!(s.invalid_utf8);
        assert_eq!(s.text, "\u{fffd}");
    }

    #[test]
    fn multi_line_data_and_events_after_done() {
        let stream = "data: {\"choices\":[{\"delta\":\ndata: {\"content\":\"x\"}}]}\n\ndata: [DONE]\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"late\"}}]}\n\n";
        let s = feed_split(stream.as_bytes(), &[]);
        assert_eq!(s.text, "xlate");
        assert_eq!(s.events_after_done, 1);
    }
}
