//! Envoy's routes for REST paths called with a method they do not take.
//!
//! The transcoder looks up path and method together, so to it a wrong method
//! is the same as an unknown path. A request it does not transcode reaches the
//! router on its original path; these routes, one per path template of the
//! HTTP rules, answer it 405 with an `Allow` header, and the catch-all after
//! them answers 404. They live between two marker lines in envoy/envoy.yaml,
//! rewritten on every run so that they follow the protos.
//!
//! The fault filter gives the answer, not a `direct_response`: every REST call
//! meets one of these routes before the transcoder re-routes it, and the CORS
//! filter does nothing on a route that has no upstream.

use std::collections::BTreeSet;
use std::error::Error;
use std::fmt::Write as _;
use std::fs;

use prost::Message;

const ENVOY_CONFIG: &str = "envoy/envoy.yaml";
const BEGIN: &str = "# BEGIN colink-codegen: 405 routes";
const END: &str = "# END colink-codegen: 405 routes";
const METHOD_NOT_ALLOWED: &str = "{ envoy.filters.http.fault: { \
    \"@type\": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault, \
    abort: { http_status: 405, percentage: { numerator: 100 } } } }";

/// Rewrites the 405 routes in envoy/envoy.yaml from the HTTP rules in an
/// encoded FileDescriptorSet.
pub fn write(descriptor_set: &[u8]) -> Result<(), Box<dyn Error>> {
    let mut bindings = Vec::new();
    for file in FileSet::decode(descriptor_set)?.file {
        for method in file.service.into_iter().flat_map(|s| s.method) {
            if let Some(rule) = method.options.and_then(|o| o.http) {
                collect_bindings(&rule, &mut bindings);
            }
        }
    }
    let templates: Vec<(String, Template)> =
        bindings.into_iter().map(|(verb, path)| Template::parse(&path).map(|t| (verb, t))).collect::<Result<_, _>>()?;
    let routes = routes(&templates);

    let config = fs::read_to_string(ENVOY_CONFIG)?;
    let (Some(begin), Some(end)) = (config.find(BEGIN), config.find(END)) else {
        return Err(format!("{ENVOY_CONFIG} lacks the lines `{BEGIN}` and `{END}`").into());
    };
    if end < begin {
        return Err(format!("{ENVOY_CONFIG}: `{END}` comes before `{BEGIN}`").into());
    }
    let line_start = config[..begin].rfind('\n').map_or(0, |i| i + 1);
    let indent = &config[line_start..begin];
    let mut block = format!("{BEGIN}\n");
    for route in &routes {
        writeln!(block, "{indent}{route}")?;
    }
    block.push_str(indent);
    let updated = format!("{}{block}{}", &config[..begin], &config[end..]);
    if updated != config {
        fs::write(ENVOY_CONFIG, updated)?;
    }
    Ok(())
}

fn collect_bindings(rule: &HttpRule, out: &mut Vec<(String, String)>) {
    let pattern = [
        ("GET", &rule.get),
        ("PUT", &rule.put),
        ("POST", &rule.post),
        ("DELETE", &rule.delete),
        ("PATCH", &rule.patch),
    ]
    .into_iter()
    .find_map(|(verb, path)| path.clone().map(|p| (verb.to_string(), p)))
    .or_else(|| rule.custom.as_ref().map(|c| (c.kind.clone(), c.path.clone())));
    out.extend(pattern);
    for extra in &rule.additional_bindings {
        collect_bindings(extra, out);
    }
}

