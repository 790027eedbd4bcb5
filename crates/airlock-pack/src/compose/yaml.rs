//! A bounded YAML reader for compose files: the events of `yaml-rust2`'s parser built into a
//! small tree of strings, sequences and mappings. The crate's own loader copies a node for
//! every alias, so a few lines of nested aliases ("billion laughs") would expand into
//! gigabytes; here every node made, copies included, counts against [`MAX_NODES`], and
//! nesting against [`MAX_DEPTH`].

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

/// Nodes one document may make, alias copies included.
pub const MAX_NODES: usize = 200_000;
/// Nesting of sequences and mappings, alias copies included.
pub const MAX_DEPTH: usize = 64;

/// A YAML node: scalars are kept as their text (compose reads `image:` as a string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// `~`, `null` or nothing.
    Null,
    Str(String),
    Seq(Vec<Node>),
    /// Keys in document order; a key is a scalar's text.
    Map(Vec<(String, Node)>),
}

impl Node {
    /// The value of `key` in a mapping, with YAML merge keys (`<<: *anchor`, or a list of
    /// them) looked into after the mapping's own keys, as compose does.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.get_merged(key, 0)
    }

    fn get_merged(&self, key: &str, depth: usize) -> Option<&Node> {
        let Node::Map(pairs) = self else {
            return None;
        };
        if let Some((_, v)) = pairs.iter().find(|(k, _)| k == key) {
            return Some(v);
        }
        if depth >= MAX_DEPTH {
            return None;
        }
        let merged = pairs.iter().find(|(k, _)| k == "<<").map(|(_, v)| v)?;
        match merged {
            Node::Seq(list) => list.iter().find_map(|m| m.get_merged(key, depth + 1)),
            m => m.get_merged(key, depth + 1),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Where and why a document could not be read (1-based line, 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub why: String,
}

impl std::fmt::Display for YamlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            0 => write!(f, "{}", self.why),
            l => write!(f, "line {l}: {}", self.why),
        }
    }
}

enum Frame {
    Seq {
        items: Vec<Node>,
        anchor: usize,
        depth: usize,
    },
    Map {
        pairs: Vec<(String, Node)>,
        key: Option<String>,
        anchor: usize,
        depth: usize,
    },
}

/// A built node, its size in nodes and its depth.
struct Built {
    node: Node,
    size: usize,
    depth: usize,
}

#[derive(Default)]
struct Loader {
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize, usize)>,
    nodes: usize,
    root: Option<Node>,
}

/// The one document of `text` (an empty stream is [`Node::Null`]).
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut loader = Loader::default();
    loop {
        let (event, mark) = parser.next_token().map_err(|e| YamlError {
            line: e.marker().line(),
            why: e.info().to_string(),
        })?;
        let fail = |why: String| YamlError {
            line: mark.line(),
            why,
        };
        match event {
            Event::StreamEnd => break,
            Event::Scalar(text, style, anchor, _) => {
                let node = match style {
                    TScalarStyle::Plain
                        if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") =>
                    {
                        Node::Null
                    }
                    _ => Node::Str(text),
                };
                loader.add(node, 1, 0, anchor).map_err(fail)?;
            }
            Event::SequenceStart(anchor, _) => loader
                .open(Frame::Seq {
                    items: Vec::new(),
                    anchor,
                    depth: 0,
                })
                .map_err(fail)?,
            Event::MappingStart(anchor, _) => loader
                .open(Frame::Map {
                    pairs: Vec::new(),
                    key: None,
                    anchor,
                    depth: 0,
                })
                .map_err(fail)?,
            Event::SequenceEnd | Event::MappingEnd => loader.close().map_err(fail)?,
            Event::Alias(id) => {
                let (node, size, depth) = loader.alias(id).map_err(fail)?;
                loader.add(node, size, depth, 0).map_err(fail)?;
            }
            _ => {}
        }
    }
    Ok(loader.root.unwrap_or(Node::Null))
}

fn too_many() -> String {
    format!("more than {MAX_NODES} nodes (aliases included): not a compose file airlock reads")
}

impl Loader {
    /// A copy of the node anchored as `id`, made only when its size still fits the budget.
    fn alias(&self, id: usize) -> Result<(Node, usize, usize), String> {
        let (node, size, depth) = self
            .anchors
            .get(&id)
            .ok_or("an alias names an unknown anchor")?;
        if self.nodes.saturating_add(*size) > MAX_NODES {
            return Err(too_many());
        }
        Ok((node.clone(), *size, *depth))
    }

