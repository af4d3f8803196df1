//! The IETF fields as structured fields (RFC 9651): a strict path on the `sfv` crate and a
//! hand-written lenient fallback for the deviations seen in the wild (a space before `;`,
//! uppercase keys, decimals where integers are required). Both produce the same small model.

use std::borrow::Cow;
use std::convert::Infallible;

use base64::Engine as _;
use sfv::visitor::{
    self, DictionaryVisitor, EntryVisitor, InnerListVisitor, ItemVisitor, ListVisitor,
    ParameterVisitor,
};
use sfv::{BareItemFromInput, KeyRef};

use crate::info::policy_name;
use crate::value::{Decimal, ValueError, parse_decimal};

/// A number as read from a structured field: a non-negative decimal, or an error.
pub(crate) type SfNumber = Result<Decimal, ValueError>;

/// One list member of `RateLimit` / `RateLimit-Policy` (or of the legacy `RateLimit-Limit`),
/// reduced to what the drafts define.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct SfEntry {
    /// The item's String or Token value (draft-08+ policy name).
    pub(crate) name: Option<Cow<'static, str>>,
    /// The item's Integer or Decimal value (drafts <= 07 quota policies).
    pub(crate) number: Option<SfNumber>,
    /// `r`: remaining.
    pub(crate) remaining: Option<SfNumber>,
    /// `t`: seconds until reset.
    pub(crate) reset: Option<SfNumber>,
    /// `q`: quota.
    pub(crate) quota: Option<SfNumber>,
    /// `w` (or WHOOP's `window`): window seconds.
    pub(crate) window: Option<SfNumber>,
    /// `qu`: quota unit.
    pub(crate) unit: Option<String>,
    /// `pk`: partition key.
    pub(crate) partition_key: Option<Vec<u8>>,
}

impl SfEntry {
    fn set_param(&mut self, key: &str, value: ParamValue) {
        match (key, value) {
            ("r", ParamValue::Number(n)) => self.remaining = Some(n),
            ("t", ParamValue::Number(n)) => self.reset = Some(n),
            ("q", ParamValue::Number(n)) => self.quota = Some(n),
            ("w" | "window", ParamValue::Number(n)) => self.window = Some(n),
            ("qu", ParamValue::Text(text)) => self.unit = Some(text),
            ("pk", ParamValue::Bytes(bytes)) => self.partition_key = Some(bytes),
            _ => {}
        }
    }
}

/// The draft-07 `RateLimit` dictionary: `limit=, remaining=, reset=`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Draft7 {
    pub(crate) limit: Option<SfNumber>,
    pub(crate) remaining: Option<SfNumber>,
    pub(crate) reset: Option<SfNumber>,
}

impl Draft7 {
    fn set(&mut self, key: &str, value: SfNumber) {
        match key {
            "limit" => self.limit = Some(value),
            "remaining" => self.remaining = Some(value),
            "reset" => self.reset = Some(value),
            _ => {}
        }
    }

    fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset.is_none()
    }
}

enum ParamValue {
    Number(SfNumber),
    Text(String),
    Bytes(Vec<u8>),
    Other,
}

fn number_from_integer(value: i64) -> SfNumber {
    if value < 0 {
        return Err(ValueError::Negative);
    }
    Ok(Decimal {
        whole: value.unsigned_abs(),
        nanos: 0,
        saturated: false,
    })
}

fn number_from_decimal(decimal: sfv::Decimal) -> SfNumber {
    let thousandths = i64::from(decimal.as_integer_scaled_1000());
    if thousandths < 0 {
        return Err(ValueError::Negative);
    }
    let thousandths = thousandths.unsigned_abs();
    Ok(Decimal {
        whole: thousandths / 1000,
        // Below 1e9: (thousandths % 1000) < 1000.
        nanos: (thousandths % 1000) as u32 * 1_000_000,
        saturated: false,
    })
}

