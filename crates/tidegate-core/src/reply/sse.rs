//! An incremental server-sent-events parser that keeps each event's exact bytes.
//!
//! Reads may end anywhere: inside a line, between `\r` and `\n`, inside a UTF-8 character.
//! The parser keeps the unfinished event and hands out only whole events (ended by a blank
//! line), each with its raw bytes (to pass it on unchanged) and its `data` (to rewrite it).

/// Largest event accepted; a bigger one ends the stream with an error.
pub(crate) const MAX_EVENT_BYTES: usize = 1 << 20;

/// One whole event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Event {
    /// The exact bytes, including the blank line that ended it.
    pub raw: Vec<u8>,
    /// The `data` field (several `data` lines joined by `\n`), if the event has one.
    pub data: Option<Vec<u8>>,
    /// Every other line (`event:`, `id:`, `retry:`, comments), without its line ending.
    pub other_lines: Vec<Vec<u8>>,
}

impl Event {
    /// The data as text, when there is some and it is UTF-8.
    pub(crate) fn data_str(&self) -> Option<&str> {
        self.data
            .as_deref()
            .and_then(|d| std::str::from_utf8(d).ok())
    }

    /// The event with its data replaced by `data`, other lines kept.
    pub(crate) fn with_data(&self, data: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 16);
        for l in &self.other_lines {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        push_data(&mut out, data);
        out.push(b'\n');
        out
    }
}

/// A new event holding only `data`.
pub(crate) fn data_event(data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8);
    push_data(&mut out, data);
    out.push(b'\n');
    out
}

fn push_data(out: &mut Vec<u8>, data: &str) {
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.trim_end_matches('\r').as_bytes());
        out.push(b'\n');
    }
}

/// An event grew past [`MAX_EVENT_BYTES`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct TooLarge;

/// The parser's state between reads.
#[derive(Clone, Debug, Default)]
pub(crate) struct Parser {
    /// The unfinished line, without its ending.
    line: Vec<u8>,
    /// The last byte read was `\r`: the line has ended unless a `\n` follows.
    pending_cr: bool,
    /// The unfinished event.
    cur: Event,
}

impl Parser {
    /// Reads `input`; appends every event it completes to `events`.
    pub(crate) fn feed(&mut self, input: &[u8], events: &mut Vec<Event>) -> Result<(), TooLarge> {
        let mut rest = input;
        if self.pending_cr {
            let Some((&first, tail)) = rest.split_first() else {
                return Ok(());
            };
            self.pending_cr = false;
            if first == b'\n' {
                self.cur.raw.push(b'\n');
                rest = tail;
            }
            self.end_line(events);
        }
        while !rest.is_empty() {
            let Some(i) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.line.extend_from_slice(rest);
                self.cur.raw.extend_from_slice(rest);
                break;
            };
            let (head, tail) = rest.split_at(i);
            self.line.extend_from_slice(head);
            self.cur.raw.extend_from_slice(head);
            let Some((&eol, after)) = tail.split_first() else {
                break;
            };
            self.cur.raw.push(eol);
            rest = after;
            if eol == b'\r' {
                match rest.split_first() {
                    None => {
                        self.pending_cr = true;
                        break;
                    }
                    Some((&b'\n', after_lf)) => {
                        self.cur.raw.push(b'\n');
                        rest = after_lf;
                    }
                    Some(_) => {}
                }
            }
            self.end_line(events);
            if self.cur.raw.len() > MAX_EVENT_BYTES {
                return Err(TooLarge);
            }
        }
        if self.cur.raw.len() > MAX_EVENT_BYTES {
            return Err(TooLarge);
        }
        Ok(())
    }

    /// The stream ended: an unfinished last event is taken as finished (origins sometimes
    /// omit the final blank line), unless its last line was cut short and `whole` says the
    /// event is not whole (half a JSON object, say): a client could not parse it, so it is
    /// dropped.
    pub(crate) fn finish(&mut self, events: &mut Vec<Event>, whole: impl Fn(&Event) -> bool) {
        let cut_mid_line = !self.line.is_empty();
        if self.pending_cr || cut_mid_line {
            self.pending_cr = false;
            self.end_line(events);
        }
        if cut_mid_line && !whole(&self.cur) {
            self.cur = Event::default();
        }
        if !self.cur.raw.is_empty() {
            // A missing blank line: complete the event so the client dispatches it too.
            match self.cur.raw.last() {
                Some(b'\n') => self.cur.raw.push(b'\n'),
                Some(b'\r') => self.cur.raw.push(b'\r'),
                _ => self.cur.raw.extend_from_slice(b"\n\n"),
            }
            events.push(std::mem::take(&mut self.cur));
        }
    }

    fn end_line(&mut self, events: &mut Vec<Event>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            events.push(std::mem::take(&mut self.cur));
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => (&line[..0], &line[..0]),
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &line[..0]),
        };
        if name == b"data" {
            match &mut self.cur.data {
                Some(data) => {
                    data.push(b'\n');
                    data.extend_from_slice(value);
                }
                None => self.cur.data = Some(value.to_vec()),
            }
        } else {
            self.cur.other_lines.push(line);
        }
    }
}