    fn open(&mut self, frame: Frame) -> Result<(), String> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn close(&mut self) -> Result<(), String> {
        let (node, anchor, depth) = match self.stack.pop() {
            Some(Frame::Seq {
                items,
                anchor,
                depth,
            }) => (Node::Seq(items), anchor, depth),
            Some(Frame::Map {
                pairs,
                key,
                anchor,
                depth,
            }) => {
                if key.is_some() {
                    return Err("a mapping key has no value".into());
                }
                (Node::Map(pairs), anchor, depth)
            }
            None => return Err("unbalanced document".into()),
        };
        // The children were counted as they came; the collection itself is one more.
        self.add_built(
            Built {
                node,
                size: 1,
                depth: depth + 1,
            },
            anchor,
        )
    }

    fn add(&mut self, node: Node, size: usize, depth: usize, anchor: usize) -> Result<(), String> {
        self.add_built(Built { node, size, depth }, anchor)
    }

    fn add_built(&mut self, b: Built, anchor: usize) -> Result<(), String> {
        self.nodes = self.nodes.saturating_add(b.size);
        if self.nodes > MAX_NODES {
            return Err(too_many());
        }
        if b.depth + self.stack.len() > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        if anchor > 0 {
            let size = node_count(&b.node);
            self.anchors.insert(anchor, (b.node.clone(), size, b.depth));
        }
        match self.stack.last_mut() {
            None if self.root.is_some() => Err("more than one YAML document".into()),
            None => {
                self.root = Some(b.node);
                Ok(())
            }
            Some(Frame::Seq { items, depth, .. }) => {
                *depth = (*depth).max(b.depth);
                items.push(b.node);
                Ok(())
            }
            Some(Frame::Map {
                pairs, key, depth, ..
            }) => {
                *depth = (*depth).max(b.depth);
                match key.take() {
                    Some(k) => {
                        pairs.push((k, b.node));
                        Ok(())
                    }
                    None => match b.node {
                        Node::Str(s) => {
                            *key = Some(s);
                            Ok(())
                        }
                        Node::Null => {
                            *key = Some("null".into());
                            Ok(())
                        }
                        _ => Err("a mapping key is not a scalar".into()),
                    },
                }
            }
        }
    }
}

/// Nodes in `n` (bounded by [`MAX_DEPTH`] recursion: built nodes are never deeper).
fn node_count(n: &Node) -> usize {
    match n {
        Node::Null | Node::Str(_) => 1,
        Node::Seq(items) => 1 + items.iter().map(node_count).sum::<usize>(),
        Node::Map(pairs) => 1 + pairs.iter().map(|(_, v)| 1 + node_count(v)).sum::<usize>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mappings_sequences_anchors_and_merge_keys() {
        let doc = parse(
            "x-base: &base\n  image: nginx:1\n  restart: always\nservices:\n  web:\n    <<: *base\n    ports: [\"80:80\"]\n  api:\n    image: api:2\n    <<: *base\n  empty:\n",
        )
        .unwrap();
        let services = doc.get("services").unwrap();
        let web = services.get("web").unwrap();
        assert_eq!(web.get("image").and_then(Node::as_str), Some("nginx:1"));
        assert_eq!(
            web.get("ports"),
            Some(&Node::Seq(vec![Node::Str("80:80".into())]))
        );
        // The mapping's own key wins over the merged one.
        let api = services.get("api").unwrap();
        assert_eq!(api.get("image").and_then(Node::as_str), Some("api:2"));
        assert_eq!(services.get("empty"), Some(&Node::Null));
        assert_eq!(parse("").unwrap(), Node::Null);
    }

    #[test]
    fn alias_bombs_deep_nesting_and_bad_yaml_are_refused() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let e = parse(&bomb).unwrap_err();
        assert!(e.why.contains("nodes"), "{e}");
        let deep = format!("{}x{}", "[".repeat(100), "]".repeat(100));
        assert!(parse(&deep).unwrap_err().why.contains("deeper"));
        // Depth through aliases: each level nests the last one.
        let mut chain = String::from("l0: &l0 [[[[[[[[[[x]]]]]]]]]]\n");
        for i in 1..10 {
            chain.push_str(&format!("l{i}: &l{i} [[[[[[[[[[*l{}]]]]]]]]]]\n", i - 1));
        }
        assert!(parse(&chain).unwrap_err().why.contains("deeper"));
        let e = parse("a: [unclosed\n").unwrap_err();
        assert!(e.line > 0, "{e:?}");
        assert!(parse("a: 1\n---\nb: 2\n")
            .unwrap_err()
            .why
            .contains("more than one"));
        assert!(parse("? [a]\n: b\n").unwrap_err().why.contains("key"));
    }
}
