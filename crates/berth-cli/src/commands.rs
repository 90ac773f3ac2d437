//! The image commands. Each takes an [`ImageBackend`] and writes Docker's output to `out`
//! (and, where Docker does, messages to `err`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use berth_image::archive::{ImportOptions, ImportSource};
use berth_image::image_store::{DeleteItem, ImageSummary, ListOptions};
use berth_image::manifest::Platform;
use berth_image::{timeutil, Reference};

use crate::backend::{BackendError, ErrorKind, ImageBackend};
use crate::format::{self, row, TemplateUse};
use crate::template::{Template, Value};
use crate::units;

pub use crate::error::CliError;

type Result<T = ()> = std::result::Result<T, CliError>;

fn now() -> i64 {
    timeutil::now().0
}

fn truncate_id(id: &str) -> String {
    let hex = id.split_once(':').map(|(_, h)| h).unwrap_or(id);
    hex.chars().take(12).collect()
}

/// An image ID as listings show it: 12 hex digits, or all of it with `--no-trunc`.
fn image_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        truncate_id(id)
    }
}

/// A listing's format: `--format`, else the table; `--quiet` with the table is IDs only.
fn list_source(format: &Option<String>, quiet: bool) -> String {
    match format.as_deref() {
        None | Some("table") if quiet => "{{.ID}}".to_string(),
        f => f.unwrap_or("table").to_string(),
    }
}

/// Docker's `formatter.Ellipsis` for ASCII-width text.
pub(crate) fn ellipsis(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut t: String = s.chars().take(max - 1).collect();
    t.push('…');
    t
}

// ---------------------------------------------------------------------------------------------
// images

/// `images` / `image ls` flags.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ImagesOptions {
    /// Show all images (default hides intermediate images)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter", value_name = "filter")]
    pub filters: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    /// [REPOSITORY[:TAG]]
    pub reference: Option<String>,
}

const IMAGES_TABLE: &str = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";
const IMAGES_TABLE_DIGESTS: &str =
    "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";

fn image_rows(s: &ImageSummary, digests: bool) -> Vec<(String, String, String)> {
    let dangling = (s.repo_tags.is_empty() && s.repo_digests.is_empty())
        || (s.repo_tags == ["<none>:<none>"] && s.repo_digests == ["<none>@<none>"]);
    if dangling {
        return vec![("<none>".into(), "<none>".into(), "<none>".into())];
    }
    // The references' tags (or digests) by familiar repository name.
    let by_repo = |refs: &[String], part: fn(&Reference) -> Option<String>| {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in refs
            .iter()
            .filter_map(|t| Reference::parse_normalized(t).ok())
        {
            if let Some(p) = part(&r) {
                m.entry(r.familiar_name()).or_default().push(p);
            }
        }
        m
    };
    let tags = by_repo(&s.repo_tags, |r| r.tag().map(str::to_string));
    let mut dgs = by_repo(&s.repo_digests, |r| r.digest().map(|d| d.to_string()));
    let mut out = Vec::new();
    for (repo, ts) in &tags {
        let mut ds = dgs.remove(repo).unwrap_or_default();
        if !digests {
            ds.clear();
        }
        for t in ts {
            if ds.is_empty() {
                out.push((repo.clone(), t.clone(), "<none>".into()));
            } else {
                for d in &ds {
                    out.push((repo.clone(), t.clone(), d.clone()));
                }
            }
        }
    }
    for (repo, ds) in dgs {
        if digests {
            for d in ds {
                out.push((repo.clone(), "<none>".into(), d));
            }
        } else {
            out.push((repo, "<none>".into(), "<none>".into()));
        }
    }
    out
}

/// `berth images`.
pub fn images(b: &dyn ImageBackend, o: &ImagesOptions, out: &mut dyn Write) -> Result {
    let mut filters = crate::filters::parse(&o.filters)?.0;
    if let Some(r) = &o.reference {
        filters.push(("reference".into(), r.clone()));
    }
    let list = b.list(&ListOptions {
        all: o.all,
        filters,
        ..Default::default()
    })?;
    let source = list_source(&o.format, o.quiet);
    let table_default = if o.quiet {
        "{{.ID}}"
    } else if o.digests {
        IMAGES_TABLE_DIGESTS
    } else {
        IMAGES_TABLE
    };
    let columns = [
        ("Containers", "CONTAINERS"),
        ("CreatedAt", "CREATED AT"),
        ("CreatedSince", "CREATED"),
        ("Digest", "DIGEST"),
        ("ID", "IMAGE ID"),
        ("Repository", "REPOSITORY"),
        ("SharedSize", "SHARED SIZE"),
        ("Size", "SIZE"),
        ("Tag", "TAG"),
        ("UniqueSize", "UNIQUE SIZE"),
        ("VirtualSize", "VIRTUAL SIZE"),
    ];
    let now = now();
    let mut rows = Vec::new();
    for s in &list {
        for (repo, tag, digest) in image_rows(s, o.digests) {
            let id = image_id(&s.id, o.no_trunc);
            let na =
                |n: i64, f: &dyn Fn(i64) -> String| if n < 0 { "N/A".to_string() } else { f(n) };
            let human = |n: i64| units::human_size(n as f64);
            // `.Label` is Berth's: Docker's image rows have no labels.
            rows.push(format::labeled_row(
                &[
                    ("Containers", na(s.containers, &|n| n.to_string())),
                    ("CreatedAt", timeutil::format_go_string_utc(s.created)),
                    ("CreatedSince", units::since(s.created, now)),
                    ("Digest", digest),
                    ("ID", id),
                    ("Repository", repo),
                    ("SharedSize", na(s.shared_size, &human)),
                    ("Size", units::image_size(s.size)),
                    ("Tag", tag),
                    ("UniqueSize", na(s.shared_size, &|sh| human(s.size - sh))),
                    ("VirtualSize", human(s.size)),
                ],
                s.labels.clone(),
            ));
        }
    }
    format::print_list(out, &source, table_default, &columns, &rows)
}