/// One YAML line per route. A path may match several templates (`/v1/users/me`
/// and `/v1/users/{user_id}`); its methods are those of every template that
/// matches it, so each overlap gets a route of its own and routes are ordered
/// most methods first: the first route a path meets then names them all.
fn routes(bindings: &[(String, Template)]) -> Vec<String> {
    let mut all: Vec<Template> = Vec::new();
    for (_, template) in bindings {
        if !all.contains(template) {
            all.push(template.clone());
        }
    }
    // Overlaps of overlaps too, until there are no new ones.
    let mut i = 0;
    while i < all.len() {
        let overlaps: Vec<Template> = all[..i].iter().filter_map(|other| all[i].intersect(other)).collect();
        for both in overlaps {
            if !all.contains(&both) {
                all.push(both);
            }
        }
        i += 1;
    }

    let mut routes: Vec<(Vec<String>, &Template)> = all
        .iter()
        .map(|template| {
            let verbs: BTreeSet<&str> =
                bindings.iter().filter(|(_, t)| template.within(t)).map(|(v, _)| v.as_str()).collect();
            (order_verbs(verbs), template)
        })
        .collect();
    routes.sort_by(|(a, ta), (b, tb)| {
        b.len().cmp(&a.len()).then(ta.wildcards().cmp(&tb.wildcards())).then(ta.regex().cmp(&tb.regex()))
    });
    routes
        .into_iter()
        .enumerate()
        .map(|(i, (verbs, template))| {
            // The first route spells the answer out; the others refer to it.
            let answer =
                if i == 0 { format!("&method_not_allowed {METHOD_NOT_ALLOWED}") } else { "*method_not_allowed".into() };
            let regex = template.regex();
            let allow = verbs.join(", ");
            format!(
                "- {{ match: {{ safe_regex: {{ regex: '{regex}' }} }}, route: {{ cluster: colink }}, \
                 typed_per_filter_config: {answer}, \
                 response_headers_to_add: [{{ header: {{ key: allow, value: \"{allow}\" }} }}] }}"
            )
        })
        .collect()
}

fn order_verbs(verbs: BTreeSet<&str>) -> Vec<String> {
    const USUAL: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
    let mut ordered: Vec<String> = USUAL.iter().filter(|v| verbs.contains(*v)).map(|v| (*v).to_string()).collect();
    ordered.extend(verbs.iter().filter(|v| !USUAL.contains(v)).map(|v| (*v).to_string()));
    ordered
}

