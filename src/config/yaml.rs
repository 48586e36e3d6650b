//! YAML text → a tree that remembers where every key and value was written.
//!
//! serde-based YAML crates stop at the first error and forget positions once a value is
//! deserialized. Config validation wants the opposite: every problem at once, each at its
//! `line:col`. So YAML is parsed here (with `saphyr-parser`, the parser under `serde-saphyr`)
//! into a [`Node`] tree, turned into JSON for schema validation, and asked for positions
//! by JSON pointer when an error needs one.

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

/// Aliases are expanded; this bounds the nodes they may create (billion-laughs guard).
const MAX_NODES: usize = 100_000;

/// A 1-based line and column in a YAML file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

impl Position {
    fn of(span: Span) -> Self {
        Position {
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }
}

/// One YAML value and where it starts.
#[derive(Debug, Clone)]
pub struct Node {
    /// The value.
    pub value: NodeValue,
    /// Where the value starts.
    pub position: Position,
}

/// A YAML value, with scalars resolved by the YAML 1.2 core schema.
#[derive(Debug, Clone)]
pub enum NodeValue {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer or a float.
    Number(Number),
    /// Any other scalar.
    String(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping; keys keep their own positions.
    Map(Vec<(Key, Node)>),
}

/// A mapping key and where it was written.
#[derive(Debug, Clone)]
pub struct Key {
    /// The key's text.
    pub text: String,
    /// Where the key starts.
    pub position: Position,
}

/// A YAML syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser gave up.
    pub position: Position,
    /// What it said.
    pub message: String,
}

/// Parses one YAML document. An empty file gives a `Null` node.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder {
        anchors: Vec::new(),
        nodes: 0,
    };
    let mut parser = Parser::new_from_str(text);
    let mut root: Option<Node> = None;
    loop {
        let (event, span) = next(&mut parser)?;
        match event {
            Event::StreamEnd => break,
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart(_) => {
                if root.is_some() {
                    return Err(SyntaxError {
                        position: Position::of(span),
                        message: "a pipeline file holds one YAML document; remove the second `---`"
                            .into(),
                    });
                }
                let (event, span) = next(&mut parser)?;
                root = Some(builder.node(&mut parser, event, span)?);
            }
            other => {
                root = Some(builder.node(&mut parser, other, span)?);
            }
        }
    }
    Ok(root.unwrap_or(Node {
        value: NodeValue::Null,
        position: Position { line: 1, col: 1 },
    }))
}

fn next<'a>(
    parser: &mut Parser<'a, saphyr_parser::StrInput<'a>>,
) -> Result<(Event<'a>, Span), SyntaxError> {
    match parser.next_event() {
        Some(Ok(pair)) => Ok(pair),
        Some(Err(error)) => Err(SyntaxError {
            position: Position {
                line: error.marker().line(),
                col: error.marker().col() + 1,
            },
            message: error.info().to_string(),
        }),
        None => Ok((Event::StreamEnd, Span::default())),
    }
}

struct Builder {
    anchors: Vec<(usize, Node)>,
    nodes: usize,
}

impl Builder {
    /// The node an event opens, read to its end. One match over the parser's events, each
    /// arm a kind of node, so it stays whole: split, the arms would pass the parser around.
    fn node<'a>(
        &mut self,
        parser: &mut Parser<'a, saphyr_parser::StrInput<'a>>,
        event: Event<'a>,
        span: Span,
    ) -> Result<Node, SyntaxError> {
        let position = Position::of(span);
        self.count(position)?;
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let forced_string = tag.as_ref().is_some_and(|tag| tag.suffix == "str");
                let value = if style == ScalarStyle::Plain && !forced_string {
                    resolve_plain(&text)
                } else {
                    NodeValue::String(text.into_owned())
                };
                (Node { value, position }, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (event, span) = next(parser)?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(parser, event, span)?);
                }
                (
                    Node {
                        value: NodeValue::Seq(items),
                        position,
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, _) => {
                let mut entries: Vec<(Key, Node)> = Vec::new();
                loop {
                    let (event, span) = next(parser)?;
                    if matches!(event, Event::MappingEnd) {
                        break;
                    }
                    let key_node = self.node(parser, event, span)?;
                    let key = Key {
                        text: scalar_text(&key_node),
                        position: key_node.position,
                    };
                    if entries
                        .iter()
                        .any(|(existing, _)| existing.text == key.text)
                    {
                        return Err(SyntaxError {
                            position: key.position,
                            message: format!("duplicate key `{}`", key.text),
                        });
                    }
                    let (event, span) = next(parser)?;
                    let value = self.node(parser, event, span)?;
                    entries.push((key, value));
                }
                (
                    Node {
                        value: NodeValue::Map(entries),
                        position,
                    },
                    anchor,
                )
            }
            Event::Alias(id) => {
                let Some((_, target)) = self.anchors.iter().find(|(anchor, _)| *anchor == id)
                else {
                    return Err(SyntaxError {
                        position,
                        message: "unknown alias".into(),
                    });
                };
                let copy = Node {
                    value: target.value.clone(),
                    position,
                };
                self.count_tree(&copy)?;
                return Ok(copy);
            }
            other => {
                return Err(SyntaxError {
                    position,
                    message: format!("unexpected YAML event {other:?}"),
                });
            }
        };
        if anchor != 0 {
            self.anchors.push((anchor, node.clone()));
        }
        Ok(node)
    }

    fn count(&mut self, position: Position) -> Result<(), SyntaxError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(SyntaxError {
                position,
                message: format!(
                    "the document expands to more than {MAX_NODES} values (alias bomb?)"
                ),
            });
        }
        Ok(())
    }

    fn count_tree(&mut self, node: &Node) -> Result<(), SyntaxError> {
        self.count(node.position)?;
        match &node.value {
            NodeValue::Seq(items) => items.iter().try_for_each(|item| self.count_tree(item)),
            NodeValue::Map(entries) => entries
                .iter()
                .try_for_each(|(_, value)| self.count_tree(value)),
            _ => Ok(()),
        }
    }
}