fn param_from_input(item: BareItemFromInput<'_>) -> ParamValue {
    match item {
        BareItemFromInput::Integer(value) => ParamValue::Number(number_from_integer(value.into())),
        BareItemFromInput::Decimal(value) => ParamValue::Number(number_from_decimal(value)),
        BareItemFromInput::String(value) => ParamValue::Text(value.as_str().to_owned()),
        BareItemFromInput::Token(value) => ParamValue::Text(value.as_str().to_owned()),
        BareItemFromInput::ByteSequence(bytes) => ParamValue::Bytes(bytes),
        _ => ParamValue::Other,
    }
}

// The strict path drives sfv's visitors straight into `SfEntry`: no intermediate `sfv::List`
// with its per-item maps and owned keys (a third of the cost of a draft-08 parse).

/// Collects the Items of an SF List.
#[derive(Default)]
struct ListEntries(Vec<SfEntry>);

impl<'de> ListVisitor<'de> for ListEntries {
    type Out = Vec<SfEntry>;
    type Error = Infallible;

    fn entry(&mut self) -> Result<impl EntryVisitor<'de>, Self::Error> {
        Ok(ListSlot(&mut self.0))
    }

    fn finish(self) -> Result<Self::Out, Self::Error> {
        Ok(self.0)
    }
}

struct ListSlot<'a>(&'a mut Vec<SfEntry>);

impl<'de> EntryVisitor<'de> for ListSlot<'_> {
    type Error = Infallible;

    fn item(self) -> Result<impl ItemVisitor<'de>, Self::Error> {
        Ok(self)
    }

    fn inner_list(self) -> Result<impl InnerListVisitor<'de>, Self::Error> {
        // No draft uses inner lists: validate and skip.
        Ok(visitor::Ignored)
    }
}

impl<'de> ItemVisitor<'de> for ListSlot<'_> {
    type Out = ();
    type Error = Infallible;

    fn bare_item(
        self,
        bare_item: BareItemFromInput<'de>,
    ) -> Result<impl ParameterVisitor<'de, Out = ()>, Self::Error> {
        let mut entry = SfEntry::default();
        match bare_item {
            BareItemFromInput::String(value) => entry.name = Some(policy_name(value.as_str())),
            BareItemFromInput::Token(value) => entry.name = Some(policy_name(value.as_str())),
            BareItemFromInput::Integer(value) => {
                entry.number = Some(number_from_integer(value.into()));
            }
            BareItemFromInput::Decimal(value) => entry.number = Some(number_from_decimal(value)),
            _ => {}
        }
        Ok(EntryParams {
            entry,
            into: self.0,
        })
    }
}

/// Fills one entry's parameters (a repeated key overwrites: the last one wins, per RFC 9651).
struct EntryParams<'a> {
    entry: SfEntry,
    into: &'a mut Vec<SfEntry>,
}

impl<'de> ParameterVisitor<'de> for EntryParams<'_> {
    type Out = ();
    type Error = Infallible;

    fn parameter(
        &mut self,
        key: &'de KeyRef,
        value: BareItemFromInput<'de>,
    ) -> Result<(), Self::Error> {
        self.entry.set_param(key.as_str(), param_from_input(value));
        Ok(())
    }

    fn finish(self) -> Result<(), Self::Error> {
        self.into.push(self.entry);
        Ok(())
    }
}

/// Parses an SF List strictly (RFC 9651). Inner lists are skipped: no draft uses them.
pub(crate) fn strict_list(input: &str) -> Option<Vec<SfEntry>> {
    sfv::Parser::new(input)
        .parse_list_with_visitor(ListEntries::default())
        .ok()
}

/// Collects the draft-07 Dictionary members.
#[derive(Default)]
struct Draft7Visitor(Draft7);

impl<'de> DictionaryVisitor<'de> for Draft7Visitor {
    type Out = Draft7;
    type Error = Infallible;