/// A path template of `google.api.HttpRule`, as the transcoder matches it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    segments: Vec<Segment>,
    verb: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`, or a variable bound to one segment.
    One,
    /// `**`: any number of segments; only ever last.
    Rest,
}

impl Template {
    fn parse(template: &str) -> Result<Self, String> {
        // A variable stands for its pattern, one segment when it names none.
        let mut expanded = String::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let close =
                rest[open..].find('}').map(|c| open + c).ok_or_else(|| format!("unclosed '{{' in {template}"))?;
            expanded.push_str(&rest[..open]);
            let variable = &rest[open + 1..close];
            expanded.push_str(variable.split_once('=').map_or("*", |(_, pattern)| pattern));
            rest = &rest[close + 1..];
        }
        expanded.push_str(rest);

        let path = expanded.strip_prefix('/').ok_or_else(|| format!("{template} does not start with '/'"))?;
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (path, verb) = match path[last_slash..].find(':') {
            Some(colon) => (&path[..last_slash + colon], Some(path[last_slash + colon + 1..].to_string())),
            None => (path, None),
        };
        let segments = path
            .split('/')
            .map(|s| match s {
                "*" => Segment::One,
                "**" => Segment::Rest,
                literal => Segment::Literal(literal.to_string()),
            })
            .collect();
        Ok(Self { segments, verb })
    }

    fn regex(&self) -> String {
        let mut regex = String::from("^");
        for segment in &self.segments {
            match segment {
                Segment::Literal(s) => {
                    regex.push('/');
                    regex.push_str(&escape(s));
                }
                Segment::One => regex.push_str("/[^/]+"),
                Segment::Rest => regex.push_str("(/.*)?"),
            }
        }
        if let Some(verb) = &self.verb {
            regex.push(':');
            regex.push_str(&escape(verb));
        }
        regex.push('$');
        regex
    }

    fn wildcards(&self) -> usize {
        self.segments.iter().filter(|s| !matches!(s, Segment::Literal(_))).count()
    }

    /// Whether every path this template matches is matched by `other` too;
    /// `**` is compared only as written, which can only leave a method out
    /// of an `Allow` header.
    fn within(&self, other: &Template) -> bool {
        self.verb == other.verb
            && self.segments.len() == other.segments.len()
            && self.segments.iter().zip(&other.segments).all(|(mine, theirs)| {
                mine == theirs || (*theirs == Segment::One && matches!(mine, Segment::Literal(_)))
            })
    }

    /// The template matching exactly the paths both match, when there are any.
    fn intersect(&self, other: &Template) -> Option<Template> {
        if self.verb != other.verb || self.segments.len() != other.segments.len() {
            return None;
        }
        let segments = self
            .segments
            .iter()
            .zip(&other.segments)
            .map(|(a, b)| match (a, b) {
                _ if a == b => Some(a.clone()),
                (Segment::One, Segment::Literal(_)) => Some(b.clone()),
                (Segment::Literal(_), Segment::One) => Some(a.clone()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Template { segments, verb: self.verb.clone() })
    }
}

fn escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for c in literal.chars() {
        if ".+*?()|[]{}^$\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// Just enough of descriptor.proto and google/api/http.proto to read the HTTP
// rules: prost_types drops the `google.api.http` method option.

#[derive(Clone, PartialEq, Message)]
struct FileSet {
    #[prost(message, repeated, tag = "1")]
    file: Vec<File>,
}

#[derive(Clone, PartialEq, Message)]
struct File {
    #[prost(message, repeated, tag = "6")]
    service: Vec<Service>,
}

#[derive(Clone, PartialEq, Message)]
struct Service {
    #[prost(message, repeated, tag = "2")]
    method: Vec<Method>,
}

#[derive(Clone, PartialEq, Message)]
struct Method {
    #[prost(message, optional, tag = "4")]
    options: Option<MethodOptions>,
}

#[derive(Clone, PartialEq, Message)]
struct MethodOptions {
    #[prost(message, optional, tag = "72295728")]
    http: Option<HttpRule>,
}

#[derive(Clone, PartialEq, Message)]
struct HttpRule {
    #[prost(string, optional, tag = "2")]
    get: Option<String>,
    #[prost(string, optional, tag = "3")]
    put: Option<String>,
    #[prost(string, optional, tag = "4")]
    post: Option<String>,
    #[prost(string, optional, tag = "5")]
    delete: Option<String>,
    #[prost(string, optional, tag = "6")]
    patch: Option<String>,
    #[prost(message, optional, tag = "8")]
    custom: Option<CustomPattern>,
    #[prost(message, repeated, tag = "11")]
    additional_bindings: Vec<HttpRule>,
}

#[derive(Clone, PartialEq, Message)]
struct CustomPattern {
    #[prost(string, tag = "1")]
    kind: String,
    #[prost(string, tag = "2")]
    path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(path: &str) -> Template {
        Template::parse(path).unwrap()
    }

    #[test]
    fn templates_become_anchored_regexes() {
        assert_eq!(t("/v1/users/{user_id}").regex(), "^/v1/users/[^/]+$");
        assert_eq!(t("/.well-known/jwks.json").regex(), r"^/\.well-known/jwks\.json$");
        assert_eq!(t("/v1/channels:browse").regex(), "^/v1/channels:browse$");
        assert_eq!(t("/v1/{name=shelves/*}/books:get").regex(), "^/v1/shelves/[^/]+/books:get$");
        assert_eq!(t("/v1/files/{path=**}").regex(), "^/v1/files(/.*)?$");
    }

    #[test]
    fn an_overlap_names_the_methods_of_every_template_it_matches() {
        let bindings = vec![
            ("GET".to_string(), t("/v1/users/{user_id}")),
            ("GET".to_string(), t("/v1/users/me")),
            ("PATCH".to_string(), t("/v1/users/me")),
            ("DELETE".to_string(), t("/v1/{a}/x")),
            ("PUT".to_string(), t("/v1/y/{b}")),
        ];
        let routes = routes(&bindings);
        let allow = |regex: &str| {
            routes
                .iter()
                .position(|r| r.contains(&format!("regex: '{regex}'")))
                .map(|i| (i, routes[i].split("value: \"").nth(1).unwrap().split('"').next().unwrap().to_string()))
                .unwrap()
        };
        let (me, me_allow) = allow("^/v1/users/me$");
        let (any, any_allow) = allow("^/v1/users/[^/]+$");
        assert_eq!((me_allow.as_str(), any_allow.as_str()), ("GET, PATCH", "GET"));
        assert!(me < any, "{routes:#?}");
        let (both, both_allow) = allow("^/v1/y/x$");
        assert_eq!(both_allow, "PUT, DELETE");
        assert!(both < allow("^/v1/[^/]+/x$").0 && both < allow("^/v1/y/[^/]+$").0, "{routes:#?}");
    }
}