fn scalar_text(node: &Node) -> String {
    match &node.value {
        NodeValue::Null => String::new(),
        NodeValue::Bool(value) => value.to_string(),
        NodeValue::Number(value) => value.to_string(),
        NodeValue::String(value) => value.clone(),
        NodeValue::Seq(_) | NodeValue::Map(_) => "<complex key>".into(),
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
fn resolve_plain(text: &str) -> NodeValue {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return NodeValue::Null,
        "true" | "True" | "TRUE" => return NodeValue::Bool(true),
        "false" | "False" | "FALSE" => return NodeValue::Bool(false),
        _ => {}
    }
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(value) = text.parse::<i64>()
    {
        return NodeValue::Number(value.into());
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(value) = i64::from_str_radix(hex, 16)
    {
        return NodeValue::Number(value.into());
    }
    if let Some(octal) = text.strip_prefix("0o")
        && let Ok(value) = i64::from_str_radix(octal, 8)
    {
        return NodeValue::Number(value.into());
    }
    let looks_like_float = digits.bytes().any(|b| b.is_ascii_digit())
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if looks_like_float && let Some(number) = text.parse::<f64>().ok().and_then(Number::from_f64) {
        return NodeValue::Number(number);
    }
    NodeValue::String(text.to_string())
}

impl Node {
    /// The JSON value this node stands for (for schema validation and serde).
    pub fn to_json(&self) -> Value {
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(value) => Value::Bool(*value),
            NodeValue::Number(value) => Value::Number(value.clone()),
            NodeValue::String(value) => Value::String(value.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(key, value)| (key.text.clone(), value.to_json()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }

    /// Follows a JSON pointer as far as it goes: the deepest node reached, and whether the
    /// whole pointer was found.
    fn walk(&self, pointer: &str) -> (&Node, bool) {
        let mut node = self;
        for segment in pointer.split('/').skip(1) {
            let segment = segment.replace("~1", "/").replace("~0", "~");
            let child = match &node.value {
                NodeValue::Map(entries) => entries
                    .iter()
                    .find(|(key, _)| key.text == segment)
                    .map(|(_, value)| value),
                NodeValue::Seq(items) => segment
                    .parse::<usize>()
                    .ok()
                    .and_then(|index| items.get(index)),
                _ => None,
            };
            match child {
                Some(child) => node = child,
                None => return (node, false),
            }
        }
        (node, true)
    }

    /// The node at a JSON pointer (`/target/entity`), or the deepest node on the way.
    pub fn locate(&self, pointer: &str) -> Position {
        self.walk(pointer).0.position
    }

    /// Where the key `name` of the mapping at `pointer` was written (for unknown keys).
    pub fn locate_key(&self, pointer: &str, name: &str) -> Position {
        let (node, found) = self.walk(pointer);
        if let (true, NodeValue::Map(entries)) = (found, &node.value)
            && let Some((key, _)) = entries.iter().find(|(key, _)| key.text == name)
        {
            return key.position;
        }
        node.position
    }

    /// The mapping entry `name` when this node is a mapping.
    pub fn get(&self, name: &str) -> Option<&Node> {
        match &self.value {
            NodeValue::Map(entries) => entries
                .iter()
                .find(|(key, _)| key.text == name)
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(yaml: &str, expected: Value) {
        assert_eq!(
            parse(yaml).expect("valid YAML").to_json(),
            expected,
            "for {yaml:?}"
        );
    }

    #[test]
    fn resolves_scalars_by_the_core_schema() {
        check("a: 5", json!({"a": 5}));
        check("a: -5", json!({"a": -5}));
        check("a: 1.5", json!({"a": 1.5}));
        check("a: '5'", json!({"a": "5"}));
        check("a: !!str 5", json!({"a": "5"}));
        check("a: true", json!({"a": true}));
        check("a: ~", json!({"a": null}));
        check("a:", json!({"a": null}));
        check("a: 0 3 * * *", json!({"a": "0 3 * * *"}));
        check("a: 1.2.3", json!({"a": "1.2.3"}));
        check("a: [x, 2]", json!({"a": ["x", 2]}));
        check("", Value::Null);
    }

    #[test]
    fn remembers_positions() {
        let root = parse("a:\n  b: 1\n  c: [x, y]\n").expect("valid YAML");
        assert_eq!(root.locate("/a/b"), Position { line: 2, col: 6 });
        assert_eq!(root.locate("/a/c/1"), Position { line: 3, col: 10 });
        assert_eq!(root.locate_key("/a", "c"), Position { line: 3, col: 3 });
        assert_eq!(root.locate("/a/missing"), Position { line: 2, col: 3 });
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let error = parse("a: [1, 2\nb: 3\n").expect_err("unclosed sequence");
        assert!(error.position.line >= 1, "{error:?}");
        let duplicate = parse("a: 1\na: 2\n").expect_err("duplicate key");
        assert_eq!(duplicate.position, Position { line: 2, col: 1 });
    }

    #[test]
    fn expands_aliases_within_a_budget() {
        check(
            "a: &x {b: 1}\nc: *x\n",
            json!({"a": {"b": 1}, "c": {"b": 1}}),
        );
        let bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n";
        assert!(parse(bomb).is_err());
    }
}