// ---------------------------------------------------------------------------------------------
// rmi, tag

/// `berth rmi`: Docker prints what it can and reports every failure at the end.
pub fn rmi(
    b: &dyn ImageBackend,
    names: &[String],
    force: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result {
    let mut failed = false;
    for n in names {
        match b.remove(n, force) {
            Ok(items) => {
                for i in items {
                    match i {
                        DeleteItem::Untagged(s) => writeln!(out, "Untagged: {s}")?,
                        DeleteItem::Deleted(s) => writeln!(out, "Deleted: {s}")?,
                    }
                }
            }
            Err(e) => {
                failed = true;
                out.flush()?;
                writeln!(err, "{}", CliError::Daemon(e))?;
            }
        }
    }
    if failed {
        Err(CliError::Exit(1))
    } else {
        Ok(())
    }
}

/// `berth tag SOURCE TARGET`.
pub fn tag(b: &dyn ImageBackend, source: &str, target: &str) -> Result {
    let r = Reference::parse_normalized(target).map_err(|e| {
        CliError::Message(format!(
            "Error parsing reference: {target:?} is not a valid repository/tag: {e}"
        ))
    })?;
    if r.digest().is_some() {
        return Err(CliError::Message(format!(
            "Error parsing reference: {target:?} is not a valid repository/tag: invalid reference format"
        )));
    }
    b.tag(source, &r)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// inspect

/// Builds the template value of an inspect document (image, container, volume, network), with
/// Go's types for nil slices / maps where Docker's typed documents have them.
pub fn inspect_value(raw: &str) -> Value {
    let mut v = Value::from_json_str(raw).unwrap_or(Value::Nil);
    for p in [
        "RepoTags",
        "RepoDigests",
        "Config.Env",
        "Config.Cmd",
        "Config.Entrypoint",
        "Config.OnBuild",
        "Config.Shell",
        "RootFS.Layers",
        "Args",
        "Mounts",
        "HostConfig.Binds",
        "HostConfig.CapAdd",
        "HostConfig.CapDrop",
        "HostConfig.Dns",
        "HostConfig.DnsOptions",
        "HostConfig.DnsSearch",
        "HostConfig.ExtraHosts",
        "HostConfig.Links",
        "HostConfig.SecurityOpt",
        "HostConfig.VolumesFrom",
    ] {
        v.mark_list(p);
    }
    for p in [
        "Config.Labels",
        "Config.Volumes",
        "Config.ExposedPorts",
        "GraphDriver.Data",
        "HostConfig.PortBindings",
        "HostConfig.LogConfig.Config",
        "NetworkSettings.Ports",
        "NetworkSettings.Networks",
        "Labels",
        "Options",
        "Containers",
    ] {
        v.mark_map(p);
    }
    v
}

/// Go's `json.Indent` with 4 spaces over a list of documents (`[doc, …]`): the text of every
/// string and number is kept as it came (the docker CLI prints the daemon's JSON this way),
/// empty objects and arrays stay `{}` and `[]`.
pub fn json_indent(raw_docs: &[String]) -> String {
    let mut src = String::from("[");
    for (i, raw) in raw_docs.iter().enumerate() {
        if i > 0 {
            src.push(',');
        }
        src.push_str(raw.trim());
    }
    src.push(']');
    let pad = |out: &mut String, d: usize| {
        out.push('\n');
        for _ in 0..d {
            out.push_str("    ");
        }
    };
    let mut out = String::with_capacity(src.len() * 2);
    let mut depth = 0usize;
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push('"');
                let mut escaped = false;
                for c in chars.by_ref() {
                    out.push(c);
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
            }
            '{' | '[' => {
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
                let close = if c == '{' { '}' } else { ']' };
                out.push(c);
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(close);
                } else {
                    depth += 1;
                    pad(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                pad(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                pad(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// [`json_indent`], with `<`, `>`, `&` escaped as Go's encoder writes them (what dockerd sends,
/// and what the docker CLI prints for documents it re-encodes itself, such as volumes).
pub fn docker_json_indent(raw_docs: &[String]) -> String {
    crate::template::value::html_escape_json(&json_indent(raw_docs))
}

/// How inspect documents are printed without a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InspectJson {
    /// The daemon's JSON as it came, re-indented (containers, images and networks: the docker
    /// CLI prints the raw answer).
    Raw,
    /// Re-encoded as Go encodes (volumes, and images of a data root without a daemon).
    GoEncoded,
}

/// Prints inspect documents as the docker CLI does: indented JSON in a list, or one line per
/// document through a template (`t`).
pub fn print_inspect(
    docs: &[String],
    t: Option<&Template>,
    json: InspectJson,
    out: &mut dyn Write,
) -> Result {
    match t {
        Some(t) => {
            for d in docs {
                let s = format::render_value(t, &inspect_value(d), TemplateUse::Inspect)?;
                writeln!(out, "{s}")?;
            }
        }
        None => match json {
            InspectJson::Raw => writeln!(out, "{}", json_indent(docs))?,
            InspectJson::GoEncoded => writeln!(out, "{}", docker_json_indent(docs))?,
        },
    }
    Ok(())
}

/// The template of an inspect command's `--format` (none for `json` or no format).
pub fn inspect_template(fmt: Option<&str>) -> Result<Option<Template>> {
    match fmt {
        Some(f) if !f.is_empty() && f != "json" => Ok(Some(TemplateUse::Inspect.parse(f)?)),
        _ => Ok(None),
    }
}

/// `berth image inspect` (`json`: how the documents print, see [`InspectJson`]).
pub fn inspect(
    b: &dyn ImageBackend,
    names: &[String],
    fmt: Option<&str>,
    json: InspectJson,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result {
    let tmpl = inspect_template(fmt)?;
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for n in names {
        match b.inspect_raw(n) {
            Ok(raw) => docs.push(raw),
            Err(e) if e.kind == ErrorKind::NotFound => {
                errors.push(format!("Error: No such image: {n}"))
            }
            Err(e) => errors.push(CliError::Daemon(e).to_string()),
        }
    }
    print_inspect(&docs, tmpl.as_ref(), json, out)?;
    if errors.is_empty() {
        return Ok(());
    }
    out.flush()?;
    for e in errors {
        writeln!(err, "{e}")?;
    }
    Err(CliError::Exit(1))
}

// ---------------------------------------------------------------------------------------------
// history

/// `history` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HistoryOptions {
    /// Print sizes and dates in human readable format
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub human: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    /// Image
    pub image: String,
}

const HISTORY_TABLE: &str =
    "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}";

/// `berth history`.
pub fn history(b: &dyn ImageBackend, o: &HistoryOptions, out: &mut dyn Write) -> Result {
    let items = b.history(&o.image)?;
    let columns = [
        ("Comment", "COMMENT"),
        ("CreatedAt", "CREATED AT"),
        ("CreatedBy", "CREATED BY"),
        ("CreatedSince", "CREATED"),
        ("ID", "IMAGE"),
        ("Size", "SIZE"),
    ];
    let now = now();
    let rows: Vec<Value> = items
        .iter()
        .map(|h| {
            let id = image_id(&h.id, o.no_trunc);
            let by = h.created_by.replace('\t', " ");
            let by = if o.no_trunc { by } else { ellipsis(&by, 45) };
            row(&[
                ("Comment", h.comment.clone()),
                ("CreatedAt", timeutil::format_rfc3339(h.created)),
                ("CreatedBy", by),
                (
                    "CreatedSince",
                    if o.human {
                        units::since(h.created, now)
                    } else {
                        timeutil::format_rfc3339(h.created)
                    },
                ),
                ("ID", id),
                (
                    "Size",
                    if o.human {
                        units::image_size(h.size)
                    } else {
                        h.size.to_string()
                    },
                ),
            ])
        })
        .collect();
    format::print_list(
        out,
        &list_source(&o.format, o.quiet),
        HISTORY_TABLE,
        &columns,
        &rows,
    )
}

// ---------------------------------------------------------------------------------------------
// save, load, import

/// Writes a file whole or not at all: into a temporary file beside it (`.berth-<tag>-…`),
/// synced, then renamed over `p`. `what` names the operation in errors (`save image`).
pub fn write_file_atomically(
    p: &Path,
    tag: &str,
    what: &str,
    produce: impl FnOnce(&mut dyn Write) -> Result,
) -> Result {
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".berth-{tag}-"))
        .tempfile_in(&dir)
        .map_err(|e| CliError::Message(format!("Error: failed to {what}: {e}")))?;
    {
        let mut w = io::BufWriter::new(tmp.as_file_mut());
        produce(&mut w)?;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(p)
        .map_err(|e| CliError::Message(format!("Error: failed to {what}: {}", e.error)))?;
    Ok(())
}

/// `berth save`: to `-o FILE` (written atomically) or stdout (refused on a terminal).
pub fn save(b: &dyn ImageBackend, names: &[String], output: Option<&Path>) -> Result {
    if names.is_empty() {
        return Err(CliError::Usage(
            "\"save\" requires at least 1 argument.\nSee 'berth save --help'.".into(),
        ));
    }
    match output {
        Some(p) => write_file_atomically(p, "save", "save image", |w| Ok(b.save(names, w)?)),
        None => {
            let stdout = io::stdout();
            if stdout.is_terminal() {
                return Err(CliError::Message(
                    "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
                ));
            }
            let mut w = io::BufWriter::new(stdout.lock());
            b.save(names, &mut w)?;
            w.flush()?;
            Ok(())
        }
    }
}

/// `berth load`: from `-i FILE` or stdin (refused when stdin is a terminal).
pub fn load(b: &dyn ImageBackend, input: Option<&Path>, out: &mut dyn Write) -> Result {
    let report = match input {
        Some(p) => {
            let mut f = File::open(p)
                .map_err(|e| CliError::Message(format!("open {}: {e}", p.display())))?;
            b.load(&mut f)?
        }
        None => {
            let stdin = io::stdin();
            if stdin.is_terminal() {
                return Err(CliError::Message(
                    "requested load from stdin, but stdin is empty".into(),
                ));
            }
            let mut l = stdin.lock();
            b.load(&mut l)?
        }
    };
    for img in &report.images {
        for (tag, old) in &img.moved {
            writeln!(
                out,
                "The image {tag} already exists, renaming the old one with ID {old} to empty string"
            )?;
        }
        if img.tags.is_empty() {
            writeln!(out, "Loaded image ID: {}", img.id)?;
        }
        for t in &img.tags {
            writeln!(out, "Loaded image: {t}")?;
        }
    }
    Ok(())
}

/// `import` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ImportArgs {
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change", value_name = "CHANGE")]
    pub changes: Vec<String>,
    /// Set commit message for imported image
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    /// file|URL|-
    pub source: String,
    /// [REPOSITORY[:TAG]]
    pub reference: Option<String>,
}

/// `berth import`.
pub fn import(b: &dyn ImageBackend, a: &ImportArgs, out: &mut dyn Write) -> Result {
    let lower = a.source.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("ftp://")
    {
        return Err(CliError::Message(format!(
            "Error: importing from a URL is not supported ({}): download the file and import it from disk or stdin",
            a.source
        )));
    }
    let tag = match &a.reference {
        Some(r) => {
            let parsed =
                Reference::parse(r).map_err(|e| CliError::Message(format!("Error: {e}")))?;
            if parsed.digest().is_some() {
                return Err(CliError::Message(
                    "Error: cannot import digest reference".into(),
                ));
            }
            Some(parsed)
        }
        None => None,
    };
    let platform = match &a.platform {
        Some(p) => Some(Platform::parse(p).map_err(|e| CliError::Message(format!("Error: {e}")))?),
        None => None,
    };
    let opts = ImportOptions {
        changes: a.changes.clone(),
        message: a.message.clone(),
        // As the docker CLI, a file is streamed like stdin: the source is "-".
        source_name: "-".into(),
        tag,
        platform,
    };
    let id = if a.source == "-" {
        let stdin = io::stdin();
        let l = stdin.lock();
        b.import(ImportSource::Tar(Box::new(l)), &opts)?
    } else {
        let p = Path::new(&a.source);
        let meta = std::fs::metadata(p)
            .map_err(|e| CliError::Message(format!("open {}: {}", a.source, io_msg(&e))))?;
        if meta.is_dir() {
            b.import(ImportSource::Directory(p.to_path_buf()), &opts)?
        } else {
            let f = File::open(p)
                .map_err(|e| CliError::Message(format!("open {}: {}", a.source, io_msg(&e))))?;
            b.import(ImportSource::Tar(Box::new(f)), &opts)?
        }
    };
    writeln!(out, "{id}")?;
    Ok(())
}

/// An I/O error as Go words it (`no such file or directory`).
pub fn io_msg(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// prune, df

/// `berth image prune`.
pub fn prune(
    b: &dyn ImageBackend,
    all: bool,
    force: bool,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result {
    let warning = if all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !crate::system::confirm(warning, force, input, out)? {
        return Ok(());
    }
    let report = b.prune(all)?;
    crate::system::print_deleted_images(out, &report.deleted)?;
    crate::system::print_reclaimed(out, report.space_reclaimed)
}

const DF_TABLE: &str = "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}";

/// One row of `system df`: a kind of object, counted as the docker CLI counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DfRow {
    /// `Images`, `Containers`, `Local Volumes`, `Build Cache`.
    pub kind: &'static str,
    pub total: usize,
    pub active: usize,
    /// Bytes.
    pub size: i64,
    /// Bytes that pruning would free.
    pub reclaimable: i64,
    /// Whether the reclaimable share is shown as a percentage (not for the build cache).
    pub percent: bool,
}

impl DfRow {
    /// A kind with nothing in it.
    pub fn empty(kind: &'static str) -> DfRow {
        DfRow {
            kind,
            total: 0,
            active: 0,
            size: 0,
            reclaimable: 0,
            percent: true,
        }
    }
}

/// Renders `system df` (`--format`, or Docker's table).
pub fn render_df(rows: &[DfRow], format_src: Option<&str>, out: &mut dyn Write) -> Result {
    let columns = [
        ("Type", "TYPE"),
        ("TotalCount", "TOTAL"),
        ("Active", "ACTIVE"),
        ("Size", "SIZE"),
        ("Reclaimable", "RECLAIMABLE"),
    ];
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let reclaimable = match (r.reclaimable * 100).checked_div(r.size) {
                Some(pct) if r.percent && r.size > 0 => {
                    format!("{} ({pct}%)", units::human_size(r.reclaimable as f64))
                }
                _ => units::human_size(r.reclaimable as f64),
            };
            row(&[
                ("Type", r.kind.into()),
                ("TotalCount", r.total.to_string()),
                ("Active", r.active.to_string()),
                ("Size", units::human_size(r.size as f64)),
                ("Reclaimable", reclaimable),
            ])
        })
        .collect();
    format::print_list(
        out,
        format_src.unwrap_or("table"),
        DF_TABLE,
        &columns,
        &rows,
    )
}

/// `berth --data-root … system df`: the images of the data root (containers, volumes and the
/// build cache are the daemon's, see `system::df`).
pub fn system_df(b: &dyn ImageBackend, format_src: Option<&str>, out: &mut dyn Write) -> Result {
    let du = b.disk_usage()?;
    let images = DfRow {
        kind: "Images",
        total: du.images.len(),
        active: du.images.iter().filter(|i| i.in_use).count(),
        size: du.layers_size as i64,
        reclaimable: du.reclaimable() as i64,
        percent: true,
    };
    let build = DfRow {
        percent: false,
        ..DfRow::empty("Build Cache")
    };
    render_df(
        &[
            images,
            DfRow::empty("Containers"),
            DfRow::empty("Local Volumes"),
            build,
        ],
        format_src,
        out,
    )
}

/// Reads all of stdin (helper for tests of commands that take input).
pub fn read_all(r: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    r.read_to_end(&mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_registry::{ImageEvent, LayerEvent, Progress};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn line_progress_skips_byte_counts() {
        let buf = Buf::default();
        let p = LineProgress(berth_registry::PlainProgress::new(Box::new(buf.clone())));
        let d = berth_image::Digest::of_bytes(b"x");
        p.image(&ImageEvent::PullingFrom {
            tag: "1".into(),
            repository: "test/busybox".into(),
        });
        p.layer(&d, &LayerEvent::PullingFsLayer);
        p.layer(
            &d,
            &LayerEvent::Downloading {
                current: 1,
                total: 2,
            },
        );
        p.layer(&d, &LayerEvent::DownloadComplete);
        p.layer(
            &d,
            &LayerEvent::Extracting {
                current: 1,
                total: 2,
            },
        );
        p.layer(&d, &LayerEvent::PullComplete);
        let s = d.short();
        assert_eq!(
            buf.text(),
            format!("1: Pulling from test/busybox\n{s}: Pulling fs layer\n{s}: Download complete\n{s}: Pull complete\n")
        );
    }

    #[test]
    fn tty_progress_redraws_in_place() {
        let buf = Buf::default();
        let p = TtyProgress::new(Box::new(buf.clone()));
        let a = berth_image::Digest::of_bytes(b"a");
        let b = berth_image::Digest::of_bytes(b"b");
        p.layer(&a, &LayerEvent::PullingFsLayer);
        p.layer(&b, &LayerEvent::PullingFsLayer);
        p.layer(
            &a,
            &LayerEvent::Downloading {
                current: 50,
                total: 100,
            },
        );
        let t = buf.text();
        let bar = format!("[{}>{}]  50B/100B", "=".repeat(25), " ".repeat(24));
        assert!(
            t.ends_with(&format!(
                "\x1b[2A\r\x1b[2K{}: Downloading {bar}\r\x1b[2B",
                a.short()
            )),
            "{t:?}"
        );
        assert_eq!(
            progress_bar(100, 100),
            format!("[{}]  100B/100B", "=".repeat(50))
        );
    }

    #[test]
    fn ellipsis_and_ids() {
        assert_eq!(ellipsis("abc", 45), "abc");
        let long = "x".repeat(50);
        let e = ellipsis(&long, 45);
        assert_eq!(e.chars().count(), 45);
        assert!(e.ends_with('…'));
        assert_eq!(truncate_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(truncate_id("<missing>"), "<missing>");
    }

    #[test]
    fn rows_per_tag_and_digest() {
        let s = ImageSummary {
            id: "sha256:x".into(),
            parent_id: String::new(),
            repo_tags: vec!["a:1".into(), "a:2".into(), "b:latest".into()],
            repo_digests: vec![
                format!("a@sha256:{}", "1".repeat(64)),
                format!("c@sha256:{}", "2".repeat(64)),
            ],
            created: 0,
            size: 0,
            shared_size: -1,
            labels: Default::default(),
            containers: -1,
        };
        let r = image_rows(&s, false);
        assert_eq!(
            r.iter()
                .map(|(a, b, _)| format!("{a}:{b}"))
                .collect::<Vec<_>>(),
            vec!["a:1", "a:2", "b:latest", "c:<none>"]
        );
        let r = image_rows(&s, true);
        assert_eq!(r[0].2, format!("sha256:{}", "1".repeat(64)));
        assert_eq!(r[2].2, "<none>");
        assert_eq!(
            r[3],
            (
                "c".into(),
                "<none>".into(),
                format!("sha256:{}", "2".repeat(64))
            )
        );
    }

    #[test]
    fn json_indent_like_docker() {
        let raw = r#"{"Id":"x","Cmd":["a && b"],"Empty":[],"Obj":{}}"#.to_string();
        assert_eq!(
            docker_json_indent(&[raw]),
            "[\n    {\n        \"Id\": \"x\",\n        \"Cmd\": [\n            \"a \\u0026\\u0026 b\"\n        ],\n        \"Empty\": [],\n        \"Obj\": {}\n    }\n]"
        );
        assert_eq!(docker_json_indent(&[]), "[]");
        // The raw form keeps every string as it came (escapes included) and spaces out.
        let raw = "{ \"A\" : \"<\\\"x\\u00e9, :{}\" , \"N\": [1.50e3, null,true] }".to_string();
        assert_eq!(
            json_indent(&[raw.clone(), raw]),
            "[\n    {\n        \"A\": \"<\\\"x\\u00e9, :{}\",\n        \"N\": [\n            1.50e3,\n            null,\n            true\n        ]\n    },\n    {\n        \"A\": \"<\\\"x\\u00e9, :{}\",\n        \"N\": [\n            1.50e3,\n            null,\n            true\n        ]\n    }\n]"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// pull / push / login / logout

/// `pull` flags.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct PullArgs {
    /// Download all tagged images in the repository (not supported)
    #[arg(short = 'a', long)]
    pub all_tags: bool,
    /// Suppress verbose output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    /// Skip image verification (accepted, ignored)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub disable_content_trust: bool,
    /// NAME[:TAG|@DIGEST]
    pub name: String,
}

/// Docker's non-terminal progress: one line per status change, without the byte-count
/// updates (`Downloading`, `Extracting`, `Pushing`), which only draw bars on a terminal.
struct LineProgress(berth_registry::PlainProgress);

impl berth_registry::Progress for LineProgress {
    fn image(&self, event: &berth_registry::ImageEvent) {
        self.0.image(event)
    }

    fn layer(&self, digest: &berth_image::Digest, event: &berth_registry::LayerEvent) {
        use berth_registry::LayerEvent as E;
        if !matches!(
            event,
            E::Downloading { .. } | E::Extracting { .. } | E::Pushing { .. }
        ) {
            self.0.layer(digest, event)
        }
    }
}

/// Docker's terminal progress: one line per layer, redrawn in place, with a bar while bytes
/// move.
pub struct TtyProgress {
    state: std::sync::Mutex<TtyState>,
}

struct TtyState {
    out: Box<dyn Write + Send>,
    /// Layers of the current block, in order of appearance, with their current line.
    layers: Vec<(berth_image::Digest, String)>,
}

impl TtyProgress {
    /// Draws on `out` (a terminal).
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            state: std::sync::Mutex::new(TtyState {
                out,
                layers: Vec::new(),
            }),
        }
    }
}

fn progress_bar(current: u64, total: u64) -> String {
    const WIDTH: usize = 50;
    if total == 0 {
        return units::human_size(current as f64);
    }
    let filled = ((current.min(total) as f64 / total as f64) * WIDTH as f64) as usize;
    let mut bar = "=".repeat(filled);
    if filled < WIDTH {
        bar.push('>');
        bar.push_str(&" ".repeat(WIDTH - filled - 1));
    }
    format!(
        "[{bar}]  {}/{}",
        units::human_size(current as f64),
        units::human_size(total as f64)
    )
}

impl berth_registry::Progress for TtyProgress {
    fn image(&self, event: &berth_registry::ImageEvent) {
        use berth_registry::ImageEvent as E;
        let line = match event {
            E::PullingFrom { tag, repository } => format!("{tag}: Pulling from {repository}"),
            E::Resolved { digest } => format!("Digest: {digest}"),
            E::PushingTo { repository } => {
                format!("The push refers to repository [{repository}]")
            }
            E::Pushed { tag, digest, size } => format!("{tag}: digest: {digest} size: {size}"),
        };
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.layers.clear();
        let _ = writeln!(g.out, "{line}");
        let _ = g.out.flush();
    }

    fn layer(&self, digest: &berth_image::Digest, event: &berth_registry::LayerEvent) {
        use berth_registry::LayerEvent as E;
        let status = event.status();
        let line = match event {
            E::Downloading { current, total }
            | E::Extracting { current, total }
            | E::Pushing { current, total } => {
                format!(
                    "{}: {status} {}",
                    digest.short(),
                    progress_bar(*current, *total)
                )
            }
            _ => format!("{}: {status}", digest.short()),
        };
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let g = &mut *g;
        match g.layers.iter().position(|(d, _)| d == digest) {
            None => {
                let _ = writeln!(g.out, "{line}");
                g.layers.push((digest.clone(), line));
            }
            Some(i) => {
                if g.layers[i].1 == line {
                    return;
                }
                let up = g.layers.len() - i;
                let _ = write!(g.out, "\x1b[{up}A\r\x1b[2K{line}\r\x1b[{up}B");
                g.layers[i].1 = line;
            }
        }
        let _ = g.out.flush();
    }
}

/// Where a pull's progress goes (a terminal gets Docker's bars).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressTarget {
    /// Standard output (`pull`, `push`).
    Stdout,
    /// Standard error (the pull of `run` and `create`).
    Stderr,
}

fn line_progress(
    quiet: bool,
    out: Box<dyn Write + Send>,
    target: ProgressTarget,
) -> Box<dyn berth_registry::Progress> {
    let tty = match target {
        ProgressTarget::Stdout => io::stdout().is_terminal(),
        ProgressTarget::Stderr => io::stderr().is_terminal(),
    };
    if quiet {
        Box::new(berth_registry::NoProgress)
    } else if tty {
        Box::new(TtyProgress::new(out))
    } else {
        Box::new(LineProgress(berth_registry::PlainProgress::new(out)))
    }
}

fn parse_pull_reference(name: &str) -> Result<Reference> {
    Reference::parse_normalized(name)
        .map_err(|e| CliError::Message(format!("invalid reference format: {e}: \"{name}\"")))
}

/// `berth pull`. Per-layer progress goes to `progress_out` (standard output, written from
/// the download threads); the rest to `out`.
fn parse_platform(p: Option<&str>) -> Result<Platform> {
    match p {
        Some(p) => Platform::parse(p).map_err(|e| {
            CliError::Daemon(BackendError {
                kind: ErrorKind::InvalidArgument,
                message: e.to_string(),
            })
        }),
        None => Ok(Platform::host()),
    }
}

/// Pulls a reference that has a tag or a digest: the progress to `progress_out` (per
/// `target`), then Docker's `Status: …` line to `out` (unless `quiet`).
pub fn pull_reference(
    b: &dyn ImageBackend,
    reference: &Reference,
    platform_arg: Option<&str>,
    quiet: bool,
    out: &mut dyn Write,
    progress_out: Box<dyn Write + Send>,
    target: ProgressTarget,
) -> Result {
    let platform = parse_platform(platform_arg)?;
    out.flush()?;
    let progress = line_progress(quiet, progress_out, target);
    let outcome = b.pull(reference, &platform, progress.as_ref())?;
    drop(progress);
    if platform_arg.is_some() {
        let want = platform.clone().normalize();
        let got = &outcome.platform;
        if want.os != got.os
            || want.architecture != got.architecture
            || (want.variant.is_some() && want.variant != got.variant)
        {
            return Err(CliError::Daemon(BackendError {
                kind: ErrorKind::NotFound,
                message: format!(
                    "image with reference {reference} was found but does not match the specified platform: wanted {want}, actual: {got}"
                ),
            }));
        }
    }
    if !quiet {
        let status = if outcome.updated {
            "Downloaded newer image for"
        } else {
            "Image is up to date for"
        };
        writeln!(out, "Status: {status} {}", reference.familiar_string())?;
    }
    Ok(())
}

pub fn pull(
    b: &dyn ImageBackend,
    a: &PullArgs,
    out: &mut dyn Write,
    progress_out: Box<dyn Write + Send>,
) -> Result {
    let mut reference = parse_pull_reference(&a.name)?;
    let platform = parse_platform(a.platform.as_deref())?;
    if a.all_tags {
        if reference.tag().is_some() || reference.digest().is_some() {
            return Err(CliError::Message(
                "tag can't be used with --all-tags/-a".into(),
            ));
        }
        out.flush()?;
        let progress = line_progress(a.quiet, progress_out, ProgressTarget::Stdout);
        let updated = b.pull_all_tags(&reference, &platform, progress.as_ref())?;
        drop(progress);
        if !a.quiet {
            let status = if updated {
                "Downloaded newer image for"
            } else {
                "Image is up to date for"
            };
            writeln!(out, "Status: {status} {}", reference.familiar_name())?;
        }
        writeln!(out, "{}", reference.name())?;
        return Ok(());
    }
    if reference.tag().is_none() && reference.digest().is_none() {
        reference = reference
            .with_tag(berth_image::reference::DEFAULT_TAG)
            .map_err(|e| CliError::Message(format!("Error: {e}")))?;
        if !a.quiet {
            writeln!(
                out,
                "Using default tag: {}",
                berth_image::reference::DEFAULT_TAG
            )?;
        }
    }
    pull_reference(
        b,
        &reference,
        a.platform.as_deref(),
        a.quiet,
        out,
        progress_out,
        ProgressTarget::Stdout,
    )?;
    writeln!(out, "{reference}")?;
    Ok(())
}

/// `berth push`.
pub fn push(
    b: &dyn ImageBackend,
    name: &str,
    quiet: bool,
    out: &mut dyn Write,
    progress_out: Box<dyn Write + Send>,
) -> Result {
    let mut reference = parse_pull_reference(name)?;
    if reference.digest().is_some() {
        return Err(CliError::Message(format!(
            "Error: cannot push a digest reference: \"{name}\""
        )));
    }
    if reference.tag().is_none() {
        reference = reference
            .with_tag(berth_image::reference::DEFAULT_TAG)
            .map_err(|e| CliError::Message(format!("Error: {e}")))?;
        if !quiet {
            writeln!(
                out,
                "Using default tag: {}",
                berth_image::reference::DEFAULT_TAG
            )?;
        }
    }
    out.flush()?;
    let progress = line_progress(quiet, progress_out, ProgressTarget::Stdout);
    b.push(&reference, progress.as_ref())?;
    if quiet {
        writeln!(out, "{reference}")?;
    }
    Ok(())
}

/// `login` flags.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct LoginArgs {
    /// Username
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password
    #[arg(short = 'p', long)]
    pub password: Option<String>,
    /// Take the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
    /// SERVER
    pub server: Option<String>,
}

fn server_key(server: Option<&str>) -> String {
    server
        .map(berth_registry::client::normalize_registry_arg)
        .unwrap_or_else(|| "docker.io".into())
}

fn read_line_prompt(prompt: &str, err: &mut dyn Write) -> Result<String> {
    if !io::stdin().is_terminal() {
        return Err(CliError::Message(
            "Error: Cannot perform an interactive login from a non TTY device".into(),
        ));
    }
    write!(err, "{prompt}")?;
    err.flush()?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// `berth login`.
pub fn login(
    b: &dyn ImageBackend,
    a: &LoginArgs,
    input: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result {
    if a.password.is_some() && a.password_stdin {
        return Err(CliError::Message(
            "Error: --password and --password-stdin are mutually exclusive".into(),
        ));
    }
    if a.password_stdin && a.username.is_none() {
        return Err(CliError::Message(
            "Error: Must provide --username with --password-stdin".into(),
        ));
    }
    if a.password.is_some() {
        writeln!(
            err,
            "WARNING! Using --password via the CLI is insecure. Use --password-stdin."
        )?;
    }
    let username = match &a.username {
        Some(u) => u.trim().to_string(),
        None => read_line_prompt("Username: ", err)?,
    };
    if username.is_empty() {
        return Err(CliError::Message(
            "Error: Non-null Username Required".into(),
        ));
    }
    let password = if a.password_stdin {
        let mut s = String::new();
        input.read_to_string(&mut s)?;
        s.trim_end_matches(['\r', '\n']).to_string()
    } else {
        match &a.password {
            Some(p) => p.clone(),
            None => read_line_prompt("Password: ", err)?,
        }
    };
    if password.is_empty() {
        return Err(CliError::Message(
            "Error: Non-null Password Required".into(),
        ));
    }
    let server = server_key(a.server.as_deref());
    b.login(&server, &username, &password)?;
    writeln!(
        err,
        "WARNING! Your password will be stored unencrypted in {}.",
        b.credentials_path().display()
    )?;
    writeln!(out, "Login Succeeded")?;
    Ok(())
}

/// `berth logout`.
pub fn logout(b: &dyn ImageBackend, server: Option<&str>, out: &mut dyn Write) -> Result {
    let key = server_key(server);
    let shown = match server {
        None => "https://index.docker.io/v1/".to_string(),
        Some(s) => s.to_string(),
    };
    if b.logout(&key)? {
        writeln!(out, "Removing login credentials for {shown}")?;
    } else {
        writeln!(out, "Not logged in to {shown}")?;
    }
    Ok(())
}