    fn entry(&mut self, key: &'de KeyRef) -> Result<impl EntryVisitor<'de>, Self::Error> {
        Ok(Draft7Slot {
            key: key.as_str(),
            draft7: &mut self.0,
        })
    }

    fn finish(self) -> Result<Self::Out, Self::Error> {
        Ok(self.0)
    }
}

struct Draft7Slot<'a, 'de> {
    key: &'de str,
    draft7: &'a mut Draft7,
}

impl<'de> EntryVisitor<'de> for Draft7Slot<'_, 'de> {
    type Error = Infallible;

    fn item(self) -> Result<impl ItemVisitor<'de>, Self::Error> {
        Ok(self)
    }

    fn inner_list(self) -> Result<impl InnerListVisitor<'de>, Self::Error> {
        Ok(visitor::Ignored)
    }
}

impl<'de> ItemVisitor<'de> for Draft7Slot<'_, 'de> {
    type Out = ();
    type Error = Infallible;

    fn bare_item(
        self,
        bare_item: BareItemFromInput<'de>,
    ) -> Result<impl ParameterVisitor<'de, Out = ()>, Self::Error> {
        let number = match bare_item {
            BareItemFromInput::Integer(value) => number_from_integer(value.into()),
            BareItemFromInput::Decimal(value) => number_from_decimal(value),
            _ => Err(ValueError::Malformed),
        };
        self.draft7.set(self.key, number);
        Ok(visitor::Ignored)
    }
}

/// Parses the draft-07 SF Dictionary strictly. `None` when invalid or without any known key.
pub(crate) fn strict_dict(input: &str) -> Option<Draft7> {
    let draft7 = sfv::Parser::new(input)
        .parse_dictionary_with_visitor(Draft7Visitor::default())
        .ok()?;
    (!draft7.is_empty()).then_some(draft7)
}

/// Splits on `separator` outside double-quoted strings (honouring `\"` escapes).
fn split_outside_quotes(input: &str, separator: u8) -> impl Iterator<Item = &str> {
    let bytes = input.as_bytes();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    let mut index = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        while index < bytes.len() {
            let byte = bytes[index];
            index += 1;
            if in_quotes {
                match (escaped, byte) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_quotes = false,
                    _ => {}
                }
            } else if byte == b'"' {
                in_quotes = true;
            } else if byte == separator {
                // Separators are ASCII, so both slice ends are char boundaries.
                let piece = &input[start..index - 1];
                start = index;
                return Some(piece);
            }
        }
        done = true;
        Some(&input[start..])
    })
}

fn unquote(text: &str) -> Option<String> {
    let inner = text.strip_prefix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    // Unterminated: take what there is, this is the lenient path.
    Some(out)
}

fn lenient_param(value: &str) -> ParamValue {
    let value = value.trim();
    if let Some(encoded) = value.strip_prefix(':').and_then(|v| v.strip_suffix(':')) {
        return match base64::engine::general_purpose::STANDARD.decode(encoded) {
            Ok(bytes) => ParamValue::Bytes(bytes),
            Err(_) => ParamValue::Other,
        };
    }
    if value.starts_with('"') {
        return unquote(value).map_or(ParamValue::Other, ParamValue::Text);
    }
    match parse_decimal(value) {
        Err(ValueError::Malformed) if !value.is_empty() => ParamValue::Text(value.to_owned()),
        Err(ValueError::Malformed) => ParamValue::Other,
        number => ParamValue::Number(number),
    }
}

/// Reads one field line leniently: whitespace anywhere around `,`, `;` and `=`, keys in any
/// case, decimals for integers, and `key=value` dictionary members mixed in (draft-07).
pub(crate) fn lenient(input: &str) -> (Vec<SfEntry>, Option<Draft7>) {
    let mut entries = Vec::new();
    let mut draft7 = Draft7::default();
    for member in split_outside_quotes(input, b',') {
        let member = member.trim();
        if member.is_empty() {
            continue;
        }
        let mut parts = split_outside_quotes(member, b';');
        let head = parts.next().unwrap_or("").trim();
        if !head.starts_with('"')
            && let Some((key, value)) = head.split_once('=')
        {
            draft7.set(&key.trim().to_ascii_lowercase(), parse_decimal(value));
            continue;
        }
        let mut entry = SfEntry::default();
        if head.starts_with('"') {
            entry.name = unquote(head).map(Cow::Owned);
        } else if !head.is_empty() {
            match parse_decimal(head) {
                Err(ValueError::Malformed) => entry.name = Some(policy_name(head)),
                number => entry.number = Some(number),
            }
        }
        for param in parts {
            if let Some((key, value)) = param.split_once('=') {
                entry.set_param(&key.trim().to_ascii_lowercase(), lenient_param(value));
            }
        }
        entries.push(entry);
    }
    (entries, (!draft7.is_empty()).then_some(draft7))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(text in "[\\PC\";:,=()\\\\ ]{0,64}") {
            let _ = strict_list(&text);
            let _ = strict_dict(&text);
            let (entries, _) = lenient(&text);
            prop_assert!(entries.len() <= text.len() + 1);
        }

        #[test]
        fn lenient_agrees_with_strict_on_valid_lists(
            items in prop::collection::vec(("[a-z][a-z0-9-]{0,8}", 0u32..1_000_000, 0u32..100_000), 1..5)
        ) {
            let text = items
                .iter()
                .map(|(name, r, t)| format!("\"{name}\";r={r};t={t}"))
                .collect::<Vec<_>>()
                .join(", ");
            let strict = strict_list(&text).expect("valid SF list");
            prop_assert_eq!(lenient(&text).0, strict);
        }
    }

    fn n(whole: u64) -> Option<SfNumber> {
        Some(Ok(Decimal {
            whole,
            nanos: 0,
            saturated: false,
        }))
    }

    #[test]
    fn strict_list_reads_draft8() {
        let entries = strict_list(r#""burst";q=100;w=60, daily;q=1000;w=86400;qu="requests""#)
            .expect("valid");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name.as_deref(), Some("burst"));
        assert_eq!(entries[0].quota, n(100));
        assert_eq!(entries[1].name.as_deref(), Some("daily"));
        assert_eq!(entries[1].window, n(86_400));
        assert_eq!(entries[1].unit.as_deref(), Some("requests"));
    }

    #[test]
    fn strict_rejects_space_before_semicolon_and_lenient_reads_it() {
        assert_eq!(strict_list(r#""x" ;r=5;t=10"#), None);
        let (entries, draft7) = lenient(r#""x" ;R=5; t = 10"#);
        assert_eq!(draft7, None);
        assert_eq!(entries[0].name.as_deref(), Some("x"));
        assert_eq!(entries[0].remaining, n(5));
        assert_eq!(entries[0].reset, n(10));
    }

    #[test]
    fn dictionaries() {
        let strict = strict_dict("limit=100, remaining=0, reset=5").expect("valid");
        assert_eq!(
            (strict.limit, strict.remaining, strict.reset),
            (n(100), n(0), n(5))
        );
        let (entries, lenient_dict) = lenient("Limit = 100 , remaining=0,reset=5");
        assert!(entries.is_empty());
        assert_eq!(lenient_dict, Some(strict));
    }

    #[test]
    fn lenient_handles_quotes_bytes_and_negatives() {
        let (entries, _) = lenient(r#""a,b";pk=:YWJj:;r=-1, 10;window=60"#);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name.as_deref(), Some("a,b"));
        assert_eq!(entries[0].partition_key.as_deref(), Some(&b"abc"[..]));
        assert_eq!(entries[0].remaining, Some(Err(ValueError::Negative)));
        assert_eq!(entries[1].number, n(10));
        assert_eq!(entries[1].window, n(60));
    }
}
